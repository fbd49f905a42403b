//! The crate's error type and its HTTP meaning.

use crate::role::Role;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `pg-tenancy`'s core.
///
/// Web adapters map an error to a response with [`Error::kind`] and
/// [`ErrorKind::http_status`]; the crate itself depends on no HTTP crate. `Display` may carry
/// database detail meant for logs: show clients the kind, never the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No authenticated user: the session layer found no verified session. The core never
    /// returns it (it takes verified identities only); it is here so that your session layer,
    /// and the web adapters, speak the same error type and map to 401 through
    /// [`ErrorKind::Unauthenticated`].
    #[error("no authenticated session")]
    Unauthenticated,

    /// The user is not a member of the organization (or the organization does not exist,
    /// which is deliberately indistinguishable).
    #[error("not a member of this organization")]
    NotAMember,

    /// The member's role is below the role an action requires.
    #[error("role {actual} is below the required role {required}")]
    InsufficientRole {
        /// The least role the action needs.
        required: Role,
        /// The member's role.
        actual: Role,
    },

    /// The context does not carry a permission an action requires
    /// ([`OrgContext::require_permission`](crate::OrgContext::require_permission)). The
    /// permission's key is no secret: the answer may name it.
    #[error("missing permission {permission}")]
    MissingPermission {
        /// The permission's key (`org:<feature>:<name>`).
        permission: String,
    },

    /// A user id that `pg-tenancy` cannot carry safely (empty, too long, or with characters
    /// outside printable ASCII, a quote or a backslash).
    #[error("invalid user id")]
    InvalidUserId,

    /// A role name that is not `owner`, `admin` or `member`.
    #[error("invalid role {0:?}")]
    InvalidRole(String),

    /// The connecting database role bypasses Row-Level Security, so every policy would silently
    /// do nothing. Connect as a role without `SUPERUSER` and `BYPASSRLS`.
    #[error("database role {role:?} bypasses row-level security ({reason})")]
    UnsafeDatabaseRole {
        /// The role name reported by `current_user`.
        role: String,
        /// `"superuser"` or `"bypassrls"`.
        reason: &'static str,
    },

    /// The connected database has no tenancy functions: apply the migrations
    /// ([`migrations`](crate::migrations)) first.
    #[error("the database has no tenancy schema: apply pg-tenancy's migrations")]
    MissingSchema,

    /// The database's tenancy functions are not the ones this version of the crate calls
    /// (migrations of another version): apply this version's
    /// [`migrations`](crate::migrations).
    #[error("pg-tenancy's migrations in the database do not match this crate: {reason}")]
    MigrationsOutOfDate {
        /// What differs.
        reason: &'static str,
    },

    /// The session's settings that every unit checks (its `search_path` above all) hold a
    /// quote, a backslash or a non-printable character, which the per-unit session check
    /// cannot carry safely; or its default isolation level is unknown.
    #[error("unsupported search_path for pg-tenancy's session check")]
    UnsupportedSearchPath,

    /// The connecting role has role-level settings (`ALTER ROLE ... SET`) that change how units
    /// run: SQL in any unit can set these for its own role, and every new connection would
    /// inherit them, so the pool refuses to start while they are there. Set such values in
    /// the pool's connect options, or on the database, instead.
    #[error(
        "database role {role:?} has role-level settings that change how units run ({settings}): \
         remove them with ALTER ROLE ... RESET, and set them in the connect options instead"
    )]
    UnsafeRoleSettings {
        /// The role name reported by `current_user`.
        role: String,
        /// The settings' names, comma-separated.
        settings: String,
    },

    /// The connecting role is not a member of `tenancy_service`, so it cannot run service
    /// units (see [`ServicePool`](crate::ServicePool)).
    #[error("database role {role:?} is not a member of tenancy_service")]
    NotAServiceRole {
        /// The role name reported by `current_user`.
        role: String,
    },

    /// A hardened-mode context key shorter than
    /// [`ContextKey::MIN_LEN`](crate::ContextKey::MIN_LEN) bytes.
    #[error("a context key needs at least 32 bytes")]
    InvalidContextKey,

    /// The database is in hardened mode: serve it with [`TenantPool::hardened`](crate::TenantPool::hardened).
    #[error("the database is in hardened mode: connect with TenantPool::hardened")]
    HardenedModeRequired,

    /// [`TenantPool::hardened`](crate::TenantPool::hardened) on a database whose owner has not
    /// run `tenancy_enable_hardened_mode`.
    #[error("hardened mode is not enabled in the database")]
    HardenedModeOff,

    /// Hardened mode needs `track_activities = off` for the connecting role, or other sessions
    /// of the same role could read each unit's signed context in `pg_stat_activity`
    /// (`ALTER ROLE <app> SET track_activities = off`, as a superuser).
    #[error(
        "track_activities is on for role {role:?}: signed contexts would show in pg_stat_activity"
    )]
    ContextVisible {
        /// The role name reported by `current_user`.
        role: String,
    },

    /// Hardened mode needs `pg_stat_statements` (when the server loads it) to keep the
    /// connecting role's utility statements out of its view: with
    /// `pg_stat_statements.track_utility` on (its default), PostgreSQL 15 records each unit's
    /// `CALL tenancy_enter_signed(...)` with its signature, and SQL injected into another unit of
    /// the same role could read it there and replay it within its lifetime. Turn it off for the
    /// role (`ALTER ROLE <app> SET pg_stat_statements.track_utility = off`, as a superuser), or
    /// revoke the role's `EXECUTE` on `pg_stat_statements(boolean)` in this database.
    #[error(
        "pg_stat_statements records the utility statements of role {role:?}: its signed entries would be readable there (ALTER ROLE ... SET pg_stat_statements.track_utility = off, as a superuser)"
    )]
    StatementsVisible {
        /// The role name reported by `current_user`.
        role: String,
    },

    /// The role a hardened pool connects with can read hardened mode's key
    /// (`tenancy_context_key`): it owns the table, bypasses row security, or row security is
    /// off on it. SQL injected into a unit could then forge contexts.
    #[error("database role {role:?} can read hardened mode's key (tenancy_context_key)")]
    ContextKeyReadable {
        /// The role.
        role: String,
    },

    /// The start-up audit ([`TenantPool::audited`](crate::TenantPool::audited)) found errors in
    /// the schema or the connecting role; the report lists them with their fixes.
    #[error("the pg-tenancy audit found errors:\n{0}")]
    AuditFailed(Box<crate::audit::Report>),

    /// A database error. [`Error::kind`] classifies it (RLS violation, unique violation, no
    /// row, ...).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What an [`Error`] means to a client, independent of any HTTP crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is malformed (HTTP 400), including values the database cannot hold
    /// (SQLSTATE class 22: a NUL byte in text, a value too long for its column).
    BadRequest,
    /// No authenticated user (HTTP 401).
    Unauthenticated,
    /// Authenticated, but not allowed: not a member, role too low, a permission missing, or a
    /// write the policies refuse (HTTP 403). A missing `GRANT` is not this but
    /// [`ErrorKind::Internal`]: the operator's mistake, not the client's.
    Forbidden,
    /// No such row for this organization (HTTP 404).
    NotFound,
    /// A uniqueness or reference conflict (HTTP 409).
    Conflict,
    /// Anything else: configuration or database trouble (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status code an adapter should answer with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Internal => 500,
        }
    }
}

