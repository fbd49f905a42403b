//! [`TenantPool`]: units of work that run under Row-Level Security.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;

use crate::context::OrgContext;
use crate::error::{Error, Result, sqlstate};
use crate::hardened::{ContextKey, Signer};
use crate::ids::{OrgId, UserId};
use crate::role::Role;
use crate::sql_ident::quote_ident;

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
    units: Units,
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPool")
            .field("size", &self.units.pool.size())
            .finish()
    }
}

/// What [`TenantPool`] and [`ServicePool`](crate::ServicePool) share: the pool, and what the
/// BEGIN batch needs to name pg-tenancy's functions and check the session.
#[derive(Clone)]
pub(crate) struct Units {
    pub(crate) pool: PgPool,
    /// The schema holding pg-tenancy's functions, quoted (`"public".`), or empty when unknown
    /// ([`TenantPool::dangerously_skip_role_check`]).
    schema_prefix: Arc<str>,
    /// The session `search_path` every unit must find, as a validated SQL literal (`NULL`
    /// when unknown).
    search_path_literal: Arc<str>,
    /// Hardened mode: signs each request unit's context.
    signer: Option<Signer>,
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
    /// The identity provider's id for it (Clerk: `org_...`), if it has one: what a switcher
    /// asks the provider to make active.
    pub external_id: Option<String>,
    /// The user's role there.
    pub role: Role,
}

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
    /// [`Error::UnsafeDatabaseRole`], [`Error::MissingSchema`], and
    /// [`Error::HardenedModeRequired`] when the database is in hardened mode (unsigned units
    /// would see nothing there).
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
    /// sessions of the role.
    pub async fn hardened(pool: PgPool, key: ContextKey) -> Result<Self> {
        let mut units = Units::inspect(pool).await?;
        if !units.hardened_mode().await? {
            return Err(Error::HardenedModeOff);
        }
        let row = sqlx::raw_sql(
            "SELECT current_user::text, pg_catalog.current_setting('track_activities')",
        )
        .fetch_one(&units.pool)
        .await?;
        let (role, tracked): (String, String) =
            (sqlx::Row::try_get(&row, 0)?, sqlx::Row::try_get(&row, 1)?);
        if tracked != "off" {
            return Err(Error::ContextVisible { role });
        }
        units.signer = Some(Signer {
            key,
            ttl: std::time::Duration::from_secs(60),
        });
        Ok(TenantPool { units })
    }

    /// Wraps a pool **without** checking its role. Only for tools that deliberately connect as
    /// a role that bypasses RLS (migrations, audits); never for serving requests. Units name
    /// pg-tenancy's functions unqualified and skip the `search_path` check.
    pub fn dangerously_skip_role_check(pool: PgPool) -> Self {
        TenantPool {
            units: Units {
                pool,
                schema_prefix: Arc::from(""),
                search_path_literal: Arc::from("NULL"),
                signer: None,
            },
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

    /// Checks in the database that `user` is a member of `org` and returns the context.
    ///
    /// One round trip (an autocommit call of `tenancy_member_role`, which sets the context
    /// transaction-locally for its own lookup). [`Error::NotAMember`] when there is no such
    /// membership, or no such organization.
    ///
    /// # Errors
    /// [`Error::NotAMember`] when `user` is not a member of the live organization `org`; a
    /// database error otherwise.
    pub async fn authorize(&self, user: &UserId, org: OrgId) -> Result<OrgContext> {
        // One simple-protocol message with validated literals (the prefix is a quoted
        // identifier read from the catalog, `OrgId` a uuid, `UserId` without quote or
        // backslash): no named statement that an SQL-level PREPARE left on the session by an
        // earlier unit could stand in for, and still one round trip.
        let sql = format!(
            "SELECT {}tenancy_member_role('{org}', '{}')",
            self.units.schema_prefix,
            user.as_str()
        );
        let row = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_one(&self.units.pool)
            .await?;
        let role: Option<String> = sqlx::Row::try_get(&row, 0)?;
        let role: Role = role.ok_or(Error::NotAMember)?.parse()?;
        Ok(OrgContext::from_verified_session(org, user.clone(), role))
    }

    /// Creates an organization with `owner` as its owner, in one unit of work whose context is
    /// the new organization, and returns the owner's context.
    ///
    /// Use [`OrgId::from_external_id`] for an identity provider's organization, or
    /// `OrgId::from_uuid(Uuid::new_v4())` for your own.
    ///
    /// This is the one request path that acts without a membership: the database
    /// (`tenancy_enter_new_organization`) admits it only for an id that has never been used,
    /// and the unit may create that organization and its owner, nothing else.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`](crate::ErrorKind) if the id (even of a deleted organization) or
    /// the slug is taken.
    pub async fn create_organization(
        &self,
        org: OrgId,
        name: &str,
        slug: Option<&str>,
        owner: &UserId,
    ) -> Result<OrgContext> {
        let mut tx = self
            .units
            .start(
                Access::ReadWrite,
                Entry::NewOrganization { org, user: owner },
            )
            .await?;
        sqlx::query("INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)")
            .bind(org)
            .bind(name)
            .bind(slug)
            .execute(&mut *tx)
            .await?;
        insert_member(&mut tx, org, owner, Role::Owner).await?;
        tx.commit().await?;
        Ok(OrgContext::from_verified_session(
            org,
            owner.clone(),
            Role::Owner,
        ))
    }

    /// Adds `user` to `ctx`'s organization with `role`. Needs an admin, and an owner to add an
    /// owner ([`Error::InsufficientRole`] otherwise). The policies on `organization_members`
    /// enforce the same rule in the database.
    ///
    /// # Errors
    /// [`Error::NotAMember`] / [`Error::InsufficientRole`] when the database does not admit
    /// `ctx` with admin rights (owner rights to add an owner); a database error (a refused
    /// write, or `user` already a member: [`ErrorKind::Conflict`](crate::ErrorKind::Conflict)).
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
    /// Like every unit, it is admitted by the database in the `BEGIN` round trip:
    ///
    /// # Errors
    /// [`Error::NotAMember`] when `ctx`'s user is not (or no longer) a member of `ctx`'s
    /// organization, or the organization is deleted; [`Error::InsufficientRole`] when `ctx`
    /// claims a higher role than the membership holds (the unit acts with `ctx`'s role, never
    /// more).
    pub async fn begin(&self, ctx: &OrgContext) -> Result<TenantTransaction> {
        self.units
            .start(Access::ReadWrite, Entry::for_context(ctx))
            .await
    }

    /// Starts a `READ ONLY` unit of work with `ctx` set. Drop it when done (see
    /// [`TenantPool::with_rls_read`]).
    ///
    /// # Errors
    /// As [`TenantPool::begin`].
    pub async fn begin_read(&self, ctx: &OrgContext) -> Result<TenantTransaction> {
        self.units
            .start(Access::ReadOnly, Entry::for_context(ctx))
            .await
    }

    /// The organizations `user` belongs to, for an organization switcher, read before any
    /// organization is chosen: a `READ ONLY` unit with only `app.current_user_id` set, which
    /// the `own_memberships` / `own_organizations` policies allow to read the user's own
    /// memberships and nothing else.
    ///
    /// # Errors
    /// A database error.
    pub async fn memberships(&self, user: &UserId) -> Result<Vec<Membership>> {
        let mut tx = self
            .units
            .start(Access::ReadOnly, Entry::User { user })
            .await?;
        type Row = (OrgId, String, Option<String>, Option<String>, Role);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT o.id, o.name, o.slug, o.external_id, m.role FROM organization_members m \
             JOIN organizations o ON o.id = m.organization_id \
             WHERE m.user_id = $1 AND o.deleted_at IS NULL ORDER BY o.name, o.id",
        )
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(org_id, name, slug, external_id, role)| Membership {
                org_id,
                name,
                slug,
                external_id,
                role,
            })
            .collect())
    }
}

