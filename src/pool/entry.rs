//! How a unit of work is entered: [`Units`] (what the pools share), [`Entry`] (who the unit acts
//! for), the one-message `BEGIN` batch that asks the database to admit it, the retries on an
//! unclean session, and the mapping of the database's refusals to [`Error`]s.

use std::sync::Arc;

use sqlx::postgres::PgDatabaseError;
use sqlx::{AssertSqlSafe, PgPool};

use super::transaction::{TenantTransaction, is_dirty_session};
use crate::context::OrgContext;
use crate::error::{Error, Result, sqlstate};
use crate::hardened::Signer;
use crate::ids::{OrgId, UserId};
use crate::role::Role;
use crate::sql_ident::quote_ident;

/// What [`TenantPool`](crate::TenantPool) and [`ServicePool`](crate::ServicePool) share: the
/// pool, and what the BEGIN batch needs to name pg-tenancy's procedures and check the session.
#[derive(Clone)]
pub(crate) struct Units {
    pub(crate) pool: PgPool,
    /// The schema holding pg-tenancy's functions, quoted (`"public".`), or empty when unknown
    /// ([`TenantPool::dangerously_skip_role_check`](crate::TenantPool::dangerously_skip_role_check)).
    pub(super) schema_prefix: Arc<str>,
    /// The session settings every unit must find ([`SESSION_SETTINGS`], read when
    /// the pool starts), as a validated SQL literal (`NULL` when unknown, which the database's
    /// session check never matches).
    session_literal: Arc<str>,
    /// The isolation level every `BEGIN` names (the session's default when the pool started),
    /// so that a unit that changed `default_transaction_isolation` or
    /// `default_transaction_read_only` on its session changes no other unit.
    isolation: &'static str,
    /// Hardened mode: signs each request unit's context.
    signer: Option<Signer>,
}

/// Whether a unit may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `BEGIN ISOLATION LEVEL ..., READ WRITE`.
    ReadWrite,
    /// `BEGIN ISOLATION LEVEL ..., READ ONLY`.
    ReadOnly,
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

