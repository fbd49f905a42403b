//! The SQL migrations, embedded.
//!
//! The seven files in `migrations/` are plain SQL in sqlx's naming, one concern each:
//! organizations and memberships, the context and its entries, role policies and triggers,
//! the service path and webhook bookkeeping, membership claims, hardened mode, and permissions
//! (which permissions each role grants; it grants its own tables to whom needs them). They create
//! this crate's own tables only, never an application's. Apply them as the database owner (a
//! non-superuser role is enough; they create no roles) in one of three ways:
//!
//! - [`migrate`] (or [`MIGRATOR`]): its bookkeeping is the table [`MIGRATIONS_TABLE`], not
//!   sqlx's `_sqlx_migrations`, so your own `sqlx::migrate!()` runs beside it in the same
//!   database without "previously applied but missing" errors;
//! - or copy the files into your own `migrations/` folder and let `sqlx migrate run` (or your
//!   own `sqlx::migrate!()`) apply them with your migrations, in one bookkeeping table;
//! - or `psql -f` each file in file-name order.
//!
//! Use one of these per database, not two: each keeps its own record of what it applied.
//!
//! The migrations need the NOLOGIN role `tenancy_service` to exist (service units' policies
//! name it). Then grant the application role and the service login what they need, and take
//! `TEMP` away from everyone else:
//!
//! ```sql
//! GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, organization_members TO app;
//! GRANT SELECT, INSERT, UPDATE, DELETE
//!     ON organizations, organization_members, membership_tombstones, webhook_deliveries,
//!        membership_removals
//!     TO app_sync;  -- a LOGIN role IN ROLE tenancy_service
//! REVOKE TEMPORARY ON DATABASE app FROM PUBLIC;
//! ```
//!
//! (the lists are [`APP_TABLES`] and [`SERVICE_TABLES`]; the README and `docs/security.md`
//! show the same statements, and a test holds the three to these lists), and the same
//! `SELECT, INSERT, UPDATE, DELETE` on each tenant table of your own to both (see "Adding your
//! own tenant table" in the README).

use std::sync::LazyLock;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::error::Result;

/// The table in which [`migrate`] records the migrations it applied.
pub const MIGRATIONS_TABLE: &str = "_pg_tenancy_migrations";

/// The embedded migrations, recorded in [`MIGRATIONS_TABLE`].
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    // Its own bookkeeping, so that an application's `sqlx::migrate!()` (which records in
    // `_sqlx_migrations` and refuses versions it does not know) can share the database.
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
});

/// The tables the migrations create that the application role reads and writes.
/// All of them have Row-Level Security enabled and forced.
pub const APP_TABLES: &[&str] = &["organizations", "organization_members"];

/// The tables service units (the webhook sync, background jobs, membership claims) read and
/// write: the application's, and the identity-provider bookkeeping, which only service
/// policies admit. `membership_removals` is written by triggers; a service unit reads it when
/// it applies a session token's membership claim (see `web::Tenancy`), forgets a removal the
/// provider overrode, and prunes old ones.
pub const SERVICE_TABLES: &[&str] = &[
    "organizations",
    "organization_members",
    "membership_tombstones",
    "webhook_deliveries",
    "membership_removals",
];

/// Applies the embedded migrations, recording them in [`MIGRATIONS_TABLE`]. Connect as the
/// database owner, not as the application role.
///
/// # Errors
/// [`Error::Migrate`](crate::Error::Migrate) when a migration fails (for example: the role
/// `tenancy_service` does not exist yet, or the connecting role may not create the objects).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
