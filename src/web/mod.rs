//! The request layer the web adapters share (feature `web`; `axum` and `actix-web` turn it on).
//!
//! A request goes through three steps, the same in every framework:
//!
//! 1. **Authentication.** The session token is read from `Authorization: Bearer <token>` or,
//!    failing that, the `__session` cookie ([`token_from_request`]), and verified by the
//!    [`SessionVerifier`] in [`Tenancy`] (with `clerk-jwt`:
//!    [`SessionTokenVerifier`](crate::clerk::SessionTokenVerifier)). The result is a
//!    [`Session`]: the user and the active organization the token names. Failure: 401.
//! 2. **Authorization.** [`Tenancy::org_context`] asks the database whether the user is a
//!    member of that live organization and with which role ([`TenantPool::authorize`]): the
//!    token's role claim is never taken for it. No active organization: 403
//!    `no_active_organization`; not a member: 403 `not_a_member`.
//! 3. **The unit of work**, through [`TenantPool::with_rls`] with that context: the database
//!    admits it again, and Row-Level Security scopes every statement.
//!
//! Every failure is an [`ApiError`]: an HTTP status from [`ErrorKind`], a stable `code`, and a
//! message safe to show (never database text), serialized as
//! `{"error": <code>, "message": <text>}`.
//!
//! **Just joined.** A user added to an organization in the identity provider gets a token
//! naming it before the provider's webhook reaches the database. With
//! [`Tenancy::with_token_memberships`], a membership the verified token claims and the database
//! lacks is applied through the service path (a [`ServicePool`] unit in that organization):
//! with the token's role capped at admin (a token never makes an owner), and only if no removal
//! of that user from that organization was recorded at or after the token's `iat` (a removed
//! member's still-valid token cannot bring the membership back), and never for a deleted
//! organization. The webhook, when it arrives, overwrites the row with the provider's state.
//! Without it, such a user gets 403 `not_a_member` until the webhook is applied.
//!
//! The adapters: [`axum`] and [`actix`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::ids::{OrgId, UserId};
use crate::{OrgContext, Role, ServicePool, TenantPool};

#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub mod actix;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

/// A verified session: the user, and the active organization the token names (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The authenticated user.
    pub user_id: UserId,
    /// The active organization, if the session has one.
    pub org_id: Option<OrgId>,
    /// What the token says about the membership in the active organization, for applying a
    /// membership the webhook has not delivered yet ([`Tenancy::with_token_memberships`]).
    pub claim: Option<MembershipClaim>,
}

impl Session {
    /// A session for `user` with `org` active, from your own verified session source.
    pub fn new(user_id: UserId, org_id: Option<OrgId>) -> Self {
        Session {
            user_id,
            org_id,
            claim: None,
        }
    }

    /// Adds the membership the verified token claims in the active organization.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_claim(mut self, claim: MembershipClaim) -> Self {
        self.claim = Some(claim);
        self
    }
}

/// A membership a verified session token claims.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipClaim {
    /// The identity provider's organization id (`org_...`); the [`OrgId`] derives from it.
    pub org_external_id: String,
    /// The organization's slug, if the token states it (a placeholder name until the webhook).
    pub org_slug: Option<String>,
    /// The role the token states, mapped; applied at most as [`Role::Admin`].
    pub role: Role,
    /// When the token was issued (unix seconds).
    pub issued_at: i64,
}

impl MembershipClaim {
    /// A claim of `role` in the organization `org_external_id`, as of `issued_at`.
    pub fn new(org_external_id: impl Into<String>, role: Role, issued_at: i64) -> Self {
        MembershipClaim {
            org_external_id: org_external_id.into(),
            org_slug: None,
            role,
            issued_at,
        }
    }
}

/// Verifies a request's session token. One implementation serves every adapter, as a trait
/// object in [`Tenancy`].
#[async_trait::async_trait]
pub trait SessionVerifier: Send + Sync + 'static {
    /// Verifies `token` (never empty) and returns the session it proves.
    ///
    /// # Errors
    /// An [`ApiError`] to answer with: 401 for a bad token, 500 when the verifier cannot work.
    async fn verify(&self, token: &str) -> Result<Session, ApiError>;
}

#[cfg(feature = "clerk-jwt")]
#[async_trait::async_trait]
impl SessionVerifier for crate::clerk::SessionTokenVerifier {
    async fn verify(&self, token: &str) -> Result<Session, ApiError> {
        let claims = crate::clerk::SessionTokenVerifier::verify(self, token).await?;
        let org_id = claims.user_and_org().map(|(_, org)| org);
        let mut session = Session::new(claims.user_id.clone(), org_id);
        if let (Some(org), Some(role), Some(iat)) = (
            claims.org_external_id.as_deref(),
            claims.org_role.as_deref(),
            claims.issued_at,
        ) {
            let mut claim = MembershipClaim::new(org, self.roles().role_for(role, false), iat);
            claim.org_slug = claims.org_slug.clone();
            session = session.with_claim(claim);
        }
        Ok(session)
    }
}