/// What a signed entry (hardened mode) signs and sends.
struct Signed<'a> {
    kind: &'static str,
    org: Option<OrgId>,
    user: &'a UserId,
    required: Option<Role>,
    act_as_claimed: bool,
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
        let row = sqlx::raw_sql(AssertSqlSafe(format!(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, \
                    (SELECT n.nspname::text FROM pg_catalog.pg_proc p \
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                      WHERE p.proname = 'tenancy_enter' \
                      ORDER BY pg_catalog.pg_function_is_visible(p.oid) DESC, n.nspname LIMIT 1), \
                    pg_catalog.current_setting('default_transaction_isolation'), \
                    (SELECT pg_catalog.string_agg(pg_catalog.split_part(c, '=', 1), ', ' ORDER BY c) \
                       FROM pg_catalog.pg_db_role_setting d, pg_catalog.unnest(d.setconfig) c \
                      WHERE d.setrole = r.oid \
                        AND pg_catalog.lower(pg_catalog.split_part(c, '=', 1)) IN ({GUARDED_ROLE_SETTINGS})) \
               FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
        )))
        .fetch_one(&pool)
        .await?;
        let role: String = sqlx::Row::try_get(&row, 0)?;
        let superuser: bool = sqlx::Row::try_get(&row, 1)?;
        let bypass: bool = sqlx::Row::try_get(&row, 2)?;
        let schema: Option<String> = sqlx::Row::try_get(&row, 3)?;
        let isolation: String = sqlx::Row::try_get(&row, 4)?;
        let role_settings: Option<String> = sqlx::Row::try_get(&row, 5)?;
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
        if let Some(settings) = role_settings {
            return Err(Error::UnsafeRoleSettings { role, settings });
        }
        let schema = schema.ok_or(Error::MissingSchema)?;
        let schema_prefix = format!("{}.", quote_ident(&schema));
        // The settings as the member entry reads them and as the other entries are sent them
        // (a second message, simple protocol). Different texts mean migrations of another
        // version than this crate's: every unit would be refused as unclean.
        // SAFETY (SQL): the prefix is a quoted identifier read from the catalog.
        let row = sqlx::raw_sql(AssertSqlSafe(format!(
            "SELECT {schema_prefix}tenancy_session_settings(), {SESSION_SETTINGS}"
        )))
        .fetch_one(&pool)
        .await?;
        let settings: String = sqlx::Row::try_get(&row, 0)?;
        let sent: String = sqlx::Row::try_get(&row, 1)?;
        if settings != sent {
            return Err(Error::MigrationsOutOfDate {
                reason: "tenancy_session_settings() differs from the settings this crate checks",
            });
        }
        Ok(Units {
            pool,
            schema_prefix: Arc::from(schema_prefix),
            session_literal: Arc::from(sql_literal(&settings).ok_or(Error::UnsupportedSearchPath)?),
            isolation: isolation_level(&isolation)?,
            signer: None,
        })
    }

    /// Units built without reading the database (for
    /// [`TenantPool::dangerously_skip_role_check`](crate::TenantPool::dangerously_skip_role_check)):
    /// they name pg-tenancy's procedures unqualified and expect a `NULL` `search_path`, which
    /// no session has, so the database refuses their every unit as unclean (`TNC05`).
    pub(super) fn unchecked(pool: PgPool) -> Units {
        Units {
            pool,
            schema_prefix: Arc::from(""),
            session_literal: Arc::from("NULL"),
            isolation: "READ COMMITTED",
            signer: None,
        }
    }

    /// Signs every request unit's entry from now on (hardened mode).
    pub(super) fn set_context_ttl(&mut self, ttl: std::time::Duration) {
        if let Some(signer) = &mut self.signer {
            signer.ttl = ttl;
        }
    }

    /// The signer of a hardened pool.
    pub(super) fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub(super) fn sign_with(&mut self, signer: Signer) {
        self.signer = Some(signer);
    }

    /// Whether the database is in hardened mode.
    pub(super) async fn hardened_mode(&self) -> Result<bool> {
        // SAFETY (SQL): the prefix is a quoted identifier read from the catalog.
        let sql = format!("SELECT {}tenancy_hardened_mode()", self.schema_prefix);
        let row = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        Ok(sqlx::Row::try_get(&row, 0)?)
    }

    /// Enters a unit: sends the BEGIN batch on a pooled connection, trying another connection
    /// (up to [`DIRTY_SESSION_RETRIES`] in all) when the database finds the session unclean.
    ///
    /// # Errors
    /// The database's refusal as [`begin_error`] maps it.
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
            match TenantTransaction::begin(conn, entry.org(), sql.clone()).await {
                Ok(tx) => return Ok(tx),
                // That connection is closed; another may be clean.
                Err(error) if is_dirty_session(&error) && attempt < DIRTY_SESSION_RETRIES => {}
                Err(error) => return Err(begin_error(error, entry.required())),
            }
        }
    }

    /// The one-round-trip BEGIN batch: `BEGIN` (or `BEGIN READ ONLY`) and one `CALL` of a
    /// `tenancy_enter*` procedure, which checks the session (role, `search_path`, temporary
    /// objects) and the membership, and sets the context with `set_config(..., true)`.
    ///
    /// Every interpolated value is validated by its type: `OrgId` prints a canonical uuid,
    /// `UserId` admits no quote or backslash, `Role` is an enum; the schema is a quoted
    /// identifier and the search path a checked literal, both read from the server; the
    /// signature is hex and the expiry a number.
    pub(super) fn begin_sql(&self, access: Access, entry: &Entry<'_>) -> String {
        let mode = match access {
            Access::ReadWrite => "READ WRITE",
            Access::ReadOnly => "READ ONLY",
        };
        let begin = format!("BEGIN ISOLATION LEVEL {}, {mode}", self.isolation);
        let call = match (&self.signer, entry.signed()) {
            (Some(signer), Some(signed)) => signed.call(signer, &self.session_literal),
            _ => entry.call(&self.session_literal),
        };
        format!("{begin}; CALL {}{call}", self.schema_prefix)
    }
}

impl<'a> Entry<'a> {
    /// A unit for `ctx`: acting with its role, or, for a context from a session token
    /// ([`OrgContext::role_is_least`]), with the membership's role, at least `ctx`'s.
    pub(super) fn for_context(ctx: &'a OrgContext) -> Self {
        Entry::Member {
            org: ctx.org_id(),
            user: ctx.user_id(),
            role: ctx.role(),
            act_as_claimed: !ctx.role_is_least(),
        }
    }

    fn org(&self) -> Option<OrgId> {
        match self {
            Entry::Member { org, .. } | Entry::NewOrganization { org, .. } => Some(*org),
            Entry::User { .. } => None,
            Entry::Service { org } => *org,
        }
    }

    fn required(&self) -> Option<Role> {
        match self {
            Entry::Member { role, .. } => Some(*role),
            _ => None,
        }
    }

