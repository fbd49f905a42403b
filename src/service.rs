//! [`ServicePool`]: units of work that act without a member (the webhook sync, background
//! jobs), through a database role of their own.

use std::fmt;

use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Result};
use crate::ids::OrgId;
use crate::pool::{Access, Entry, TenantTransaction, Units};

/// A pool for **service units**: work no member asks for, such as applying an identity
/// provider's webhooks or a background job, inside one organization at a time.
///
/// It connects as a login that is a member of the NOLOGIN role `tenancy_service` (the README's
/// set-up creates both). The database admits a service unit only for such a role
/// (`tenancy_enter_service`), and the service policies apply only to it, so request code that
/// connects as the application role cannot reach this path, not even with raw SQL. Neither
/// superuser nor `BYPASSRLS` is needed, and both are refused.
///
/// ```no_run
/// # async fn demo() -> pg_tenancy::Result<()> {
/// use pg_tenancy::{OrgId, ServicePool};
/// let service = ServicePool::connect("postgres://tenancy_sync@localhost/app").await?;
/// let org = OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
/// let n: i64 = service
///     .with_org(org, async |tx| {
///         Ok::<_, pg_tenancy::Error>(sqlx::query_scalar("SELECT count(*) FROM projects").fetch_one(tx).await?)
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServicePool {
    units: Units,
}

impl fmt::Debug for ServicePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePool")
            .field("size", &self.units.pool.size())
            .finish()
    }
}

impl ServicePool {
    /// Connects and checks the role (see [`ServicePool::new`]).
    ///
    /// # Errors
    /// As [`ServicePool::new`], or a connection error.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPool::connect(url).await?;
        Self::new(pool).await
    }

    /// Wraps a pool whose role is a member of `tenancy_service`.
    ///
    /// # Errors
    /// [`Error::UnsafeDatabaseRole`] for a superuser or `BYPASSRLS` role,
    /// [`Error::NotAServiceRole`] for a role outside `tenancy_service`,
    /// [`Error::MissingSchema`] before the migrations.
    pub async fn new(pool: PgPool) -> Result<Self> {
        // Simple protocol, one message: safe through a transaction-pooling proxy.
        let row = sqlx::raw_sql(
            "SELECT current_user::text, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_service') \
                    AND pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE')",
        )
        .fetch_one(&pool)
        .await?;
        let (role, member): (String, bool) =
            (sqlx::Row::try_get(&row, 0)?, sqlx::Row::try_get(&row, 1)?);
        if !member {
            return Err(Error::NotAServiceRole { role });
        }
        Ok(ServicePool {
            units: Units::inspect(pool).await?,
        })
    }

    /// The underlying pool (no context: the policies give it no tenant rows).
    pub fn pool(&self) -> &PgPool {
        &self.units.pool
    }

    /// Runs `f` in a read-write service unit inside `org`; commits on `Ok`, rolls back on `Err`,
    /// panic or a dropped future. Round trips as [`TenantPool::with_rls`](crate::TenantPool::with_rls).
    ///
    /// # Errors
    /// Whatever `f` returns, or a database error.
    pub async fn with_org<T, E, F>(&self, org: OrgId, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        crate::trace::unit("service", Some(org), async {
            let mut tx = self.begin_org(org).await?;
            let value = f(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        })
        .await
    }

    /// Starts a read-write service unit inside `org`, for flows that do not fit a closure.
    ///
    /// # Errors
    /// A database error.
    pub async fn begin_org(&self, org: OrgId) -> Result<TenantTransaction> {
        self.units
            .start(Access::ReadWrite, Entry::Service { org: Some(org) })
            .await
    }

    /// Purges an organization's data in one service unit: marks it deleted if it is not yet
    /// (its memberships go), then deletes its rows from every table whose foreign key
    /// references `organizations` (`ON DELETE CASCADE` on their own children does the rest).
    /// The organization's row stays, marked deleted, as its id's tombstone: nobody can create
    /// an organization with that id again, and a late identity-provider event finds it
    /// deleted. Nothing hard-deletes an organization's row (a policy refuses it to everyone).
    /// Returns how many rows were deleted from those tables.
    ///
    /// The service login needs `DELETE` on those tables (the README's grants).
    ///
    /// # Errors
    /// A database error; `42501` when the service login lacks `DELETE` on one of the tables, or
    /// a foreign-key violation when a table references them without `ON DELETE CASCADE`.
    pub async fn purge_organization(&self, org: OrgId) -> Result<u64> {
        self.with_org(org, async |tx| {
            let deleted: i64 = sqlx::query_scalar("SELECT tenancy_purge_organization($1)")
                .bind(org.as_uuid())
                .fetch_one(&mut *tx)
                .await?;
            Ok(u64::try_from(deleted).unwrap_or(0))
        })
        .await
    }

    /// Sets the permissions the role `key` grants, for every organization (role definitions
    /// are the instance's): memberships whose provider role key is `key` (Clerk:
    /// `org:billing`), or, for memberships the application made, whose role is `key`
    /// (`"admin"`, [`Role::as_str`](crate::Role::as_str)). Replaces what the role granted; a
    /// role the provider deleted is defined again. Takes effect at each member's next unit,
    /// whose policies read them with `tenancy_current_org_id_with('<permission>')`.
    ///
    /// With Clerk, the sync keeps roles current from their `role.*` and `permission.*` events;
    /// this sets the roles that existed before it ran (and is how an application without
    /// Clerk defines its own). One service unit entered without an organization.
    ///
    /// # Errors
    /// [`Error::Database`] with SQLSTATE `23514` when a key is empty or a permission holds a
    /// comma or white space; a database error otherwise (for example a login outside
    /// `tenancy_service`).
    pub async fn set_role_permissions<I, P>(&self, key: &str, permissions: I) -> Result<()>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let owned: Vec<String> = permissions
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        let mut tx = self.begin_maintenance().await?;
        sqlx::query("SELECT tenancy_set_role_permissions($1, $2)")
            .bind(key)
            .bind(&owned)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A service unit in no organization: only the cross-organization maintenance policies
    /// (pruning webhook deliveries, role definitions) admit anything in it.
    pub(crate) async fn begin_maintenance(&self) -> Result<TenantTransaction> {
        self.units
            .start(Access::ReadWrite, Entry::Service { org: None })
            .await
    }
}
