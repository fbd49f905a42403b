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
//! Every failure is an [`ApiError`]: an HTTP status, a stable `code` (one table holds every
//! code the crate answers with, and its status; docs/web.md lists it), and a message safe to
//! show (never database text), serialized as `{"error": <code>, "message": <text>}`. A request
//! body refused by the framework answers the same way through [`axum::Json`] or
//! [`actix::json_config`]: 415 `unsupported_media_type`, 400 `malformed_body`, 422
//! `invalid_body`, 413 `payload_too_large`.
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
//!
//! # Logging
//!
//! An [`ApiError`] keeps its cause (the database error behind a 500):
//! [`source`](std::error::Error::source) returns it, and the body never shows it. When an
//! adapter answers with a 5xx, it emits one `tracing` event at level `ERROR` (target
//! `pg_tenancy::web::error`) with the fields `status`, `code`, `message` and `cause` (the
//! cause's chain, each error's `Display` joined by `: `): what the error says, no token text,
//! no request body. A 4xx is not logged. This needs only a `tracing` subscriber in your
//! application; the crate's `tracing` feature turns on its spans, not these events.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::Error;
use crate::ids::{OrgId, UserId};
use crate::{OrgContext, Role, ServicePool, TenantPool};

pub use crate::claims::MembershipClaim;
pub use error::ApiError;

mod error;

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
            _ => Err(error::missing_token()),
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
            || !crate::claims::apply(service, org, &session.user_id, claim).await?
        {
            return Err(Error::NotAMember.into());
        }
        Ok(self.pool.authorize(&session.user_id, org).await?)
    }
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
}
