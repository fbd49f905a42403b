//! A throwaway PostgreSQL for tests and examples (feature `testing`), and with `clerk-jwt` a
//! development token issuer ([`DevTokenIssuer`]).
//!
//! [`TestDatabase::create`] gives each test a fresh database, migrated, with three login roles:
//! the database **owner** (ran the migrations; subject to the policies only because every table
//! is `FORCE ROW LEVEL SECURITY`), an **application** role (neither superuser nor `BYPASSRLS`),
//! and a **service** role (a member of the cluster-wide NOLOGIN role `tenancy_service`, which
//! the harness creates when missing). `TEMP` is revoked from `PUBLIC`, as in production. Test
//! your own isolation through the owner and the application role.
//!
//! Where the server comes from:
//! - `DATABASE_URL`, if set: a role that may create databases and roles (`CREATEDB`,
//!   `CREATEROLE`). The suite's BYPASSRLS-refusal test and the benches' baselines also create
//!   a `BYPASSRLS` role, which needs a superuser. Databases and roles created there are left
//!   in place (their names start with `tenancy_<pid>_`).
//! - Otherwise one cluster per process, started on first use: the server binaries are found
//!   through `TENANCY_PG_BINDIR`, `PATH`, `pg_config --bindir`, or `/usr/lib/postgresql/*/bin`;
//!   `initdb` runs in a temporary directory, the server listens on a unix socket in it (and on a
//!   free loopback port, password-protected), and when the process runs as root the server runs
//!   as the unprivileged `postgres` user (or `TENANCY_PG_USER`). A watchdog process stops the
//!   server and deletes the directory when the test process exits, however it exits.

mod citus;
mod cluster;
mod database;
mod isolation;
mod proxy;
#[cfg(feature = "clerk-jwt")]
mod tokens;

pub use citus::{CitusCluster, citus_bindir};
pub use cluster::TestCluster;
pub use database::TestDatabase;
pub use isolation::{TableUnderTest, assert_isolated, check_isolation, check_service_isolation};
pub use proxy::{ProxyStats, TcpProxy};
#[cfg(feature = "clerk-jwt")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "testing", feature = "clerk-jwt"))))]
pub use tokens::{DevKeyError, DevTokenIssuer};

/// Audits the database `pool` connects to ([`audit::audit`](crate::audit::audit)) and fails
/// the test with the report when there is an error; returns the report (warnings included).
///
/// # Panics
/// When the audit finds an error, or cannot read the catalog.
pub async fn assert_audit_clean(
    pool: &sqlx::PgPool,
    options: &crate::audit::AuditOptions,
) -> crate::audit::Report {
    let report = crate::audit::audit(pool, options)
        .await
        .expect("the audit could not read the catalog");
    assert!(!report.has_errors(), "{report}");
    report
}

/// Why a test database could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found: install them \
         (Debian/Ubuntu: `apt-get install postgresql`), set TENANCY_PG_BINDIR to their directory, \
         or set DATABASE_URL to a server whose role may create databases and roles"
    )]
    NoBinaries,
    /// No PostgreSQL with Citus (`citus.so`) is installed.
    #[error(
        "no PostgreSQL with Citus installed (citus.so): build it from ../shared/vendor \
         (see its README.md), as .ci/run does"
    )]
    NoCitus,
    /// Starting the throwaway cluster failed.
    #[error("could not start the throwaway PostgreSQL: {0}")]
    Start(String),
    /// A database statement failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `pg-tenancy` refused the pool.
    #[error(transparent)]
    Tenancy(#[from] crate::Error),
}
