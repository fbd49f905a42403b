//! The user and active organization from a verified Clerk session token.

use serde_json::Value;

use super::event::PayloadError;
use super::permissions::{v1_permissions, v2_permissions};
use super::roles::RoleMapping;
use crate::{OrgContext, OrgId, Role, UserId};

/// The user and active organization from a Clerk session token's claims (v1 `org_id` /
/// `org_role` / `org_permissions`, or v2 `o: { id, rol, per, fpm }` with `fea`), read
/// **after** your JWT library verified the token.
///
/// ```
/// use pg_tenancy::clerk::SessionClaims;
///
/// let claims = serde_json::json!({
///     "sub": "user_2h8op3Isl1QR7tKu5FGNfaLKEoU", "v": 2,
///     "o": { "id": "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", "rol": "admin" }
/// });
/// let session = SessionClaims::from_verified_claims(&claims)?;
/// let (user, org) = session.user_and_org().expect("an active organization");
/// // Then: let ctx = pool.authorize(&user, org).await?;  (the role from the database)
/// # Ok::<(), pg_tenancy::clerk::PayloadError>(())
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionClaims {
    /// `sub`.
    pub user_id: UserId,
    /// The active organization's Clerk id, if one is active.
    pub org_external_id: Option<String>,
    /// The active organization's role key as Clerk names it (`org:admin`; v2's `admin` is
    /// given its `org:` prefix back).
    pub org_role: Option<String>,
    /// The active organization's slug (v1 `org_slug`, v2 `o.slg`), if any.
    pub org_slug: Option<String>,
    /// The active organization's permissions as the token states them (`org:<feature>:<name>`,
    /// in the token's order): v1's `org_permissions`, or v2's decoded from `o.per`, `o.fpm`
    /// and the organization features of `fea` ([`from_verified_claims`](Self::from_verified_claims)
    /// says how). Empty without an active organization. A snapshot as old as the token: the
    /// application checks it first, the database decides with its own at each unit's entry.
    pub org_permissions: Vec<String>,
    /// `iat`: when the token was issued (unix seconds), if stated.
    pub issued_at: Option<i64>,
    /// `act.sub`: in an impersonated session, who is acting (the impersonator's user id, as
    /// Clerk's actor token names it), while [`user_id`](Self::user_id) is the user acted as.
    /// For logs and audit trails only, never for authorization: the session acts as, and with
    /// the memberships of, `user_id`.
    pub actor: Option<String>,
}

