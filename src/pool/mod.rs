//! [`TenantPool`]: units of work that run under Row-Level Security.
//!
//! - `mod.rs`: the pool and its units ([`TenantPool::with_rls`], [`TenantPool::with_member`],
//!   ...);
//! - `entry.rs`: how a unit is entered (the `BEGIN` batch, retries, the database's refusals);
//! - `transaction.rs`: [`TenantTransaction`], one unit in progress;
//! - `organizations.rs`: authorizing, creating organizations, adding members, and the
//!   switcher's [`Membership`]s.

mod entry;
mod organizations;
mod transaction;

use std::fmt;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

pub(crate) use entry::{Access, Entry, Units};
pub use organizations::Membership;
pub use transaction::TenantTransaction;

use crate::context::OrgContext;
use crate::error::{Error, Result};
use crate::hardened::{ContextKey, Signer};
use crate::ids::{OrgId, UserId};
use crate::role::Role;

/// A PostgreSQL pool whose units of work run under Row-Level Security, each in a transaction
/// that the database enters with the tenant context set transaction-locally.
///
/// Every unit starts with one round trip, a single simple-query message:
/// `BEGIN; CALL "<schema>".tenancy_enter('<org>', '<user>', '<role>', <act as role>, '<the
/// session settings the pool read when it started>')` (`BEGIN READ ONLY` for read units;
/// `tenancy_enter_user` for [`memberships`](Self::memberships), `tenancy_enter_new_organization` for
/// [`create_organization`](Self::create_organization), `tenancy_enter_signed` for a
/// [`hardened`](Self::hardened) pool). The procedure checks the session (role, `search_path`,
/// no temporary objects) and that the user is a member of the organization with at least the
/// role, then sets the context with `set_config(..., true)`: transaction-local, so commit,
/// rollback, an error, a panic or a dropped future can never leave a context on a pooled
/// connection. A refusal ([`Error::NotAMember`], [`Error::InsufficientRole`]) ends the unit
/// before your code runs.
///
/// The values are interpolated only from validated types ([`OrgId`] is a `Uuid`, [`UserId`] is
/// printable ASCII without quote or backslash, [`Role`] is an enum), never from a caller's
/// string.
#[derive(Clone)]
pub struct TenantPool {
    units: Units,
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPool")
            .field("size", &self.units.pool.size())
            .finish()
    }
}

/// Whether `pg_stat_statements` would show this role its signed entries: the server loads it
/// (its settings exist), it tracks top-level utility statements for this role (a `CALL` is
/// one; `track_utility` and `track` are superuser settings, so SQL in a unit cannot turn them
/// on), and the role can read it: its `pg_stat_statements(boolean)` is executable in this
/// database, or the extension is not created here yet (whoever creates it later, in this
/// database or another the role reaches, reads what was recorded meanwhile). A `NULL` setting
/// (the library not loaded) is false.
const STATEMENTS_VISIBLE: &str = "coalesce(\
     pg_catalog.current_setting('pg_stat_statements.track_utility', true) = 'on' \
     AND pg_catalog.current_setting('pg_stat_statements.track', true) <> 'none' \
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e \
                       JOIN pg_catalog.pg_proc p ON p.pronamespace = e.extnamespace \
                      WHERE e.extname = 'pg_stat_statements' \
                        AND p.proname = 'pg_stat_statements' \
                        AND NOT pg_catalog.has_function_privilege(p.oid, 'EXECUTE')), \
     false)";

