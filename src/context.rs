//! [`OrgContext`]: who is acting, in which organization, with which role.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::{OrgId, UserId};
use crate::role::Role;

/// The organization, user and role a unit of work runs as.
///
/// The fields are private. The ways to get one:
/// - [`TenantPool::authorize`](crate::TenantPool::authorize), which reads the membership in
///   the database;
/// - [`TenantPool::create_organization`](crate::TenantPool::create_organization), for the
///   owner of the organization it creates;
/// - [`OrgContext::from_verified_session`], whose caller vouches that all three values come
///   from a session the server verified (for example the `org_id` / `org_role` claims of a
///   session token whose signature was checked), and, with the `clerk` feature,
///   `SessionClaims::org_context_trusting_token_role`, which does that for Clerk's claims.
///
/// Whichever way, every unit of work it starts is admitted by the database only for a live
/// membership with at least its role.
///
/// The web adapters' extractors (feature `web`) make a third kind, from a verified session
/// token that states a role: its role is the **least** the token claims, so a unit it starts
/// is admitted for a membership with at least that role and acts with the role the database
/// holds (a token issued before a promotion does not hold the user back; one issued before a
/// demotion is refused at the entry). See `docs/web.md`.
///
/// It may also carry the permissions the application checks before any unit runs
/// ([`with_permissions`](Self::with_permissions), [`require_permission`](Self::require_permission));
/// the database never reads them, and checks its own.
///
/// Never build one from anything the client sends: a request body, query string, cookie or
/// header.
#[derive(Debug, Clone)]
pub struct OrgContext {
    org: OrgId,
    user: UserId,
    role: Role,
    /// `role` is the least a verified token claims: units act with the membership's role.
    at_least: bool,
    /// A membership the verified token claims, applied when an entry finds none (the web
    /// layer's "just joined" path).
    #[cfg(feature = "web")]
    claim: Option<Arc<crate::claims::PendingClaim>>,
    /// The permissions the application checks first (`None`: not known): a token's snapshot,
    /// or the database's at a lookup. The database never reads them: each unit's entry sets
    /// the membership's own.
    permissions: Option<Arc<[String]>>,
}

/// Equal when the organization, the user and the role (and whether it is the least the
/// token claims) are: a pending membership claim and the permissions are not part of the
/// identity.
impl PartialEq for OrgContext {
    fn eq(&self, other: &Self) -> bool {
        (self.org, &self.user, self.role, self.at_least)
            == (other.org, &other.user, other.role, other.at_least)
    }
}

impl Eq for OrgContext {}

impl OrgContext {
    /// Builds a context from values of a **verified** server-side session.
    ///
    /// The name is the contract: call this only with values your server derived from an
    /// authenticated session (a verified session token, a server-side session store). For a
    /// database-checked context use [`TenantPool::authorize`](crate::TenantPool::authorize).
    pub fn from_verified_session(org: OrgId, user: UserId, role: Role) -> Self {
        OrgContext {
            org,
            user,
            role,
            at_least: false,
            #[cfg(feature = "web")]
            claim: None,
            permissions: None,
        }
    }

    /// A context from a verified session token that claims `role` (the web adapters): every
    /// unit it starts is admitted for a membership with at least `role` and acts with the
    /// membership's role; `claim`, when the token's membership is to be applied if an entry
    /// finds none.
    #[cfg(feature = "web")]
    pub(crate) fn from_token(
        org: OrgId,
        user: UserId,
        role: Role,
        claim: Option<Arc<crate::claims::PendingClaim>>,
    ) -> Self {
        OrgContext {
            org,
            user,
            role,
            at_least: true,
            claim,
            permissions: None,
        }
    }

    /// Whether the role is the least a verified token claims (units then act with the
    /// membership's role), rather than the role the units act with.
    pub(crate) fn role_is_least(&self) -> bool {
        self.at_least
    }

    /// The membership the token claims, to apply when an entry finds none.
    #[cfg(feature = "web")]
    pub(crate) fn pending_claim(&self) -> Option<&crate::claims::PendingClaim> {
        self.claim.as_deref()
    }

    /// The organization.
    pub fn org_id(&self) -> OrgId {
        self.org
    }

    /// The acting user.
    pub fn user_id(&self) -> &UserId {
        &self.user
    }

    /// The user's role in the organization: for a context from a session token (the web
    /// adapters' extractors), the role the token claims, which the database may hold higher
    /// (the units then act with the database's).
    pub fn role(&self) -> Role {
        self.role
    }

    /// Succeeds if the role is at least `min`, else [`Error::InsufficientRole`] (HTTP 403).
    ///
    /// For a context from a session token, that is the token's role: to let a user the
    /// database has promoted since the token was issued through, use
    /// `web::Tenancy::require_role` or the `web::RequireRole` extractor, which look the role up
    /// when the token's is too low.
    ///
    /// # Errors
    /// [`Error::InsufficientRole`] when the context's role is below `min`.
    pub fn require_role(&self, min: Role) -> Result<()> {
        if self.role >= min {
            Ok(())
        } else {
            Err(Error::InsufficientRole {
                required: min,
                actual: self.role,
            })
        }
    }
}

