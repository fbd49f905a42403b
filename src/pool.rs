//! [`TenantPool`]: units of work that run under Row-Level Security.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;

use crate::context::OrgContext;
use crate::error::{Error, Result, sqlstate};
use crate::ids::{OrgId, UserId};
use crate::role::Role;

// sqlx's transaction bookkeeping, driven directly (sqlx does not re-export the trait) so that
// the window between sending BEGIN and sqlx counting the transaction is ours to guard (see
// `State::Beginning`).
type Tm = <Postgres as sqlx::Database>::TransactionManager;

/// A PostgreSQL pool whose units of work run with the tenant context set transaction-locally.
///
/// Every unit starts with a single round trip that sends
/// `BEGIN; SET LOCAL app.current_org_id = '<uuid>'; ...` as one simple-query message. The
/// values are interpolated only from validated types ([`OrgId`] is a `Uuid`, [`UserId`] is
/// restricted printable ASCII, [`Role`] is an enum), never from a caller's string, and `LOCAL`
/// makes each setting end with the transaction: commit, rollback, error, panic or a dropped
/// future can never leave a context on a pooled connection.
#[derive(Clone)]
pub struct TenantPool {
    pool: PgPool,
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPool")
            .field("size", &self.pool.size())
            .finish()
    }
}

/// One of a user's memberships, as the organization switcher lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Membership {
    /// The organization.
    pub org_id: OrgId,
    /// Its display name.
    pub name: String,
    /// Its slug, if it has one.
    pub slug: Option<String>,
    /// The user's role there.
    pub role: Role,
}