    /// The unsigned procedure call, unqualified. The member entry reads the session's settings
    /// itself and is sent the `expected` literal; the others are sent the settings expression
    /// and the literal.
    fn call(&self, expected: &str) -> String {
        let path = || format!("{SESSION_SETTINGS}, {expected}");
        match *self {
            Entry::Member {
                org,
                user,
                role,
                act_as_claimed,
            } => format!(
                "tenancy_enter('{org}', '{user}', '{role}', {act_as_claimed}, {expected})",
                user = user.as_str(),
                role = role.as_str(),
            ),
            Entry::User { user } => {
                format!("tenancy_enter_user('{}', {})", user.as_str(), path())
            }
            Entry::NewOrganization { org, user } => format!(
                "tenancy_enter_new_organization('{org}', '{}', {})",
                user.as_str(),
                path()
            ),
            Entry::Service { org: Some(org) } => {
                format!("tenancy_enter_service('{org}', {})", path())
            }
            Entry::Service { org: None } => format!("tenancy_enter_service(NULL, {})", path()),
        }
    }

    /// What a signed entry carries. `None` for service units (sealed by their database role
    /// instead).
    fn signed(&self) -> Option<Signed<'a>> {
        let (kind, org, user, required, act_as_claimed) = match *self {
            Entry::Member {
                org,
                user,
                role,
                act_as_claimed,
            } => ("member", Some(org), user, Some(role), act_as_claimed),
            Entry::User { user } => ("user", None, user, None, false),
            Entry::NewOrganization { org, user } => ("new", Some(org), user, None, false),
            Entry::Service { .. } => return None,
        };
        Some(Signed {
            kind,
            org,
            user,
            required,
            act_as_claimed,
        })
    }
}

impl Signed<'_> {
    /// The `tenancy_enter_signed` call, unqualified: the entry, the `expected` session
    /// settings (the procedure reads the session's own), the expiry, and the signature over all
    /// but the settings.
    fn call(&self, signer: &Signer, expected: &str) -> String {
        let Signed {
            kind,
            org,
            user,
            required,
            act_as_claimed: act,
        } = self;
        let expiry = signer.expiry();
        let signature = signer.key.sign(&crate::hardened::encode(&[
            "enter",
            kind,
            &org.map(|o| o.to_string()).unwrap_or_default(),
            user.as_str(),
            required.map(Role::as_str).unwrap_or_default(),
            &act.to_string(),
            &expiry.to_string(),
        ]));
        let org = org.map_or_else(|| "NULL".to_owned(), |o| format!("'{o}'"));
        let required = required.map_or_else(|| "NULL".to_owned(), |r| format!("'{r}'"));
        format!(
            "tenancy_enter_signed('{kind}', {org}, '{}', {required}, {act}, {expected}, {expiry}, \
             '{signature}')",
            user.as_str()
        )
    }
}

/// The database's refusal of an entry as an [`Error`]: `TNC01` is [`Error::NotAMember`],
/// `TNC02` [`Error::InsufficientRole`] (the membership's role read from the error's detail),
/// anything else a database error.
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

/// The session-level settings that would change how another organization's unit runs if a unit
/// left them changed on its pooled connection (timeouts, `row_security`, `synchronous_commit`,
/// `exit_on_error`, how dates, times, intervals and bytes are written, `search_path`), as one
/// text every entry compares with the pool's (`TNC05`): the text of the
/// migrations' `tenancy_session_settings()` (which the member entry evaluates itself), sent as
/// an argument by the entries that pin their own `search_path` and so cannot read the
/// session's. An expression, not the function: a `CALL`'s arguments are planned on every call,
/// and inlining a SQL function there parses its body each time. [`Units::inspect`] refuses to
/// start when the two differ.
pub(super) const SESSION_SETTINGS: &str = "pg_catalog.concat_ws('|', \
     pg_catalog.current_setting('statement_timeout'), \
     pg_catalog.current_setting('lock_timeout'), \
     pg_catalog.current_setting('idle_in_transaction_session_timeout'), \
     pg_catalog.current_setting('idle_session_timeout'), \
     pg_catalog.current_setting('row_security'), \
     pg_catalog.current_setting('synchronous_commit'), \
     pg_catalog.current_setting('exit_on_error'), \
     pg_catalog.current_setting('TimeZone'), \
     pg_catalog.current_setting('DateStyle'), \
     pg_catalog.current_setting('IntervalStyle'), \
     pg_catalog.current_setting('bytea_output'), \
     pg_catalog.current_setting('standard_conforming_strings'), \
     pg_catalog.current_setting('array_nulls'), \
     pg_catalog.current_setting('extra_float_digits'), \
     pg_catalog.current_setting('transaction_timeout', true), \
     pg_catalog.current_setting('search_path'))";