/// The state the adapters need: the pool, the session verifier, and optionally the service
/// pool that applies memberships a token claims. Cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    pool: TenantPool,
    verifier: Arc<dyn SessionVerifier>,
    claims: Option<ServicePool>,
}

impl fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenancy")
            .field("pool", &self.pool)
            .field("token_memberships", &self.claims.is_some())
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// State for the adapters.
    pub fn new(pool: TenantPool, verifier: impl SessionVerifier) -> Self {
        Tenancy {
            pool,
            verifier: Arc::new(verifier),
            claims: None,
        }
    }

    /// Applies memberships a verified token claims and the database lacks, through `service`
    /// (see the module docs, "Just joined").
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_token_memberships(mut self, service: ServicePool) -> Self {
        self.claims = Some(service);
        self
    }

    /// The pool units of work run on.
    pub fn pool(&self) -> &TenantPool {
        &self.pool
    }

    /// Verifies the request's token (`None`: no token).
    ///
    /// # Errors
    /// 401 `missing_token` without one; the verifier's error otherwise.
    pub async fn session(&self, token: Option<&str>) -> Result<Session, ApiError> {
        match token {
            Some(t) if !t.is_empty() => self.verifier.verify(t).await,
            _ => Err(ApiError::new(
                ErrorKind::Unauthenticated,
                "missing_token",
                "no session token: send Authorization: Bearer <token> or the __session cookie",
            )),
        }
    }

    /// The session's context in its active organization, with the role **the database**
    /// holds.
    ///
    /// # Errors
    /// 403 `no_active_organization` when the session has none; 403 `not_a_member` when the
    /// database has no such membership (after applying the token's claim, if configured);
    /// 500 on a database failure.
    pub async fn org_context(&self, session: &Session) -> Result<OrgContext, ApiError> {
        let Some(org) = session.org_id else {
            return Err(ApiError::no_active_organization());
        };
        match self.pool.authorize(&session.user_id, org).await {
            Err(Error::NotAMember) => {}
            other => return other.map_err(ApiError::from),
        }
        let (Some(service), Some(claim)) = (&self.claims, &session.claim) else {
            return Err(Error::NotAMember.into());
        };
        if OrgId::from_external_id(&claim.org_external_id) != org
            || !apply_claim(service, org, &session.user_id, claim).await?
        {
            return Err(Error::NotAMember.into());
        }
        Ok(self.pool.authorize(&session.user_id, org).await?)
    }
}

/// Applies a token's membership claim in a service unit; `false` when it must not be.
async fn apply_claim(
    service: &ServicePool,
    org: OrgId,
    user: &UserId,
    claim: &MembershipClaim,
) -> Result<bool, Error> {
    service
        .with_org(org, async |tx| {
            let deleted: Option<bool> = sqlx::query_scalar(
                "SELECT deleted_at IS NOT NULL FROM organizations WHERE id = $1",
            )
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
            if deleted == Some(true) {
                return Ok(false);
            }
            // Before anything is written: a unit that answers `false` still commits.
            let removed_since: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM membership_removals \
                 WHERE organization_id = $1 AND user_id = $2 AND removed_at >= to_timestamp($3))",
            )
            .bind(org)
            .bind(user)
            .bind(claim.issued_at as f64)
            .fetch_one(&mut *tx)
            .await?;
            if removed_since {
                return Ok(false);
            }
            if deleted.is_none() {
                // A placeholder until the webhook brings the organization (any event
                // overwrites a row without `external_updated_at`).
                let name = claim.org_slug.as_deref().unwrap_or(&claim.org_external_id);
                sqlx::query(
                    "INSERT INTO organizations (id, name, external_id) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(org)
                .bind(name)
                .bind(&claim.org_external_id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO organization_members (organization_id, user_id, role) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(org)
            .bind(user)
            .bind(claim.role.min(Role::Admin))
            .execute(&mut *tx)
            .await?;
            Ok(true)
        })
        .await
}

/// The token of a request: `Authorization: Bearer <token>` if present, else the `__session`
/// cookie. `authorization` is that header's value; `cookies` the values of every `Cookie`
/// header.
pub fn token_from_request<'a>(
    authorization: Option<&'a str>,
    cookies: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if let Some(value) = authorization {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    cookies
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "__session")
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|t| !t.is_empty())
}

