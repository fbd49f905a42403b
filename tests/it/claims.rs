//! Memberships a verified session token claims before the webhook arrives
//! (`web::Tenancy::with_token_memberships`): applied through the service path, capped at admin,
//! and never after a removal recorded since the token was issued, nor for a deleted
//! organization.

use pg_tenancy::web::{ApiError, MembershipClaim, Session, SessionVerifier, Tenancy};
use pg_tenancy::{ErrorKind, OrgId, Role, UserId};

use crate::common::{As, World, both_roles, world};

/// The claims path is exercised without tokens: sessions are built by hand.
struct NoTokens;

#[async_trait::async_trait]
impl SessionVerifier for NoTokens {
    async fn verify(&self, _: &str) -> Result<Session, ApiError> {
        Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "no_tokens",
            "none",
        ))
    }
}

async fn tenancy(w: &World) -> Tenancy {
    let service = w.db.service_pool(2).await.unwrap();
    Tenancy::new(w.pool.clone(), NoTokens).with_token_memberships(service)
}

fn session(external: &str, user: &UserId, role: Role, issued_at: i64) -> Session {
    Session::new(user.clone(), Some(OrgId::from_external_id(external)))
        .with_claim(MembershipClaim::new(external, role, issued_at))
}

fn now() -> i64 {
    crate::common::unix_now()
}

async fn admitted(t: &Tenancy, s: &Session) -> Result<Role, &'static str> {
    t.org_context(s)
        .await
        .map(|c| c.role())
        .map_err(|e| e.code())
}

both_roles!(
    a_claimed_membership_is_applied_capped_at_admin,
    a_removal_after_the_token_was_issued_blocks_the_claim,
    a_deleted_organization_is_never_brought_back_by_a_claim,
);

async fn a_claimed_membership_is_applied_capped_at_admin(role: As) {
    let w = world(role).await;
    let newcomer = UserId::new("user_newcomer").unwrap();
    let s = session("org_alpha", &newcomer, Role::Owner, now());
    // Without the option: the database does not know the membership.
    let plain = Tenancy::new(w.pool.clone(), NoTokens);
    assert_eq!(admitted(&plain, &s).await, Err("not_a_member"));
    // With it: applied, as admin at most, and the database admits it from then on.
    let t = tenancy(&w).await;
    assert_eq!(admitted(&t, &s).await, Ok(Role::Admin));
    assert_eq!(
        w.pool.authorize(&newcomer, w.a.id).await.unwrap().role(),
        Role::Admin
    );
    // A member claim for an existing member changes nothing (the database's role holds).
    let s = session("org_alpha", &w.a.member, Role::Admin, now());
    assert_eq!(admitted(&t, &s).await, Ok(Role::Member));
    // A claim for another organization than the session's active one is not applied.
    let mut odd = session("org_alpha", &newcomer, Role::Member, now());
    odd.org_id = Some(w.b.id);
    assert_eq!(admitted(&t, &odd).await, Err("not_a_member"));
    assert!(w.pool.authorize(&newcomer, w.b.id).await.is_err());
}

async fn a_removal_after_the_token_was_issued_blocks_the_claim(role: As) {
    let w = world(role).await;
    let t = tenancy(&w).await;
    let before = now() - 10;
    // The owner removes the member.
    w.pool
        .with_rls(&w.a.ctx(Role::Owner), async |tx| {
            sqlx::query("DELETE FROM organization_members WHERE user_id = $1")
                .bind(&w.a.member)
                .execute(tx)
                .await?;
            Ok::<_, pg_tenancy::Error>(())
        })
        .await
        .unwrap();
    // A token issued before the removal cannot restore it...
    let stale = session("org_alpha", &w.a.member, Role::Member, before);
    assert_eq!(admitted(&t, &stale).await, Err("not_a_member"));
    assert!(w.pool.authorize(&w.a.member, w.a.id).await.is_err());
    // ...one issued after it (re-invited) is applied.
    let fresh = session("org_alpha", &w.a.member, Role::Member, now() + 2);
    assert_eq!(admitted(&t, &fresh).await, Ok(Role::Member));
}

async fn a_deleted_organization_is_never_brought_back_by_a_claim(role: As) {
    let w = world(role).await;
    let t = tenancy(&w).await;
    let before = now() - 10;
    let newcomer = UserId::new("user_newcomer").unwrap();
    // Soft-deleted (as the sync and the owner do): refused, whenever the token was issued.
    w.pool
        .with_rls(&w.a.ctx(Role::Owner), async |tx| {
            sqlx::query("UPDATE organizations SET deleted_at = now()")
                .execute(tx)
                .await?;
            Ok::<_, pg_tenancy::Error>(())
        })
        .await
        .unwrap();
    for user in [&newcomer, &w.a.admin] {
        let s = session("org_alpha", user, Role::Member, now() + 2);
        assert_eq!(admitted(&t, &s).await, Err("not_a_member"));
    }
    // Purged (its data deleted by a service operation that keeps its row): its members' tokens
    // from before cannot recreate it. (A hard DELETE is refused to everyone.)
    let purger = w.db.service_pool(1).await.unwrap();
    purger.purge_organization(w.b.id).await.unwrap();
    let stale = session("org_beta", &w.b.admin, Role::Admin, before);
    assert_eq!(admitted(&t, &stale).await, Err("not_a_member"));
    let service = w.db.service_pool(1).await.unwrap();
    let (live, rows, projects): (i64, i64, i64) = service
        .with_org(w.b.id, async |tx| {
            Ok::<_, pg_tenancy::Error>(
                sqlx::query_as(
                    "SELECT (SELECT count(*) FROM organizations WHERE deleted_at IS NULL), \
                            (SELECT count(*) FROM organizations), \
                            (SELECT count(*) FROM projects)",
                )
                .fetch_one(tx)
                .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        (live, rows, projects),
        (0, 1, 0),
        "not recreated; purged; tombstone kept"
    );
    // Positive control: an organization the database has never seen (created in the identity
    // provider a moment ago) gets a placeholder row and the member.
    let s = session("org_brand_new", &newcomer, Role::Admin, now());
    assert_eq!(admitted(&t, &s).await, Ok(Role::Admin));
}