/// Role-level settings (`ALTER ROLE ... SET`) that [`Units::inspect`] refuses: SQL running in
/// any unit can set them for its own role, and every new connection would then inherit them
/// (the timeouts and the others [`SESSION_SETTINGS`] lists, but for the formats: a role may
/// well set its `TimeZone` or `DateStyle`, and a format changed later only makes new
/// connections unclean, `TNC05`; the transaction defaults). Lower-case, as a SQL list.
const GUARDED_ROLE_SETTINGS: &str = "'statement_timeout', 'lock_timeout', \
     'idle_in_transaction_session_timeout', 'idle_session_timeout', 'row_security', \
     'synchronous_commit', 'standard_conforming_strings', 'array_nulls', 'extra_float_digits', \
     'transaction_timeout', 'search_path', \
     'default_transaction_read_only', \
     'default_transaction_isolation', 'default_transaction_deferrable'";

/// The SQL of an isolation level `default_transaction_isolation` reports.
fn isolation_level(setting: &str) -> Result<&'static str> {
    match setting {
        "read committed" => Ok("READ COMMITTED"),
        "repeatable read" => Ok("REPEATABLE READ"),
        "serializable" => Ok("SERIALIZABLE"),
        "read uncommitted" => Ok("READ UNCOMMITTED"),
        _ => Err(Error::UnsupportedSearchPath),
    }
}

