//! The user and active organization from a verified Clerk session token.

use serde_json::Value;

use super::event::PayloadError;
use super::roles::RoleMapping;
use crate::{OrgContext, OrgId, Role, UserId};

/// The user and active organization from a Clerk session token's claims (v1 `org_id` /
/// `org_role`, or v2 `o: { id, rol }`), read **after** your JWT library verified the token.
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
    /// # Errors
    /// [`PayloadError::Invalid`] when `sub` is missing or not a valid
    /// [`UserId`](crate::UserId). Organization claims never fail: absent or empty, the session
    /// has no active organization.
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
                text(o, "rol").map(|r| format!("org:{r}")),
                text(o, "slg"),
            ),
            None => (
                text(claims, "org_id"),
                text(claims, "org_role"),
                text(claims, "org_slug"),
            ),
        };
        Ok(SessionClaims {
            user_id,
            org_external_id: org.filter(|o| !o.is_empty()),
            org_role: role,
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
    pub fn org_context_trusting_token_role(&self, roles: &RoleMapping) -> Option<OrgContext> {
        let (user, org) = self.user_and_org()?;
        let role = roles
            .role_for(self.org_role.as_deref()?, false)
            .min(Role::Admin);
        Some(OrgContext::from_verified_session(org, user, role))
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
        // A custom role in the token maps to least privilege by default.
        let custom = serde_json::json!({"sub": "user_1", "o": {"id": "org_1", "rol": "billing"}});
        let ctx = SessionClaims::from_verified_claims(&custom)
            .unwrap()
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Member);
    }
}