/// How many connections a unit tries when the database reports a session that is not clean
/// (each such connection is closed).
const DIRTY_SESSION_RETRIES: usize = 3;

impl Units {
    /// Reads what the BEGIN batch needs, after checking the role is subject to RLS.
    pub(crate) async fn inspect(pool: PgPool) -> Result<Units> {
        // One simple-protocol message, like every statement tenancy runs outside a unit: a
        // transaction-pooling proxy (PgBouncer) may hand the next message of a session to
        // another server connection, where an extended-protocol statement prepared by the
        // previous one does not exist.
        let row = sqlx::raw_sql(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, \
                    (SELECT n.nspname::text FROM pg_catalog.pg_proc p \
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                      WHERE p.proname = 'tenancy_enter' \
                      ORDER BY pg_catalog.pg_function_is_visible(p.oid) DESC, n.nspname LIMIT 1), \
                    pg_catalog.current_setting('search_path') \
               FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&pool)
        .await?;
        let role: String = sqlx::Row::try_get(&row, 0)?;
        let superuser: bool = sqlx::Row::try_get(&row, 1)?;
        let bypass: bool = sqlx::Row::try_get(&row, 2)?;
        let schema: Option<String> = sqlx::Row::try_get(&row, 3)?;
        let search_path: String = sqlx::Row::try_get(&row, 4)?;
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
        let schema = schema.ok_or(Error::MissingSchema)?;
        Ok(Units {
            pool,
            schema_prefix: Arc::from(format!("{}.", quote_ident(&schema))),
            search_path_literal: Arc::from(
                sql_literal(&search_path).ok_or(Error::UnsupportedSearchPath)?,
            ),
            signer: None,
        })
    }

