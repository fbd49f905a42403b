//! The request layer the web adapters share (feature `web`; `axum` and `actix-web` turn it on).
//!
//! A request goes through three steps, the same in every framework:
//!
//! 1. **Authentication.** The session token is read from `Authorization: Bearer <token>` or,
//!    failing that, the `__session` cookie ([`token_from_request`]), and verified by the
//!    [`SessionVerifier`] in [`Tenancy`] (with `clerk-jwt`:
//!    [`SessionTokenVerifier`](crate::clerk::SessionTokenVerifier)). The result is a
//!    [`Session`]: the user and the active organization the token names. Failure: 401.
//! 2. **The context.** [`Tenancy::org_context`] takes the user, the active organization and the
//!    role the verified token states: no database lookup. No active organization: 403
//!    `no_active_organization`. [`RequireRole`] passes when the token's role is enough; when
//!    it is not, one lookup ([`Tenancy::require_role`]) lets a user the database has promoted
//!    since through, and answers 403 `insufficient_role` otherwise.
//! 3. **The unit of work**, through [`TenantPool::with_rls`] (or `with_rls_read`) with that
//!    context: the database admits it in the unit's `BEGIN` round trip, as it admits
//!    [`TenantPool::with_member`]'s: a live organization, a membership, a role at least the
//!    token's (403 `not_a_member` / `insufficient_role` before your code runs otherwise), and
//!    the unit acts with the role the database holds. Row-Level Security scopes every
//!    statement. A write request costs the round trips of a plain sqlx transaction (3 for one
//!    query), a read request 2.
//!
//! **Permissions** (Clerk's `org:<feature>:<name>`) are checked twice, first by the
//! application and then by the database. [`RequirePermission`] (and
//! [`Tenancy::require_permission`]) passes when the verified token states the permission (no
//! lookup); when it does not, one lookup ([`TenantPool::authorize`]) asks the database, which
//! may have granted it since the token was issued, and answers 403 `missing_permission` if the
//! database lacks it too. Then each unit's entry sets the permissions the database holds for
//! the membership's role, and policies such as `organization_id = (SELECT
//! tenancy_current_org_id_with('org:invoices:write'))` check those on every statement: a token
//! issued before a permission was taken away passes the application's check, and the
//! database refuses its writes. docs/web.md, "Permissions", tells the whole story.
//!
//! The token's role is a claim the database checks, never a grant: a token issued before a
//! demotion is refused at the entry; one issued before a promotion acts with the database's
//! role. Code that acts outside any unit on the strength of the context alone (calling
//! another service, say) relies on the token; check with [`TenantPool::authorize`] first if
//! the database must agree. A [`SessionVerifier`] of your own that states no role
//! ([`Session::role`]) gets its context from one lookup instead.
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
//! lacks (the unit's entry refuses with `TNC01`, not a member) is applied through the service
//! path (a [`ServicePool`] unit in that organization), at most once per request, and the entry
//! is tried again:
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
use crate::claims::PendingClaim;
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
    /// The role the verified token states in the active organization, if it states one. With
    /// it, the request's [`OrgContext`] needs no lookup: each unit's entry requires at least
    /// this role and acts with the database's ([`Tenancy::org_context`]).
    pub role: Option<Role>,
    /// What the token says about the membership in the active organization, for applying a
    /// membership the webhook has not delivered yet ([`Tenancy::with_token_memberships`]).
    pub claim: Option<MembershipClaim>,
    /// In an impersonated session (Clerk's `act` claim), who is acting: the impersonator's
    /// user id, while [`user_id`](Self::user_id) is the user acted as. Log it beside the user
    /// to record who acted on whose behalf; never authorize with it (every unit acts as, and
    /// with the memberships of, `user_id`). `None` when not impersonated.
    pub actor: Option<String>,
    /// The permissions the verified token states in the active organization (Clerk's
    /// `org:<feature>:<name>`, v1 or v2, see
    /// [`SessionClaims::org_permissions`](crate::clerk::SessionClaims::org_permissions)), as of
    /// the token's issue. The request's [`OrgContext`] carries them for the application's check
    /// ([`RequirePermission`]); the database checks its own. `None` when the session states
    /// none (then a permission check looks them up).
    pub permissions: Option<Vec<String>>,
}

impl Session {
    /// A session for `user` with `org` active, from your own verified session source.
    pub fn new(user_id: UserId, org_id: Option<OrgId>) -> Self {
        Session {
            user_id,
            org_id,
            role: None,
            claim: None,
            actor: None,
            permissions: None,
        }
    }

    /// Adds the role the verified session states in the active organization (see
    /// [`Session::role`]).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }

    /// Adds the permissions the verified session states in the active organization (see
    /// [`Session::permissions`]).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_permissions(
        mut self,
        permissions: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.permissions = Some(permissions.into_iter().map(Into::into).collect());
        self
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
        session.actor = claims.actor.clone();
        if let (Some(_), Some(role)) = (org_id, claims.org_role.as_deref()) {
            session = session.with_role(self.roles().role_for(role, false));
        }
        if org_id.is_some() {
            session = session.with_permissions(claims.org_permissions.iter().cloned());
        }
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