/// An error answer: status, stable code, and a message safe to show. Its JSON body is
/// `{"error": <code>, "message": <message>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error of `kind` (its status) with `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: kind.http_status(),
            code,
            message: message.into(),
        }
    }

    /// 413 `payload_too_large`: a body over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError {
            status: 413,
            code: "payload_too_large",
            message: format!("the body exceeds {limit} bytes"),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(ErrorKind::NotFound, "not_found", "no such resource")
    }

    /// 403 `no_active_organization`: the session has no organization (onboarding: create or
    /// choose one).
    pub fn no_active_organization() -> Self {
        Self::new(
            ErrorKind::Forbidden,
            "no_active_organization",
            "the session has no active organization: create or choose one",
        )
    }

    /// 500 `server_misconfigured`, naming what is missing and how to add it.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "server_misconfigured", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code, "message": self.message })
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let (code, message) = match &e {
            Error::Unauthenticated => ("unauthenticated", e.to_string()),
            Error::NotAMember => ("not_a_member", e.to_string()),
            Error::InsufficientRole { .. } => ("insufficient_role", e.to_string()),
            Error::InvalidUserId => ("invalid_user_id", e.to_string()),
            Error::InvalidRole(_) => ("invalid_role", "invalid role".to_owned()),
            // Database text stays in the server's logs.
            _ => match kind {
                ErrorKind::Forbidden => ("forbidden", "not allowed".to_owned()),
                ErrorKind::NotFound => ("not_found", "no such resource".to_owned()),
                ErrorKind::Conflict => ("conflict", "conflicts with existing data".to_owned()),
                ErrorKind::BadRequest => ("bad_request", "bad request".to_owned()),
                _ => ("internal", "internal error".to_owned()),
            },
        };
        ApiError::new(kind, code, message)
    }
}

#[cfg(feature = "clerk-jwt")]
impl From<crate::clerk::TokenError> for ApiError {
    fn from(e: crate::clerk::TokenError) -> Self {
        let message = match e.kind() {
            ErrorKind::Internal => "session keys unavailable".to_owned(),
            _ => e.to_string(),
        };
        ApiError::new(e.kind(), e.code(), message)
    }
}

/// A least role, in a type: [`Member`], [`Admin`] or [`Owner`], for `RequireRole<Admin>`.
pub trait MinRole: Send + Sync + 'static {
    /// The role.
    const ROLE: Role;
}

/// [`Role::Member`] as a type.
#[derive(Debug, Clone, Copy)]
pub struct Member;
/// [`Role::Admin`] as a type.
#[derive(Debug, Clone, Copy)]
pub struct Admin;
/// [`Role::Owner`] as a type.
#[derive(Debug, Clone, Copy)]
pub struct Owner;

impl MinRole for Member {
    const ROLE: Role = Role::Member;
}
impl MinRole for Admin {
    const ROLE: Role = Role::Admin;
}
impl MinRole for Owner {
    const ROLE: Role = Role::Owner;
}

/// An [`OrgContext`] whose role is at least `R` (an extractor in both adapters: 403
/// `insufficient_role` otherwise). Derefs to the context.
#[derive(Debug, Clone)]
pub struct RequireRole<R: MinRole> {
    ctx: OrgContext,
    _role: PhantomData<R>,
}

impl<R: MinRole> RequireRole<R> {
    /// Checks `ctx`'s role.
    ///
    /// # Errors
    /// 403 `insufficient_role` when the role is below `R`.
    pub fn check(ctx: OrgContext) -> Result<Self, ApiError> {
        ctx.require_role(R::ROLE)?;
        Ok(RequireRole {
            ctx,
            _role: PhantomData,
        })
    }

    /// The context.
    pub fn into_inner(self) -> OrgContext {
        self.ctx
    }
}

impl<R: MinRole> std::ops::Deref for RequireRole<R> {
    type Target = OrgContext;
    fn deref(&self) -> &OrgContext {
        &self.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_bearer_then_the_session_cookie() {
        assert_eq!(token_from_request(Some("Bearer abc"), []), Some("abc"));
        assert_eq!(token_from_request(Some("bearer  abc "), []), Some("abc"));
        // A header that is present but not Bearer is not silently replaced by the cookie.
        assert_eq!(token_from_request(Some("Basic abc"), ["__session=x"]), None);
        assert_eq!(token_from_request(Some("Bearer "), ["__session=x"]), None);
        assert_eq!(
            token_from_request(None, ["a=1; __session=tok; b=2"]),
            Some("tok")
        );
        assert_eq!(
            token_from_request(None, ["a=1", "__session=\"tok\""]),
            Some("tok")
        );
        assert_eq!(
            token_from_request(None, ["__session_x=1; x__session=2"]),
            None
        );
        assert_eq!(token_from_request(None, ["__session="]), None);
        assert_eq!(token_from_request(None, []), None);
    }

    #[test]
    fn api_errors_never_carry_database_text() {
        let db = Error::Database(sqlx::Error::Protocol("secret detail".into()));
        let e = ApiError::from(db);
        assert_eq!((e.status(), e.code()), (500, "internal"));
        assert!(!e.body().to_string().contains("secret"));
        let e = ApiError::from(Error::Database(sqlx::Error::RowNotFound));
        assert_eq!((e.status(), e.code()), (404, "not_found"));
        let e = ApiError::from(Error::NotAMember);
        assert_eq!(e.body()["error"], "not_a_member");
        assert_eq!(e.status(), 403);
        assert_eq!(ApiError::no_active_organization().status(), 403);
    }
}