    /// Whether the database is in hardened mode.
    async fn hardened_mode(&self) -> Result<bool> {
        // SAFETY (SQL): the prefix is a quoted identifier read from the catalog.
        let sql = format!("SELECT {}tenancy_hardened_mode()", self.schema_prefix);
        let row = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        Ok(sqlx::Row::try_get(&row, 0)?)
    }

    pub(crate) async fn start(
        &self,
        access: Access,
        entry: Entry<'_>,
    ) -> Result<TenantTransaction> {
        let sql = self.begin_sql(access, &entry);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.pool.acquire().await?;
            let mut tx = TenantTransaction {
                conn,
                state: State::Beginning,
                org: entry.org(),
            };
            // SAFETY (SQL): `sql` is built by `begin_sql` from validated values only.
            match Tm::begin(
                &mut tx.conn,
                Some(AssertSqlSafe(sql.clone()).into_sql_str()),
            )
            .await
            {
                Ok(()) => {
                    tx.state = State::Open;
                    return Ok(tx);
                }
                Err(error) => {
                    let dirty = matches!(&error, sqlx::Error::Database(db)
                        if db.code().as_deref() == Some(sqlstate::DIRTY_SESSION));
                    // A server error inside the BEGIN batch leaves an aborted transaction that
                    // sqlx does not count (its depth is still 0). Roll it back here; if that
                    // fails the state stays `Beginning` and the connection is closed, never
                    // reused. A session the database found unclean is closed too.
                    if matches!(error, sqlx::Error::Database(_))
                        && !dirty
                        && tx.conn.execute("ROLLBACK").await.is_ok()
                    {
                        tx.state = State::Finished;
                    }
                    if dirty && attempt < DIRTY_SESSION_RETRIES {
                        continue;
                    }
                    return Err(begin_error(error, entry.required()));
                }
            }
        }
    }

    /// The one-round-trip BEGIN batch: `BEGIN` and one call of a `tenancy_enter*` function,
    /// which checks the session and the membership and sets the context transaction-locally.
    /// Every interpolated value is validated by its type: `OrgId` prints a canonical uuid,
    /// `UserId` admits no quote or backslash, `Role` is an enum; the schema is a quoted
    /// identifier and the search path a checked literal, both read from the server.
    fn begin_sql(&self, access: Access, entry: &Entry<'_>) -> String {
        let begin = match access {
            Access::ReadWrite => "BEGIN",
            Access::ReadOnly => "BEGIN READ ONLY",
        };
        let schema = &self.schema_prefix;
        let path = format!(
            "pg_catalog.current_setting('search_path'), {}",
            self.search_path_literal
        );
        if let (Some(signer), Some((kind, org, user, required, act))) =
            (&self.signer, entry.signed_parts())
        {
            let expiry = signer.expiry();
            let signature = signer.key.sign(&format!(
                "enter|{kind}|{}|{}|{}|{act}|{expiry}",
                org.map(|o| o.to_string()).unwrap_or_default(),
                user.as_str(),
                required.map(Role::as_str).unwrap_or_default(),
            ));
            let org = org.map_or_else(|| "NULL".to_owned(), |o| format!("'{o}'"));
            let required = required.map_or_else(|| "NULL".to_owned(), |r| format!("'{r}'"));
            return format!(
                "{begin}; CALL {schema}tenancy_enter_signed('{kind}', {org}, '{}', {required}, \
                 {act}, {path}, {expiry}, '{signature}')",
                user.as_str()
            );
        }
        let call = match entry {
            Entry::Member {
                org,
                user,
                role,
                act_as_claimed,
            } => format!(
                "tenancy_enter('{org}', '{user}', '{role}', {act_as_claimed}, {path})",
                user = user.as_str(),
                role = role.as_str(),
            ),
            Entry::User { user } => {
                format!("tenancy_enter_user('{}', {path})", user.as_str())
            }
            Entry::NewOrganization { org, user } => format!(
                "tenancy_enter_new_organization('{org}', '{}', {path})",
                user.as_str()
            ),
            Entry::Service { org } => match org {
                Some(org) => format!("tenancy_enter_service('{org}', {path})"),
                None => format!("tenancy_enter_service(NULL, {path})"),
            },
        };
        format!("{begin}; CALL {schema}{call}")
    }
}

