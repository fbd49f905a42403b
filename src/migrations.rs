//! The SQL migrations, embedded.
//!
//! The files in `migrations/` are plain SQL in sqlx's naming. Apply them with [`migrate`] (or
//! [`MIGRATOR`]), with `sqlx migrate run`, or with `psql -f` in file-name order, as the
//! database owner: a non-superuser role is enough, and the migrations create no roles.
//!
//! The migrations need the NOLOGIN role `tenancy_service` to exist (service units' policies
//! name it). Then grant the application role and the service login what they need, and take
//! `TEMP` away from everyone else:
//!
//! ```sql
//! GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, organization_members, projects TO app;
//! GRANT SELECT, INSERT, UPDATE, DELETE
//!     ON organizations, organization_members, projects, membership_tombstones, webhook_deliveries
//!     TO tenancy_sync;  -- a LOGIN role IN ROLE tenancy_service
//! GRANT SELECT ON membership_removals TO tenancy_sync;
//! REVOKE TEMPORARY ON DATABASE app FROM PUBLIC;
//! ```
//!
//! (the lists are [`APP_TABLES`], [`SERVICE_TABLES`] and [`SERVICE_READ_TABLES`]).

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::error::Result;

/// The embedded migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The tables the migrations create that the application role reads and writes.
/// All of them have Row-Level Security enabled and forced.
pub const APP_TABLES: &[&str] = &["organizations", "organization_members", "projects"];

/// The tables service units (the webhook sync, background jobs) read and write: the
/// application's, and the webhook bookkeeping, which only service policies admit.
pub const SERVICE_TABLES: &[&str] = &[
    "organizations",
    "organization_members",
    "projects",
    "membership_tombstones",
    "webhook_deliveries",
];

/// The tables service units only read: `membership_removals` (written by a trigger, read
/// when a session token's membership claim is applied, see `web::Tenancy`).
pub const SERVICE_READ_TABLES: &[&str] = &["membership_removals"];

/// Applies the embedded migrations. Connect as the database owner, not as the application
/// role.
///
/// # Errors
/// [`Error::Migrate`](crate::Error::Migrate) when a migration fails (for example: the role `tenancy_service` does not
/// exist yet, or the connecting role may not create the objects).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