impl TenantPool {
    /// Connects with `tenancy`'s pool defaults and checks the role (see [`TenantPool::new`]).
    ///
    /// Defaults: `test_before_acquire(false)`. sqlx already pings every connection when it is
    /// released (which also flushes the queued `ROLLBACK` of a dropped transaction); a second
    /// ping on acquire would add a round trip to every unit of work.
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options).await
    }

    /// [`TenantPool::connect`] with explicit connect options.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Self::new(pool).await
    }

    /// Wraps an existing pool after checking that its database role is subject to Row-Level
    /// Security: a `SUPERUSER` or `BYPASSRLS` role makes every policy silently do nothing, so it
    /// is refused with [`Error::UnsafeDatabaseRole`].
    pub async fn new(pool: PgPool) -> Result<Self> {
        let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&pool)
        .await?;
        if superuser {
            return Err(Error::UnsafeDatabaseRole {
                role,
                reason: "superuser",
            });
        }
        if bypass {
            return Err(Error::UnsafeDatabaseRole {
                role,
                reason: "bypassrls",
            });
        }
        Ok(TenantPool { pool })
    }

    /// Wraps a pool **without** checking its role. Only for tools that deliberately connect as
    /// a role that bypasses RLS (migrations, audits); never for serving requests.
    pub fn dangerously_skip_role_check(pool: PgPool) -> Self {
        TenantPool { pool }
    }

    /// The underlying pool. Queries run on it directly have no tenant context, so the policies
    /// give them no tenant rows and refuse their writes.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks in the database that `user` is a member of `org` and returns the context.
    ///
    /// One round trip (an autocommit call of `tenancy_member_role`, which sets the context
    /// transaction-locally for its own lookup). [`Error::NotAMember`] when there is no such
    /// membership, or no such organization.
    pub async fn authorize(&self, user: &UserId, org: OrgId) -> Result<OrgContext> {
        let role: Option<String> = sqlx::query_scalar("SELECT tenancy_member_role($1, $2)")
            .bind(org.as_uuid())
            .bind(user.as_str())
            .fetch_one(&self.pool)
            .await?;
        let role: Role = role.ok_or(Error::NotAMember)?.parse()?;
        Ok(OrgContext::from_verified_session(org, user.clone(), role))
    }

    /// Creates an organization with `owner` as its owner, in one unit of work whose context is
    /// the new organization, and returns the owner's context.
    ///
    /// Use [`OrgId::from_external_id`] for an identity provider's organization, or
    /// `OrgId::from_uuid(Uuid::new_v4())` for your own. [`ErrorKind::Conflict`](crate::ErrorKind)
    /// if the id or slug is taken.
    pub async fn create_organization(
        &self,
        org: OrgId,
        name: &str,
        slug: Option<&str>,
        owner: &UserId,
    ) -> Result<OrgContext> {
        let ctx = OrgContext::from_verified_session(org, owner.clone(), Role::Owner);
        self.with_rls(&ctx, async |tx| {
            sqlx::query("INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)")
                .bind(org.as_uuid())
                .bind(name)
                .bind(slug)
                .execute(&mut *tx)
                .await?;
            insert_member(tx, org, owner, Role::Owner).await
        })
        .await?;
        Ok(ctx)
    }

    /// Adds `user` to `ctx`'s organization with `role`. Needs an admin, and an owner to add an
    /// owner ([`Error::InsufficientRole`] otherwise).
    pub async fn add_member(&self, ctx: &OrgContext, user: &UserId, role: Role) -> Result<()> {
        ctx.require_role(Role::Admin.max(role))?;
        self.with_rls(ctx, async |tx| {
            insert_member(tx, ctx.org_id(), user, role).await
        })
        .await
    }

    /// Runs `f` in a read-write transaction with `ctx` set; commits on `Ok`, rolls back on
    /// `Err`, on panic, and when the returned future is dropped midway.
    ///
    /// Round trips: one for `BEGIN` with the context, yours, one for `COMMIT`.
    ///
    /// ```no_run
    /// # async fn demo(pool: tenancy::TenantPool, ctx: tenancy::OrgContext) -> tenancy::Result<()> {
    /// let names: Vec<String> = pool
    ///     .with_rls(&ctx, async |tx| {
    ///         // No WHERE: the policy still limits this to ctx's organization.
    ///         Ok::<_, tenancy::Error>(sqlx::query_scalar("SELECT name FROM projects").fetch_all(tx).await?)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_rls<T, E, F>(&self, ctx: &OrgContext, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let mut tx = self.begin(ctx).await?;
        let value = f(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Runs `f` in a `READ ONLY` transaction with `ctx` set, and ends it by dropping it: sqlx
    /// queues the `ROLLBACK` and flushes it with the pool's release ping, off your path, before
    /// the connection can be handed out again.
    ///
    /// Round trips: one for `BEGIN` with the context, then yours.
    pub async fn with_rls_read<T, E, F>(&self, ctx: &OrgContext, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let mut tx = self.begin_read(ctx).await?;
        f(&mut tx).await
    }

    /// Checks membership and role **in the same round trip as `BEGIN`**, then runs `f` like
    /// [`TenantPool::with_rls`]: a unit of work for a user and an organization taken from a
    /// verified session, with no separate lookup first.
    ///
    /// [`Error::NotAMember`] or [`Error::InsufficientRole`] if the check fails (the
    /// transaction is rolled back and `f` never runs). Round trips: three for one query.
    pub async fn with_member<T, E, F>(
        &self,
        user: &UserId,
        org: OrgId,
        min_role: Role,
        f: F,
    ) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let mut tx = self
            .start(Access::ReadWrite, Some(org), user, Some(min_role))
            .await?;
        let value = f(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Starts a read-write unit of work with `ctx` set, for flows that do not fit a closure.
    /// Call [`TenantTransaction::commit`]; dropping it rolls back.
    pub async fn begin(&self, ctx: &OrgContext) -> Result<TenantTransaction> {
        self.start(Access::ReadWrite, Some(ctx.org_id()), ctx.user_id(), None)
            .await
    }

    /// Starts a `READ ONLY` unit of work with `ctx` set. Drop it when done (see
    /// [`TenantPool::with_rls_read`]).
    pub async fn begin_read(&self, ctx: &OrgContext) -> Result<TenantTransaction> {
        self.start(Access::ReadOnly, Some(ctx.org_id()), ctx.user_id(), None)
            .await
    }

    /// The organizations `user` belongs to, for an organization switcher, read before any
    /// organization is chosen: a `READ ONLY` unit with only `app.current_user_id` set, which
    /// the `own_memberships` / `own_organizations` policies allow to read the user's own
    /// memberships and nothing else.
    pub async fn memberships(&self, user: &UserId) -> Result<Vec<Membership>> {
        let mut tx = self.start(Access::ReadOnly, None, user, None).await?;
        let rows: Vec<(uuid::Uuid, String, Option<String>, String)> = sqlx::query_as(
            "SELECT o.id, o.name, o.slug, m.role FROM organization_members m \
             JOIN organizations o ON o.id = m.organization_id \
             WHERE m.user_id = $1 AND o.deleted_at IS NULL ORDER BY o.name, o.id",
        )
        .bind(user.as_str())
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|(id, name, slug, role)| {
                Ok(Membership {
                    org_id: OrgId::from_uuid(id),
                    name,
                    slug,
                    role: role.parse()?,
                })
            })
            .collect()
    }

    async fn start(
        &self,
        access: Access,
        org: Option<OrgId>,
        user: &UserId,
        required: Option<Role>,
    ) -> Result<TenantTransaction> {
        let sql = begin_sql(access, org, user, required);
        let conn = self.pool.acquire().await?;
        let mut tx = TenantTransaction {
            conn,
            state: State::Beginning,
            org,
        };
        // SAFETY (SQL): `sql` is built by `begin_sql` from validated values only.
        match Tm::begin(&mut tx.conn, Some(AssertSqlSafe(sql).into_sql_str())).await {
            Ok(()) => {
                tx.state = State::Open;
                Ok(tx)
            }
            Err(error) => {
                // A server error inside the BEGIN batch leaves an aborted transaction that sqlx
                // does not count (its depth is still 0). Roll it back here; if that fails the
                // state stays `Beginning` and the connection is closed, never reused.
                if matches!(error, sqlx::Error::Database(_))
                    && tx.conn.execute("ROLLBACK").await.is_ok()
                {
                    tx.state = State::Finished;
                }
                Err(begin_error(error, required))
            }
        }
    }
}