/// Who a unit acts for, as the database is asked to admit it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// A member of `org` with at least `role`; the unit acts as `role` when `act_as_claimed`
    /// (an [`OrgContext`]'s role), else as the membership's role.
    Member {
        org: OrgId,
        user: &'a UserId,
        role: Role,
        act_as_claimed: bool,
    },
    /// A user before any organization is chosen (the switcher).
    User { user: &'a UserId },
    /// A user creating a new organization.
    NewOrganization { org: OrgId, user: &'a UserId },
    /// A service unit (role `tenancy_service`), in one organization or in none.
    Service { org: Option<OrgId> },
}

impl<'a> Entry<'a> {
    fn for_context(ctx: &'a OrgContext) -> Self {
        Entry::Member {
            org: ctx.org_id(),
            user: ctx.user_id(),
            role: ctx.role(),
            act_as_claimed: true,
        }
    }

    fn org(&self) -> Option<OrgId> {
        match self {
            Entry::Member { org, .. } | Entry::NewOrganization { org, .. } => Some(*org),
            Entry::User { .. } => None,
            Entry::Service { org } => *org,
        }
    }

    /// For a signed entry: the kind, organization, user, required role and whether the unit
    /// acts as it. `None` for service units (sealed by their database role instead).
    #[allow(clippy::type_complexity)]
    fn signed_parts(
        &self,
    ) -> Option<(&'static str, Option<OrgId>, &'a UserId, Option<Role>, bool)> {
        match *self {
            Entry::Member {
                org,
                user,
                role,
                act_as_claimed,
            } => Some(("member", Some(org), user, Some(role), act_as_claimed)),
            Entry::User { user } => Some(("user", None, user, None, false)),
            Entry::NewOrganization { org, user } => Some(("new", Some(org), user, None, false)),
            Entry::Service { .. } => None,
        }
    }

    fn required(&self) -> Option<Role> {
        match self {
            Entry::Member { role, .. } => Some(*role),
            _ => None,
        }
    }
}

/// `'text'` for printable ASCII without quote or backslash (so that no server setting can
/// reinterpret it); `None` otherwise.
fn sql_literal(text: &str) -> Option<String> {
    text.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'\'' && b != b'\\')
        .then(|| format!("'{text}'"))
}

