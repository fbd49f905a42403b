//! A membership a verified session token claims, and applying it before the identity
//! provider's webhook arrives (the web layer's "just joined" path,
//! [`Tenancy::with_token_memberships`](crate::web::Tenancy::with_token_memberships)).
//!
//! The claim is applied through the service path, in one unit in that organization: never for
//! a deleted organization (the unit locks the organization's row, so a deletion committing
//! meanwhile is waited for and seen); never after a removal made in the application (the
//! identity provider still lists the member: a local removal stands until the provider
//! confirms a newer membership through the webhook); never if the provider's removal of that
//! user from that organization was recorded at or after the token's `iat`, whatever the order
//! in which its events arrived; with the role capped at admin; and with a placeholder
//! organization row when the database has never seen it. Framework-free: the web adapters
//! reach it through [`Tenancy`](crate::web::Tenancy) only.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::ids::{OrgId, UserId};
use crate::{Role, ServicePool};

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

/// A request's membership claim, carried by its [`OrgContext`](crate::OrgContext) until a unit's
/// entry finds no membership: then it is applied, once per request.
#[derive(Debug)]
pub(crate) struct PendingClaim {
    service: ServicePool,
    claim: MembershipClaim,
    tried: AtomicBool,
}

impl PendingClaim {
    pub(crate) fn new(service: ServicePool, claim: MembershipClaim) -> Self {
        PendingClaim {
            service,
            claim,
            tried: AtomicBool::new(false),
        }
    }

    /// Applies the claim for `user` in `org` ([`apply`]) the first time it is asked; `false`
    /// when it must not be, or was asked before.
    pub(crate) async fn apply_once(&self, org: OrgId, user: &UserId) -> Result<bool, Error> {
        if self.tried.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        apply(&self.service, org, user, &self.claim).await
    }
}

/// Applies `claim`, for `user` in `org`, in one service unit; `false` when it must not be (see
/// the module docs).
pub(crate) async fn apply(
    service: &ServicePool,
    org: OrgId,
    user: &UserId,
    claim: &MembershipClaim,
) -> Result<bool, Error> {
    service
        .with_org(org, async |tx| {
            // FOR SHARE: an `organization.deleted` (or an owner's deletion) that has not
            // committed yet is waited for, then seen; one that starts later waits for this
            // unit, and its own deletion of the members removes what this unit adds.
            let lock_org =
                "SELECT deleted_at IS NOT NULL FROM organizations WHERE id = $1 FOR SHARE";
            let deleted: Option<bool> = sqlx::query_scalar(lock_org)
                .bind(org)
                .fetch_optional(&mut *tx)
                .await?;
            if deleted == Some(true) {
                return Ok(false);
            }
            // Before anything is written: a unit that answers `false` still commits.
            let removed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM membership_removals \
                 WHERE organization_id = $1 AND user_id = $2 \
                   AND (local OR removed_at >= to_timestamp($3)))",
            )
            .bind(org)
            .bind(user)
            .bind(claim.issued_at as f64)
            .fetch_one(&mut *tx)
            .await?;
            if removed {
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
                // A deletion that inserted the row meanwhile (the sync's `organization.deleted`
                // for an organization never seen) made the insert do nothing: look again,
                // under the same lock.
                let deleted: bool = sqlx::query_scalar(lock_org)
                    .bind(org)
                    .fetch_one(&mut *tx)
                    .await?;
                if deleted {
                    return Ok(false);
                }
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