/// `'text'` for printable ASCII without quote or backslash (so that no server setting can
/// reinterpret it); `None` otherwise.
fn sql_literal(text: &str) -> Option<String> {
    text.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'\'' && b != b'\\')
        .then(|| format!("'{text}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardened::ContextKey;

    const SETTINGS: &str = "0|0|0|0|on|on|off|UTC|ISO, MDY|postgres|hex|\"$user\", public";

    fn units(signer: Option<Signer>) -> Units {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Units {
            pool,
            schema_prefix: Arc::from("\"public\"."),
            session_literal: Arc::from(sql_literal(SETTINGS).unwrap()),
            isolation: "READ COMMITTED",
            signer,
        }
    }

    /// A batch as the server's lexer reads it: the text outside string literals, with each
    /// literal replaced by `$n` and each bare number by `#`, then the literals' values and the
    /// numbers. Double-quoted identifiers stay in the text; an unterminated literal fails.
    fn lex(sql: &str) -> (String, Vec<String>, Vec<u64>) {
        let (mut text, mut literals, mut numbers) = (String::new(), Vec::new(), Vec::new());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' | '"' => {
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some(q) if q == c && chars.peek() == Some(&c) => {
                                chars.next();
                                value.push(c);
                            }
                            Some(q) if q == c => break,
                            Some(other) => value.push(other),
                            None => panic!("unterminated {c} in {sql}"),
                        }
                    }
                    if c == '"' {
                        text.push_str(&format!("\"{}\"", value.replace('"', "\"\"")));
                    } else {
                        literals.push(value);
                        text.push_str(&format!("${}", literals.len()));
                    }
                }
                '0'..='9' if !text.ends_with(|p: char| p.is_alphanumeric() || p == '_') => {
                    let mut digits = c.to_string();
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        digits.push(d);
                    }
                    numbers.push(digits.parse().unwrap());
                    text.push('#');
                }
                _ => text.push(c),
            }
        }
        (text, literals, numbers)
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    /// Every entry kind, unsigned: the batch is exactly `BEGIN` (or `BEGIN READ ONLY`) and one
    /// `CALL` of the entry's procedure, and every value is a quoted literal equal to the
    /// value, even for user ids that look like SQL.
    #[tokio::test]
    async fn the_begin_batch_is_begin_and_one_call_with_values_only_as_literals() {
        let units = units(None);
        let org = OrgId::from_external_id("org_a");
        let o = org.to_string();
        for id in [
            "user_1",
            "x);SET/**/app.current_org_id=1;--",
            "$$;RESET/**/ALL;$$",
            "\"public\".tenancy_enter(",
            "a\";COMMIT;BEGIN;--",
        ] {
            let user = UserId::new(id).unwrap();
            let ctx = OrgContext::from_verified_session(org, user.clone(), Role::Admin);
            let member = Entry::Member {
                org,
                user: &user,
                role: Role::Owner,
                act_as_claimed: false,
            };
            let cases = [
                (
                    Access::ReadOnly,
                    Entry::for_context(&ctx),
                    "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY; CALL \"public\".tenancy_enter($1, $2, $3, true, \
                     $4)",
                    strings(&[&o, id, "admin", SETTINGS]),
                ),
                (
                    Access::ReadWrite,
                    member,
                    "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; CALL \"public\".tenancy_enter($1, $2, $3, false, \
                     $4)",
                    strings(&[&o, id, "owner", SETTINGS]),
                ),
                (
                    Access::ReadOnly,
                    Entry::User { user: &user },
                    "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY; CALL \"public\".tenancy_enter_user($1, \
                     SESSION, $2)",
                    strings(&[id, SETTINGS]),
                ),
                (
                    Access::ReadWrite,
                    Entry::NewOrganization { org, user: &user },
                    "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; CALL \"public\".tenancy_enter_new_organization($1, $2, \
                     SESSION, $3)",
                    strings(&[&o, id, SETTINGS]),
                ),
                (
                    Access::ReadWrite,
                    Entry::Service { org: Some(org) },
                    "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; CALL \"public\".tenancy_enter_service($1, \
                     SESSION, $2)",
                    strings(&[&o, SETTINGS]),
                ),
                (
                    Access::ReadWrite,
                    Entry::Service { org: None },
                    "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; CALL \"public\".tenancy_enter_service(NULL, \
                     SESSION, $1)",
                    strings(&[SETTINGS]),
                ),
            ];
            for (access, entry, text, literals) in cases {
                let sql = units.begin_sql(access, &entry);
                assert_eq!(
                    lex(&sql.replace(SESSION_SETTINGS, "SESSION")),
                    (text.to_owned(), literals, vec![]),
                    "{sql}"
                );
            }
        }
    }

    /// Hardened mode: the same shape through `tenancy_enter_signed`, with the expiry a bare
    /// number about a minute ahead and the signature a hex literal. Service units stay unsigned.
    #[tokio::test]
    async fn the_signed_begin_batch_is_begin_and_one_call_with_values_only_as_literals() {
        let units = units(Some(Signer {
            key: ContextKey::generate(),
            ttl: Signer::DEFAULT_TTL,
            clock_offset: 0,
            simulated_skew: 0,
        }));
        let org = OrgId::from_external_id("org_a");
        let o = org.to_string();
        let id = "x);SELECT/**/set_config('app.current_org_id',$$1$$,true);--";
        assert!(UserId::new(id).is_err(), "a quote cannot be in a user id");
        let id = "x);SELECT/**/set_config($$app.current_org_id$$,$$1$$,true);--";
        let user = UserId::new(id).unwrap();
        let member = Entry::Member {
            org,
            user: &user,
            role: Role::Member,
            act_as_claimed: true,
        };
        let call = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; CALL \"public\".tenancy_enter_signed";
        let cases = [
            (
                member,
                format!("{call}($1, $2, $3, $4, true, $5, #, $6)"),
                vec!["member", &o, id, "member", SETTINGS],
            ),
            (
                Entry::User { user: &user },
                format!("{call}($1, NULL, $2, NULL, false, $3, #, $4)"),
                vec!["user", id, SETTINGS],
            ),
            (
                Entry::NewOrganization { org, user: &user },
                format!("{call}($1, $2, $3, NULL, false, $4, #, $5)"),
                vec!["new", &o, id, SETTINGS],
            ),
        ];
        let now = crate::util::unix_now().cast_unsigned();
        for (entry, text, values) in cases {
            let sql = units.begin_sql(Access::ReadWrite, &entry);
            let (found, mut literals, numbers) = lex(&sql.replace(SESSION_SETTINGS, "SESSION"));
            assert_eq!(found, text, "{sql}");
            let signature = literals.pop().unwrap();
            assert_eq!(literals, strings(&values), "{sql}");
            assert!(
                signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sql}"
            );
            assert!(
                matches!(numbers[..], [expiry] if (now + 59..=now + 61).contains(&expiry)),
                "{sql}"
            );
        }
        let service = units.begin_sql(Access::ReadWrite, &Entry::Service { org: None });
        assert_eq!(
            lex(&service.replace(SESSION_SETTINGS, "SESSION")).0,
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; CALL \"public\".tenancy_enter_service(NULL, SESSION, $1)"
        );
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