    /// The session's context in its active organization.
    ///
    /// When the session states a role (Clerk's tokens do), **no lookup**: the context is the
    /// token's user, organization and role, and the database decides at each unit's entry, in
    /// its `BEGIN` round trip, as [`TenantPool::with_member`] does: a live organization, a
    /// membership, a role at least the token's (403 `not_a_member` / `insufficient_role`
    /// otherwise, before the unit's code runs); the unit acts with the role the database
    /// holds. With [`with_token_memberships`](Self::with_token_memberships), the membership the
    /// token claims rides along and is applied only when an entry finds none. The context
    /// carries the session's [`permissions`](Session::permissions), when it states them.
    ///
    /// A session without a role (a [`SessionVerifier`] of your own that states none) gets its
    /// context from the database: one lookup ([`TenantPool::authorize`]), with the role the
    /// database holds.
    ///
    /// # Errors
    /// 403 `no_active_organization` when the session has none. Without a role in the session:
    /// 403 `not_a_member` when the database has no such membership (after applying the
    /// token's claim, if configured); 500 on a database failure.
    pub async fn org_context(&self, session: &Session) -> Result<OrgContext, ApiError> {
        let Some(org) = session.org_id else {
            return Err(ApiError::no_active_organization());
        };
        let Some(role) = session.role else {
            return self
                .looked_up(&session.user_id, org, self.claim(session, org).as_deref())
                .await;
        };
        let ctx =
            OrgContext::from_token(org, session.user_id.clone(), role, self.claim(session, org));
        Ok(match &session.permissions {
            Some(permissions) => ctx.with_permissions(permissions.iter().cloned()),
            None => ctx,
        })
    }

    /// `ctx` if its role is at least `min`. For a context from a session token whose role is
    /// below `min`, the database may hold more (the user was promoted since the token was
    /// issued): then, and only then, one lookup ([`TenantPool::authorize`]) decides, and the
    /// context with the database's role is returned. [`RequireRole`] checks through it.
    ///
    /// # Errors
    /// 403 `insufficient_role` when the role (the database's, when looked up) is below `min`;
    /// 403 `not_a_member` when the lookup finds no membership (after applying the token's
    /// claim, if configured); 500 on a database failure.
    pub async fn require_role(&self, ctx: &OrgContext, min: Role) -> Result<OrgContext, ApiError> {
        if ctx.role() >= min || !ctx.role_is_least() {
            ctx.require_role(min)?;
            return Ok(ctx.clone());
        }
        let ctx = self
            .looked_up(ctx.user_id(), ctx.org_id(), ctx.pending_claim())
            .await?;
        ctx.require_role(min)?;
        Ok(ctx)
    }

    /// `ctx` if it carries `permission` (Clerk's whole key, `org:invoices:write`). For a
    /// context from a session token that lacks it (or whose permissions are not known), the
    /// database may hold it (the user's role gained it since the token was issued): then, and
    /// only then, one lookup ([`TenantPool::authorize`]) decides, and the context it returns,
    /// with the database's role and permissions, is returned. [`RequirePermission`] checks
    /// through it.
    ///
    /// This is the application's check, before any unit runs; the database makes its own at
    /// every statement of every unit, with the permissions it holds then (see the module docs).
    ///
    /// # Errors
    /// 403 `missing_permission` when the context (the database's, when looked up) lacks
    /// `permission`; 403 `not_a_member` when the lookup finds no membership (after applying the
    /// token's claim, if configured); 500 on a database failure.
    pub async fn require_permission(
        &self,
        ctx: &OrgContext,
        permission: &str,
    ) -> Result<OrgContext, ApiError> {
        // Held; or not, with permissions that are the database's already (a lookup's) or the
        // caller's: nothing to ask.
        if ctx.has_permission(permission) || (!ctx.role_is_least() && ctx.permissions().is_some()) {
            ctx.require_permission(permission)?;
            return Ok(ctx.clone());
        }
        let ctx = self
            .looked_up(ctx.user_id(), ctx.org_id(), ctx.pending_claim())
            .await?;
        ctx.require_permission(permission)?;
        Ok(ctx)
    }

    /// The membership the session's token claims in `org`, to apply when the database lacks
    /// it, if configured.
    fn claim(&self, session: &Session, org: OrgId) -> Option<Arc<PendingClaim>> {
        let (service, claim) = (self.claims.as_ref()?, session.claim.as_ref()?);
        (OrgId::from_external_id(&claim.org_external_id) == org)
            .then(|| Arc::new(PendingClaim::new(service.clone(), claim.clone())))
    }