impl TenantPool {
    /// Connects with `pg-tenancy`'s pool defaults and checks the role (see [`TenantPool::new`]).
    ///
    /// Defaults: `test_before_acquire(false)`. sqlx already pings every connection when it is
    /// released (which also flushes the queued `ROLLBACK` of a dropped transaction); a second
    /// ping on acquire would add a round trip to every unit of work.
    ///
    /// # Errors
    /// As [`TenantPool::connect_with`].
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options).await
    }

    /// [`TenantPool::connect`] with explicit connect options.
    ///
    /// # Errors
    /// A database error when no connection can be made, else as [`TenantPool::new`].
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
    ///
    /// It also reads, once, the schema of pg-tenancy's functions (so that every unit names them
    /// schema-qualified) and the session's `search_path` (which every unit then checks is
    /// unchanged). [`Error::MissingSchema`] when the migrations have not been applied.
    ///
    /// # Errors
    /// [`Error::UnsafeDatabaseRole`], [`Error::MissingSchema`],
    /// [`Error::UnsupportedSearchPath`] when the session's `search_path` is not printable ASCII
    /// without quote or backslash, [`Error::HardenedModeRequired`] when the database is in
    /// hardened mode (unsigned units would see nothing there); a database error reading the
    /// catalog.
    pub async fn new(pool: PgPool) -> Result<Self> {
        let units = Units::inspect(pool).await?;
        if units.hardened_mode().await? {
            return Err(Error::HardenedModeRequired);
        }
        Ok(TenantPool { units })
    }

    /// Wraps a pool for a database in **hardened mode**: every unit's context is signed with
    /// `key` and sealed by the database, so SQL injected into a unit cannot switch it with
    /// `set_config` or `SET LOCAL` (see `docs/security.md`). Contexts expire after 60 s.
    ///
    /// # Errors
    /// As [`TenantPool::new`], and [`Error::HardenedModeOff`] when the owner has not enabled
    /// hardened mode ([`ContextKey::enable_sql`]); [`Error::ContextVisible`] when the role's
    /// `track_activities` is on, which would show each unit's signed context to other
    /// sessions of the role; [`Error::StatementsVisible`] when the server loads
    /// `pg_stat_statements` and it would record the role's signed entries where the role can
    /// read them (`pg_stat_statements.track_utility` on); [`Error::ContextKeyReadable`] when
    /// the role can read the key.
    pub async fn hardened(pool: PgPool, key: ContextKey) -> Result<Self> {
        let units = Units::inspect(pool).await?;
        if !units.hardened_mode().await? {
            return Err(Error::HardenedModeOff);
        }
        Self::hardened_with(units, key, 0, true).await
    }

    /// [`TenantPool::hardened`] with the application's clock skewed by `skew_secs`, the offset
    /// to the database's clock measured (as `hardened` does) or not: for tests of the skew
    /// handling only.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub async fn hardened_with_simulated_skew(
        pool: PgPool,
        key: ContextKey,
        skew_secs: i64,
        measure_offset: bool,
    ) -> Result<Self> {
        let units = Units::inspect(pool).await?;
        Self::hardened_with(units, key, skew_secs, measure_offset).await
    }

    async fn hardened_with(
        mut units: Units,
        key: ContextKey,
        skew_secs: i64,
        measure_offset: bool,
    ) -> Result<Self> {
        if !units.hardened_mode().await? {
            return Err(Error::HardenedModeOff);
        }
        let mut signer = Signer {
            key,
            ttl: Signer::DEFAULT_TTL,
            clock_offset: 0,
            simulated_skew: skew_secs,
        };
        // One simple-protocol message (it works through PgBouncer): who we are, whether our
        // contexts would show in pg_stat_activity or pg_stat_statements, whether we can read
        // the key, and the database's clock. Names come from `inspect` (a quoted schema).
        let sent_at = signer.app_now();
        let row = sqlx::raw_sql(AssertSqlSafe(format!(
            "SELECT current_user::text, pg_catalog.current_setting('track_activities'), \
                    {}tenancy_context_key_readable(), \
                    pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()), \
                    {STATEMENTS_VISIBLE}",
            units.schema_prefix
        )))
        .fetch_one(&units.pool)
        .await?;
        let role: String = sqlx::Row::try_get(&row, 0)?;
        let tracked: String = sqlx::Row::try_get(&row, 1)?;
        let key_readable: bool = sqlx::Row::try_get(&row, 2)?;
        let database_now: f64 = sqlx::Row::try_get(&row, 3)?;
        let statements_visible: bool = sqlx::Row::try_get(&row, 4)?;
        if tracked != "off" {
            return Err(Error::ContextVisible { role });
        }
        if statements_visible {
            return Err(Error::StatementsVisible { role });
        }
        if key_readable {
            return Err(Error::ContextKeyReadable { role });
        }
        if measure_offset {
            // Whole seconds are enough: contexts live for tens of seconds.
            #[allow(clippy::cast_possible_truncation)]
            let database_now = database_now.round() as i64;
            signer.clock_offset = database_now - sent_at;
        }
        units.sign_with(signer);
        Ok(TenantPool { units })
    }

    /// How long a hardened pool's signed contexts live: a unit still running after that fails
    /// with SQLSTATE `TNC08` at its next statement, rather than reading nothing. Expiries are
    /// written in the database's clock (the pool measures the offset when it starts), so the
    /// application's clock may be skewed. Default 60 s; no effect on an unhardened pool.
    #[must_use]
    pub fn with_context_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.units.set_context_ttl(ttl);
        self
    }

    /// Wraps a pool **without** checking its role. Only for tools that deliberately connect as
    /// a role that bypasses RLS (migrations, audits); never for serving requests.
    ///
    /// Nothing is read from the database, so its units have no expected `search_path` to send:
    /// the database refuses every one of them as an unclean session (a database error with
    /// SQLSTATE `TNC05`). Use [`pool`](Self::pool) and [`audited`](Self::audited) on it.
    pub fn dangerously_skip_role_check(pool: PgPool) -> Self {
        TenantPool {
            units: Units::unchecked(pool),
        }
    }

    /// Audits the database as this pool's role ([`audit::audit`](crate::audit::audit)) and
    /// returns the pool only if the audit finds no error: a start-up option for a service that
    /// must not serve with a tenant table left open. Warnings do not stop it.
    ///
    /// ```no_run
    /// # async fn demo() -> pg_tenancy::Result<()> {
    /// use pg_tenancy::{TenantPool, audit::AuditOptions};
    /// let pool = TenantPool::connect("postgres://app@localhost/app")
    ///     .await?
    ///     .audited(&AuditOptions::default().with_table("invoices"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::AuditFailed`] with the report when there are errors; a database error reading
    /// the catalog.
    pub async fn audited(self, options: &crate::audit::AuditOptions) -> Result<Self> {
        let report = crate::audit::audit(self.pool(), options).await?;
        if report.has_errors() {
            return Err(Error::AuditFailed(Box::new(report)));
        }
        Ok(self)
    }

    /// The underlying pool. Queries run on it directly have no tenant context, so the policies
    /// give them no tenant rows and refuse their writes.
    pub fn pool(&self) -> &PgPool {
        &self.units.pool
    }

    /// Runs `f` in a read-write transaction with `ctx` set; commits on `Ok`, rolls back on
    /// `Err`, on panic, and when the returned future is dropped midway.
    ///
    /// Round trips: one for `BEGIN` with the context, yours, one for `COMMIT`.
    ///
    /// ```no_run
    /// # async fn demo(pool: pg_tenancy::TenantPool, ctx: pg_tenancy::OrgContext) -> pg_tenancy::Result<()> {
    /// let names: Vec<String> = pool
    ///     .with_rls(&ctx, async |tx| {
    ///         // No WHERE: the policy still limits this to ctx's organization.
    ///         Ok::<_, pg_tenancy::Error>(sqlx::query_scalar("SELECT name FROM projects").fetch_all(tx).await?)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TenantPool::begin`] before `f` runs; then whatever `f` returns, or a database error
    /// from `COMMIT`.
    pub async fn with_rls<T, E, F>(&self, ctx: &OrgContext, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        crate::trace::unit("write", Some(ctx.org_id()), async {
            let mut tx = self.begin(ctx).await?;
            let value = f(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        })
        .await
    }

    /// Runs `f` in a `READ ONLY` transaction with `ctx` set, and ends it by dropping it: sqlx
    /// queues the `ROLLBACK` and flushes it with the pool's release ping, off your path, before
    /// the connection can be handed out again.
    ///
    /// Round trips: one for `BEGIN` with the context, then yours.
    ///
    /// # Errors
    /// As [`TenantPool::begin_read`] before `f` runs; then whatever `f` returns.
    pub async fn with_rls_read<T, E, F>(&self, ctx: &OrgContext, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        crate::trace::unit("read", Some(ctx.org_id()), async {
            let mut tx = self.begin_read(ctx).await?;
            f(&mut tx).await
        })
        .await
    }

    /// Checks membership and role **in the same round trip as `BEGIN`**, then runs `f` like
    /// [`TenantPool::with_rls`]: a unit of work for a user and an organization taken from a
    /// verified session, with no separate lookup first.
    ///
    /// [`Error::NotAMember`] or [`Error::InsufficientRole`] if the check fails (the
    /// transaction is rolled back and `f` never runs). Round trips: three for one query.
    ///
    /// # Errors
    /// [`Error::NotAMember`] / [`Error::InsufficientRole`] before `f` runs; then whatever `f`
    /// returns, or a database error from `COMMIT`.
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
        crate::trace::unit("member", Some(org), async {
            let mut tx = self
                .units
                .start(
                    Access::ReadWrite,
                    Entry::Member {
                        org,
                        user,
                        role: min_role,
                        act_as_claimed: false,
                    },
                )
                .await?;
            let value = f(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        })
        .await
    }

    /// Starts a read-write unit of work with `ctx` set, for flows that do not fit a closure.
    /// Call [`TenantTransaction::commit`]; dropping it rolls back.
    ///
    /// Like every unit, it is admitted by the database in the `BEGIN` round trip.
    ///
    /// # Errors
    /// [`Error::NotAMember`] when `ctx`'s user is not (or no longer) a member of `ctx`'s
    /// organization, or the organization is deleted; [`Error::InsufficientRole`] when `ctx`
    /// claims a higher role than the membership holds (the unit acts with `ctx`'s role, never
    /// more; for a context from a session token, with the membership's role, never less than
    /// `ctx`'s).
    pub async fn begin(&self, ctx: &OrgContext) -> Result<TenantTransaction> {
        self.start_for(Access::ReadWrite, Entry::for_context(ctx), ctx)
            .await
    }

    /// Starts a `READ ONLY` unit of work with `ctx` set. Drop it when done (see
    /// [`TenantPool::with_rls_read`]).
    ///
    /// # Errors
    /// As [`TenantPool::begin`].
    pub async fn begin_read(&self, ctx: &OrgContext) -> Result<TenantTransaction> {
        self.start_for(Access::ReadOnly, Entry::for_context(ctx), ctx)
            .await
    }

    /// Enters `entry`, a unit for `ctx`. With the `web` feature, a context that carries the
    /// membership its session token claims (`web::Tenancy::with_token_memberships`) has it
    /// applied when this entry finds no membership (`TNC01`), once per request, and the entry
    /// is tried again, requiring the same role (a token claiming more than the claim grants,
    /// admin, is then refused with `TNC02` until the identity provider's own event lands): the
    /// one path that pays for the claim.
    async fn start_for(
        &self,
        access: Access,
        entry: Entry<'_>,
        ctx: &OrgContext,
    ) -> Result<TenantTransaction> {
        let entered = self.units.start(access, entry).await;
        #[cfg(feature = "web")]
        if let (Err(Error::NotAMember), Some(claim), Entry::Member { .. }) =
            (&entered, ctx.pending_claim(), entry)
            && claim.apply_once(ctx.org_id(), ctx.user_id()).await?
        {
            return self.units.start(access, entry).await;
        }
        #[cfg(not(feature = "web"))]
        let _ = ctx;
        entered
    }
}