/// SQLSTATEs the core maps to kinds.
pub(crate) mod sqlstate {
    /// `insufficient_privilege`: also what a row-level security `WITH CHECK` failure raises.
    pub(crate) const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub(crate) const UNIQUE_VIOLATION: &str = "23505";
    pub(crate) const FOREIGN_KEY_VIOLATION: &str = "23503";
    /// Class 22, data exceptions (`22021` a NUL byte in text, `22001` a value too long, ...).
    pub(crate) const DATA_EXCEPTION_CLASS: &str = "22";
    /// Raised by `tenancy_enter` for a non-member, a removed member or a deleted organization.
    pub(crate) const NOT_A_MEMBER: &str = "TNC01";
    /// Raised by `tenancy_enter` for a role below the required (or claimed) one.
    pub(crate) const ROLE_TOO_LOW: &str = "TNC02";
    /// Raised when a change would leave a live organization without an owner.
    pub(crate) const LAST_OWNER: &str = "TNC03";
    /// Raised by `tenancy_enter_new_organization` for an id in use (or once used).
    pub(crate) const ORGANIZATION_EXISTS: &str = "TNC04";
    /// Raised when a session carries state a unit must not find (the pool closes it).
    pub(crate) const DIRTY_SESSION: &str = "TNC05";
    /// Raised when a request unit writes a column that only the identity provider's sync
    /// writes (`external_*`, `created_by`).
    pub(crate) const PROVIDER_COLUMN: &str = "TNC11";
}