    /// The context with the role the database holds ([`TenantPool::authorize`]), applying
    /// `claim` first when the database has no membership.
    async fn looked_up(
        &self,
        user: &UserId,
        org: OrgId,
        claim: Option<&PendingClaim>,
    ) -> Result<OrgContext, ApiError> {
        match self.pool.authorize(user, org).await {
            Err(Error::NotAMember) => {}
            other => return other.map_err(ApiError::from),
        }
        match claim {
            Some(claim) if claim.apply_once(org, user).await? => {
                Ok(self.pool.authorize(user, org).await?)
            }
            _ => Err(Error::NotAMember.into()),
        }
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

/// An [`OrgContext`] whose role is at least `R` (an extractor in both adapters, through
/// [`Tenancy::require_role`]: no lookup when the token's role is enough, one when it is below
/// `R`; 403 `insufficient_role` otherwise). Derefs to the context.
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

/// A permission, in a type, for [`RequirePermission`]. Define one with
/// [`permission!`](crate::permission!), which checks the key's shape at compile time.
pub trait Permission: Send + Sync + 'static {
    /// The permission's key as Clerk names it: `org:<feature>:<name>`.
    const KEY: &'static str;
}

/// Defines types naming permissions, for [`RequirePermission`](crate::web::RequirePermission):
/// each a unit struct implementing [`Permission`](crate::web::Permission). A key that is not
/// `org:<feature>:<name>` (non-empty feature and name) does not compile.
///
/// ```
/// use pg_tenancy::web::{Permission, RequirePermission};
///
/// pg_tenancy::permission! {
///     /// Creating and changing invoices.
///     pub InvoicesWrite = "org:invoices:write";
///     /// Reading reports.
///     pub(crate) ReportsRead = "org:reports:read";
/// }
///
/// assert_eq!(InvoicesWrite::KEY, "org:invoices:write");
/// async fn create_invoice(ctx: RequirePermission<InvoicesWrite>) -> String {
///     format!("{} may write invoices in {}", ctx.user_id(), ctx.org_id())
/// }
/// ```
///
/// ```compile_fail,E0080
/// pg_tenancy::permission! {
///     pub Bad = "invoices:write";
/// }
/// ```
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "web")))]
macro_rules! permission {
    ($($(#[$meta:meta])* $vis:vis $name:ident = $key:literal;)+) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy)]
            $vis struct $name;

            impl $crate::web::Permission for $name {
                const KEY: &'static str = $key;
            }

            const _: () = assert!(
                $crate::web::is_permission_key($key),
                "a permission key is org:<feature>:<name>"
            );
        )+
    };
}

/// Whether `key` is `org:<feature>:<name>` with a non-empty feature and name (a feature may
/// hold colons: Clerk names it by everything after its scope's colon). For [`permission!`].
#[doc(hidden)]
pub const fn is_permission_key(key: &str) -> bool {
    let b = key.as_bytes();
    if b.len() < 7 || b[0] != b'o' || b[1] != b'r' || b[2] != b'g' || b[3] != b':' {
        return false;
    }
    // The last colon ends the feature: at least one byte before it (after `org:`), one after.
    let mut i = b.len() - 1;
    while i > 4 {
        if b[i] == b':' {
            return i < b.len() - 1;
        }
        i -= 1;
    }
    false
}

/// An [`OrgContext`] that carries the permission `P` (an extractor in both adapters, through
/// [`Tenancy::require_permission`]: no lookup when the verified token states it, one when it
/// does not; 403 `missing_permission` when the database lacks it too). Derefs to the context.
///
/// The application's check: the database checks its own permissions at every statement of the
/// units the handler runs (docs/web.md, "Permissions").
#[derive(Debug, Clone)]
pub struct RequirePermission<P: Permission> {
    ctx: OrgContext,
    _permission: PhantomData<P>,
}

impl<P: Permission> RequirePermission<P> {
    /// Checks that `ctx` carries `P`.
    ///
    /// # Errors
    /// 403 `missing_permission` when it does not.
    pub fn check(ctx: OrgContext) -> Result<Self, ApiError> {
        ctx.require_permission(P::KEY)?;
        Ok(RequirePermission {
            ctx,
            _permission: PhantomData,
        })
    }

    /// The context.
    pub fn into_inner(self) -> OrgContext {
        self.ctx
    }
}

impl<P: Permission> std::ops::Deref for RequirePermission<P> {
    type Target = OrgContext;
    fn deref(&self) -> &OrgContext {
        &self.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_keys_have_a_feature_and_a_name() {
        for good in [
            "org:invoices:write",
            "org:sys_memberships:manage",
            "org:billing:v2:read",
            "org:a:b",
        ] {
            assert!(is_permission_key(good), "{good}");
        }
        for bad in [
            "invoices:write",
            "org:invoices",
            "org::write",
            "org:invoices:",
            "org:",
            "org:::",
            "ORG:invoices:write",
            "",
        ] {
            assert!(!is_permission_key(bad), "{bad}");
        }
    }

    #[test]
    fn require_permission_checks_the_key() {
        crate::permission! {
            /// A test permission.
            Write = "org:invoices:write";
        }
        let ctx = OrgContext::from_verified_session(
            OrgId::from_external_id("org_a"),
            UserId::new("user_a").unwrap(),
            Role::Member,
        );
        let refused = RequirePermission::<Write>::check(ctx.clone()).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (403, "missing_permission")
        );
        let allowed = ctx.with_permissions([Write::KEY]);
        assert_eq!(
            RequirePermission::<Write>::check(allowed)
                .unwrap()
                .permissions(),
            Some(&["org:invoices:write".to_owned()][..])
        );
    }

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