async fn insert_member(tx: &mut PgConnection, org: OrgId, user: &UserId, role: Role) -> Result<()> {
    sqlx::query(
        "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)",
    )
    .bind(org.as_uuid())
    .bind(user.as_str())
    .bind(role.as_str())
    .execute(tx)
    .await?;
    Ok(())
}

fn begin_error(error: sqlx::Error, required: Option<Role>) -> Error {
    if let sqlx::Error::Database(db) = &error {
        match db.code().as_deref() {
            Some(sqlstate::NOT_A_MEMBER) => return Error::NotAMember,
            Some(sqlstate::ROLE_TOO_LOW) => {
                let actual = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(|e| e.detail())
                    .and_then(|d| d.parse::<Role>().ok());
                if let (Some(required), Some(actual)) = (required, actual) {
                    return Error::InsufficientRole { required, actual };
                }
            }
            _ => {}
        }
    }
    Error::Database(error)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// The one-round-trip BEGIN batch. Every interpolated value is validated by its type:
/// `OrgId` prints a canonical uuid, `UserId` admits no quote or backslash, `Role` is an enum.
///
/// Two settings, organization and user. The role is not sent: policies that need it call
/// `tenancy_current_org_role()`, which reads the membership itself, so a role the application
/// claims can never widen what a policy allows (and each unit runs one statement fewer).
fn begin_sql(access: Access, org: Option<OrgId>, user: &UserId, require: Option<Role>) -> String {
    let begin = match access {
        Access::ReadWrite => "BEGIN",
        Access::ReadOnly => "BEGIN READ ONLY",
    };
    let org = org.map(|o| o.to_string()).unwrap_or_default();
    // SET LOCAL rather than SELECT set_config(..., true): the same transaction-local effect,
    // but a utility statement (no planning, no result row), measurably cheaper per unit.
    let mut sql = format!(
        "{begin}; SET LOCAL app.current_org_id = '{org}'; \
         SET LOCAL app.current_user_id = '{user}'",
        user = user.as_str(),
    );
    if let Some(min) = require {
        sql.push_str(&format!(
            "; SELECT tenancy_require_member('{}')",
            min.as_str()
        ));
    }
    sql
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The BEGIN batch may have reached the server but sqlx has not counted the transaction:
    /// dropped in this state, the connection is closed rather than returned to the pool.
    Beginning,
    /// In a transaction sqlx knows of: dropped, sqlx queues a ROLLBACK that the release ping
    /// flushes before the connection is reused.
    Open,
    Finished,
}

/// A unit of work in progress, with the tenant context set transaction-locally.
///
/// Dereferences to [`PgConnection`], so `&mut *tx` is an executor. Ends with
/// [`commit`](Self::commit) or [`rollback`](Self::rollback); dropped, it rolls back.
pub struct TenantTransaction {
    conn: PoolConnection<Postgres>,
    state: State,
    org: Option<OrgId>,
}

impl fmt::Debug for TenantTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTransaction")
            .field("org", &self.org)
            .field("state", &self.state)
            .finish()
    }
}

impl TenantTransaction {
    /// The organization this unit runs in (`None` for a user-scoped unit).
    pub fn org_id(&self) -> Option<OrgId> {
        self.org
    }

    /// Commits. On error the transaction is rolled back.
    pub async fn commit(mut self) -> Result<()> {
        Tm::commit(&mut self.conn).await?;
        self.state = State::Finished;
        Ok(())
    }

    /// Rolls back now, waiting for the server (dropping does the same off your path).
    pub async fn rollback(mut self) -> Result<()> {
        Tm::rollback(&mut self.conn).await?;
        self.state = State::Finished;
        Ok(())
    }
}

impl Deref for TenantTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for TenantTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for TenantTransaction {
    fn drop(&mut self) {
        match self.state {
            State::Beginning => self.conn.close_on_drop(),
            State::Open => Tm::start_rollback(&mut self.conn),
            State::Finished => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_batch_carries_only_validated_literals() {
        let org = OrgId::from_external_id("org_a");
        let user = UserId::new("user_1").unwrap();
        let sql = begin_sql(Access::ReadOnly, Some(org), &user, None);
        assert_eq!(
            sql,
            format!(
                "BEGIN READ ONLY; SET LOCAL app.current_org_id = '{org}'; \
                 SET LOCAL app.current_user_id = 'user_1'"
            )
        );
        let sql = begin_sql(Access::ReadWrite, None, &user, Some(Role::Owner));
        assert!(sql.starts_with("BEGIN; SET LOCAL app.current_org_id = ''; "));
        assert!(sql.ends_with("; SELECT tenancy_require_member('owner')"));
        // Every SET is transaction-local.
        assert_eq!(
            sql.matches("SET ").count(),
            sql.matches("SET LOCAL ").count()
        );
    }
}