impl Error {
    /// Classifies the error for a response.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unauthenticated => ErrorKind::Unauthenticated,
            Error::NotAMember
            | Error::InsufficientRole { .. }
            | Error::MissingPermission { .. } => ErrorKind::Forbidden,
            Error::InvalidUserId | Error::InvalidRole(_) => ErrorKind::BadRequest,
            Error::UnsafeDatabaseRole { .. }
            | Error::Migrate(_)
            | Error::MissingSchema
            | Error::MigrationsOutOfDate { .. }
            | Error::UnsupportedSearchPath
            | Error::UnsafeRoleSettings { .. }
            | Error::NotAServiceRole { .. }
            | Error::InvalidContextKey
            | Error::HardenedModeRequired
            | Error::HardenedModeOff
            | Error::ContextVisible { .. }
            | Error::ContextKeyReadable { .. }
            | Error::StatementsVisible { .. }
            | Error::AuditFailed(_) => ErrorKind::Internal,
            Error::Database(e) => classify(e),
        }
    }

    /// Whether a database error is a row-level security refusal (`WITH CHECK` failed, or a
    /// write aimed outside the current organization).
    pub fn is_rls_violation(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => is_rls_check(db.as_ref()),
            _ => false,
        }
    }
}

/// A row-level security `WITH CHECK` failure. It shares SQLSTATE 42501 with a missing `GRANT`;
/// the server's `routine` field tells them apart (`ExecWithCheckOptions` against
/// `aclcheck_error`), where the message text would break on a localized server.
fn is_rls_check(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().as_deref() == Some(sqlstate::INSUFFICIENT_PRIVILEGE)
        && db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|e| e.routine())
            == Some("ExecWithCheckOptions")
}

fn classify(error: &sqlx::Error) -> ErrorKind {
    match error {
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        // A write the policies refuse is the client's; a missing GRANT (also 42501) is the
        // operator's mistake: 500.
        sqlx::Error::Database(db) if is_rls_check(db.as_ref()) => ErrorKind::Forbidden,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(sqlstate::NOT_A_MEMBER)
            | Some(sqlstate::ROLE_TOO_LOW)
            | Some(sqlstate::PROVIDER_COLUMN) => ErrorKind::Forbidden,
            Some(sqlstate::UNIQUE_VIOLATION)
            | Some(sqlstate::FOREIGN_KEY_VIOLATION)
            | Some(sqlstate::LAST_OWNER)
            | Some(sqlstate::ORGANIZATION_EXISTS) => ErrorKind::Conflict,
            // A data exception: a value the column cannot hold (a NUL byte in text, a string
            // too long for its type, a malformed literal). The request's data, not the server.
            Some(code) if code.starts_with(sqlstate::DATA_EXCEPTION_CLASS) => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}