impl SessionClaims {
    /// Reads the claims of a verified token. Never call this on an unverified token: the
    /// result is trusted.
    ///
    /// Permissions are read as Clerk's own SDK (`@clerk/shared`'s `jwtPayloadParser`) reads
    /// them, and only with an active organization:
    /// - v1: `org_permissions`, an array of strings.
    /// - v2: `per` is a comma-separated list of permission names, `fea` a comma-separated list
    ///   of `scope:feature` (the feature is everything after the first colon), and `fpm` one
    ///   decimal number per **organization** feature of `fea` (scope `o`, `ou` or `uo`, in
    ///   order; user features `u` and unknown scopes take none). Bit `i` of a feature's number
    ///   (value 2<sup>i</sup>) grants `org:<feature>:<per[i]>`; bits at or beyond `per`'s
    ///   length grant nothing, and the number is exact at any length. A feature without a
    ///   number grants nothing. Elements are trimmed; an empty `per`, `fpm` or `fea` is none.
    ///
    /// ```
    /// # use pg_tenancy::clerk::SessionClaims;
    /// let claims = serde_json::json!({
    ///     "sub": "user_1", "v": 2, "fea": "o:impersonation,u:profile,o:invoices",
    ///     "o": { "id": "org_1", "rol": "admin", "per": "read,manage", "fpm": "3,1" }
    /// });
    /// let session = SessionClaims::from_verified_claims(&claims)?;
    /// assert_eq!(
    ///     session.org_permissions,
    ///     ["org:impersonation:read", "org:impersonation:manage", "org:invoices:read"]
    /// );
    /// # Ok::<(), pg_tenancy::clerk::PayloadError>(())
    /// ```
    ///
    /// # Errors
    /// [`PayloadError::Invalid`] when `sub` is missing or not a valid
    /// [`UserId`](crate::UserId), and, with an active organization, when the permission claims
    /// are not Clerk's encoding (naming the claim: `org_permissions` not an array of strings;
    /// `fea`, `o.per` or `o.fpm` not a string; an element of `fea` without a colon or with an
    /// empty feature; an empty name in `per`; an entry of `fpm` that is not a decimal number,
    /// sign and point included). Such a token is refused rather than read as
    /// granting nothing: a signed token Clerk's encoding cannot explain means this reading is
    /// wrong, which must not pass quietly. The other organization claims never fail: absent or
    /// empty, the session has no active organization.
    pub fn from_verified_claims(claims: &Value) -> Result<Self, PayloadError> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let sub = text(claims, "sub").ok_or(PayloadError::Invalid {
            field: "sub",
            reason: "absent",
        })?;
        let user_id = UserId::new(sub).map_err(|_| PayloadError::Invalid {
            field: "sub",
            reason: "not a usable user id",
        })?;
        let (org, role, slug) = match claims.get("o") {
            // v2: compact, the role without its `org:` prefix.
            Some(o) => (
                text(o, "id"),
                // An empty `rol` is no role (Clerk's SDK: `if (claims.o?.rol)`), not `org:`.
                text(o, "rol")
                    .filter(|r| !r.is_empty())
                    .map(|r| format!("org:{r}")),
                text(o, "slg"),
            ),
            None => (
                text(claims, "org_id"),
                text(claims, "org_role"),
                text(claims, "org_slug"),
            ),
        };
        let org = org.filter(|o| !o.is_empty());
        // Permissions exist only with an active organization.
        let org_permissions = match (&org, claims.get("o")) {
            (None, _) => Vec::new(),
            (Some(_), Some(o)) => v2_permissions(claims, o)?,
            (Some(_), None) => v1_permissions(claims)?,
        };
        Ok(SessionClaims {
            user_id,
            org_external_id: org,
            org_role: role,
            org_permissions,
            org_slug: slug.filter(|s| !s.is_empty()),
            issued_at: claims.get("iat").and_then(Value::as_i64),
            actor: claims
                .get("act")
                .and_then(|act| text(act, "sub"))
                .filter(|a| !a.is_empty()),
        })
    }

    /// The user and the active organization's `OrgId` (the same mapping the webhook sync
    /// uses), to pass to [`TenantPool::authorize`](crate::TenantPool::authorize) or [`TenantPool::with_member`](crate::TenantPool::with_member).
    pub fn user_and_org(&self) -> Option<(UserId, OrgId)> {
        let org = self.org_external_id.as_deref()?;
        Some((self.user_id.clone(), OrgId::from_external_id(org)))
    }

    /// A context with the role **as the token states it**, mapped by `roles`, without a
    /// database round trip. The token cannot know that the creator is the owner (see
    /// [`RoleMapping`]), so this never yields [`Role::Owner`]; and it is as fresh as the
    /// token. Use [`TenantPool::authorize`](crate::TenantPool::authorize) when the role must come from the database.
    /// The context carries the token's [`org_permissions`](Self::org_permissions).
    pub fn org_context_trusting_token_role(&self, roles: &RoleMapping) -> Option<OrgContext> {
        let (user, org) = self.user_and_org()?;
        let role = roles
            .role_for(self.org_role.as_deref()?, false)
            .min(Role::Admin);
        Some(
            OrgContext::from_verified_session(org, user, role)
                .with_permissions(self.org_permissions.iter().cloned()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_claims_v1_and_v2_read_alike() {
        let v1: Value = serde_json::from_str(include_str!(
            "../../tests/data/clerk-events/session_claims.v1.json"
        ))
        .unwrap();
        let v2: Value = serde_json::from_str(include_str!(
            "../../tests/data/clerk-events/session_claims.v2.json"
        ))
        .unwrap();
        let (a, b) = (
            SessionClaims::from_verified_claims(&v1).unwrap(),
            SessionClaims::from_verified_claims(&v2).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.org_role.as_deref(), Some("org:admin"));
        // v1's `org_permissions` and v2's `fea` + `o.per` + `o.fpm` ("3"): the same two.
        assert_eq!(
            b.org_permissions,
            ["org:impersonation:read", "org:impersonation:manage"]
        );
        let (user, org) = a.user_and_org().unwrap();
        assert_eq!(user.as_str(), "user_2h8op3Isl1QR7tKu5FGNfaLKEoU");
        assert_eq!(
            org,
            OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
        );
        let ctx = a
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Admin);
        // Not impersonated: no actor. Impersonated (Clerk's `act`, the same in v1 and v2):
        // the actor beside the user acted as.
        assert_eq!(a.actor, None);
        for mut claims in [v1.clone(), v2.clone()] {
            claims["act"] = serde_json::json!({
                "sub": "user_support", "iss": "https://dashboard.clerk.com", "sid": "sess_1"
            });
            let impersonated = SessionClaims::from_verified_claims(&claims).unwrap();
            assert_eq!(impersonated.actor.as_deref(), Some("user_support"));
            assert_eq!(impersonated.user_id, a.user_id);
            claims["act"] = serde_json::json!({"sub": ""});
            assert_eq!(
                SessionClaims::from_verified_claims(&claims).unwrap().actor,
                None
            );
        }
        // No active organization: no context. No subject: an error.
        let personal = serde_json::json!({"sub": "user_1"});
        assert_eq!(
            SessionClaims::from_verified_claims(&personal)
                .unwrap()
                .user_and_org(),
            None
        );
        assert!(
            SessionClaims::from_verified_claims(&serde_json::json!({"org_id": "org_1"})).is_err()
        );
        // An empty v2 role is none (then the web layer looks the role up).
        let no_role = serde_json::json!({"sub": "user_1", "v": 2, "o": {"id": "org_1", "rol": ""}});
        let no_role = SessionClaims::from_verified_claims(&no_role).unwrap();
        assert_eq!(no_role.org_role, None);
        assert!(no_role.user_and_org().is_some());
        // A custom role in the token maps to least privilege by default.
        let custom = serde_json::json!({"sub": "user_1", "o": {"id": "org_1", "rol": "billing"}});
        let ctx = SessionClaims::from_verified_claims(&custom)
            .unwrap()
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Member);
    }
}