impl OrgContext {
    /// The context with `permissions` (Clerk's keys, `org:<feature>:<name>`): what
    /// [`has_permission`](Self::has_permission) and [`require_permission`](Self::require_permission)
    /// check. [`TenantPool::authorize`](crate::TenantPool::authorize) sets the database's; the
    /// web adapters set a verified token's.
    ///
    /// These are the **application's** check, made before any unit runs: the database never
    /// reads them. Each unit's entry sets the permissions the database holds for the
    /// membership's role, and policies (`tenancy_current_org_id_with('org:invoices:write')`)
    /// check those. A context given permissions its membership lacks passes the application's
    /// check and is refused by the policies.
    ///
    /// ```
    /// use pg_tenancy::{OrgContext, OrgId, Role, UserId};
    ///
    /// let ctx = OrgContext::from_verified_session(
    ///     OrgId::from_external_id("org_1"),
    ///     UserId::new("user_1")?,
    ///     Role::Member,
    /// )
    /// .with_permissions(["org:invoices:read"]);
    /// assert!(ctx.has_permission("org:invoices:read"));
    /// assert!(ctx.require_permission("org:invoices:write").is_err());
    /// # Ok::<(), pg_tenancy::Error>(())
    /// ```
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_permissions(
        mut self,
        permissions: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.permissions = Some(permissions.into_iter().map(Into::into).collect());
        self
    }

    /// The permissions the context carries (see [`with_permissions`](Self::with_permissions)),
    /// `None` when not known (nothing set them; for a web adapter's context, a
    /// [`SessionVerifier`](crate::web::SessionVerifier) that states none).
    pub fn permissions(&self) -> Option<&[String]> {
        self.permissions.as_deref()
    }

    /// Whether the context carries `permission` (an exact match of the whole key,
    /// `org:invoices:write`); `false` when its permissions are not known.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions()
            .is_some_and(|held| held.iter().any(|p| p == permission))
    }

    /// Succeeds if the context carries `permission`, else [`Error::MissingPermission`] (HTTP
    /// 403).
    ///
    /// For a context from a session token, that is the token's snapshot: to let through a
    /// user whose role the database has given the permission since the token was issued, use
    /// `web::Tenancy::require_permission` or the `web::RequirePermission` extractor, which look
    /// the permissions up when the token lacks it.
    ///
    /// # Errors
    /// [`Error::MissingPermission`] when the context does not carry `permission`, or its
    /// permissions are not known.
    pub fn require_permission(&self, permission: &str) -> Result<()> {
        if self.has_permission(permission) {
            Ok(())
        } else {
            Err(Error::MissingPermission {
                permission: permission.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn ctx(role: Role) -> OrgContext {
        OrgContext::from_verified_session(
            OrgId::from_external_id("org_a"),
            UserId::new("user_a").unwrap(),
            role,
        )
    }

    #[test]
    fn require_role_follows_the_order() {
        for (have, need, ok) in [
            (Role::Member, Role::Member, true),
            (Role::Member, Role::Admin, false),
            (Role::Member, Role::Owner, false),
            (Role::Admin, Role::Member, true),
            (Role::Admin, Role::Admin, true),
            (Role::Admin, Role::Owner, false),
            (Role::Owner, Role::Owner, true),
        ] {
            let r = ctx(have).require_role(need);
            assert_eq!(r.is_ok(), ok, "{have} needs {need}");
            if let Err(e) = r {
                assert!(matches!(e, Error::InsufficientRole { required, actual }
                    if required == need && actual == have));
                assert_eq!(e.kind(), ErrorKind::Forbidden);
                assert_eq!(e.kind().http_status(), 403);
            }
        }
    }

    #[test]
    fn permissions_are_checked_whole_and_unknown_ones_are_missing() {
        let unknown = ctx(Role::Owner);
        assert_eq!(unknown.permissions(), None);
        assert!(!unknown.has_permission("org:invoices:write"));
        let held = ctx(Role::Member).with_permissions(["org:invoices:read", "org:invoices:write"]);
        assert_eq!(
            held.permissions(),
            Some(
                &[
                    "org:invoices:read".to_owned(),
                    "org:invoices:write".to_owned()
                ][..]
            )
        );
        assert!(held.require_permission("org:invoices:write").is_ok());
        for missing in [
            "org:invoices:delete",
            "invoices:write",
            "org:invoices",
            "org:invoices:write ",
            "ORG:invoices:write",
            "",
        ] {
            assert!(!held.has_permission(missing), "{missing:?}");
            let e = held.require_permission(missing).unwrap_err();
            assert!(matches!(&e, Error::MissingPermission { permission } if permission == missing));
            assert_eq!(e.kind().http_status(), 403);
        }
        let e = unknown
            .require_permission("org:invoices:write")
            .unwrap_err();
        assert_eq!(e.to_string(), "missing permission org:invoices:write");
        // None granted is known and empty, not unknown.
        let none = ctx(Role::Member).with_permissions(Vec::<String>::new());
        assert_eq!(none.permissions(), Some(&[][..]));
        assert!(!none.has_permission("org:invoices:read"));
        // Permissions are not part of the identity.
        assert_eq!(held, ctx(Role::Member));
    }
}