async fn insert_member(tx: &mut PgConnection, org: OrgId, user: &UserId, role: Role) -> Result<()> {
    sqlx::query(
        "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)",
    )
    .bind(org)
    .bind(user)
    .bind(role)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    ReadOnly,
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
/// Dropping it rolls back, which is how a read unit ends; a write unit must call
/// [`commit`](Self::commit).
///
/// Dereferences to [`PgConnection`], so `&mut *tx` is an executor. Ends with
/// [`commit`](Self::commit) or [`rollback`](Self::rollback); dropped, it rolls back.
#[must_use = "dropping a unit of work rolls it back: call commit() to keep its writes"]
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
    ///
    /// # Errors
    /// A database error; the transaction is then rolled back by the server.
    pub async fn commit(mut self) -> Result<()> {
        Tm::commit(&mut self.conn).await?;
        self.state = State::Finished;
        Ok(())
    }

    /// Rolls back now, waiting for the server (dropping does the same off your path).
    ///
    /// # Errors
    /// A database error; the connection is then closed rather than reused.
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

    fn units() -> Units {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Units {
            pool,
            schema_prefix: Arc::from("\"public\"."),
            search_path_literal: Arc::from(sql_literal("\"$user\", public").unwrap()),
            signer: None,
        }
    }

    #[tokio::test]
    async fn begin_batch_carries_only_validated_literals() {
        let units = units();
        let org = OrgId::from_external_id("org_a");
        let user = UserId::new("user_1").unwrap();
        let ctx = OrgContext::from_verified_session(org, user.clone(), Role::Admin);
        let path = "pg_catalog.current_setting('search_path'), '\"$user\", public'";
        assert_eq!(
            units.begin_sql(Access::ReadOnly, &Entry::for_context(&ctx)),
            format!(
                "BEGIN READ ONLY; CALL \"public\".tenancy_enter('{org}', 'user_1', 'admin', true, {path})"
            )
        );
        let member = Entry::Member {
            org,
            user: &user,
            role: Role::Owner,
            act_as_claimed: false,
        };
        assert_eq!(
            units.begin_sql(Access::ReadWrite, &member),
            format!(
                "BEGIN; CALL \"public\".tenancy_enter('{org}', 'user_1', 'owner', false, {path})"
            )
        );
        let service = units.begin_sql(Access::ReadWrite, &Entry::Service { org: None });
        assert_eq!(
            service,
            format!("BEGIN; CALL \"public\".tenancy_enter_service(NULL, {path})")
        );
        // No session-level SET anywhere: the context is set by the function, transaction-locally.
        for sql in [
            units.begin_sql(Access::ReadWrite, &Entry::User { user: &user }),
            units.begin_sql(
                Access::ReadWrite,
                &Entry::NewOrganization { org, user: &user },
            ),
        ] {
            assert!(!sql.contains("SET "), "{sql}");
            assert_eq!(sql.matches(';').count(), 1, "{sql}");
        }
    }

    #[test]
    fn identifiers_and_literals_from_the_server_are_quoted_or_refused() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(sql_literal("a, b").as_deref(), Some("'a, b'"));
        for bad in ["o'hara", "back\\slash", "tab\t", "é"] {
            assert_eq!(sql_literal(bad), None, "{bad:?}");
        }
    }
}
