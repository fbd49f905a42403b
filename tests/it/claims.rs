//! Memberships a verified session token claims before the webhook arrives
//! (`web::Tenancy::with_token_memberships`): applied through the service path, capped at admin;
//! never after the provider's removal recorded since the token was issued (whatever the order
//! of its events), never after a removal made in the application (until the provider confirms
//! a newer membership), never for a deleted organization (also one deleted while the claim is
//! being applied).

use pg_tenancy::clerk::{ClerkSync, Event, Outcome};
use pg_tenancy::web::{ApiError, MembershipClaim, Session, SessionVerifier, Tenancy};
use pg_tenancy::webhook::Verifier;
use pg_tenancy::{ErrorKind, OrgId, Role, UserId};
use serde_json::json;

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

/// The webhook sync of the same database, fed parsed events (signatures are `clerk::`'s
/// tests).
async fn sync(w: &World) -> ClerkSync {
    let service = w.db.service_pool(2).await.unwrap();
    ClerkSync::new(
        service,
        Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
    )
}

/// A Clerk membership event (`kind`: created, updated, deleted) of `user` in `org`, membership
/// `membership` created at `created_ms` (unix ms). The embedded organization is an old
/// snapshot without a slug.
fn membership_event(
    kind: &str,
    org: &str,
    membership: &str,
    user: &UserId,
    created_ms: i64,
) -> Event {
    let body = json!({
        "type": format!("organizationMembership.{kind}"),
        "object": "event",
        "data": {
            "object": "organization_membership", "id": membership, "role": "org:member",
            "organization": {"object": "organization", "id": org, "name": org, "slug": null,
                             "created_by": "user_founder", "created_at": 1_700_000_000_000i64,
                             "updated_at": 1_700_000_000_000i64},
            "public_user_data": {"user_id": user.as_str()},
            "created_at": created_ms, "updated_at": created_ms,
        },
    });
    Event::parse(body.to_string().as_bytes()).unwrap()
}

both_roles!(
    a_claimed_membership_is_applied_capped_at_admin,
    a_removal_after_the_token_was_issued_blocks_the_claim,
    a_local_removal_stands_until_the_provider_confirms_a_newer_membership,
    a_removal_delivered_before_the_creation_blocks_the_claim,
    a_claim_racing_the_organizations_deletion_waits_for_it,
    a_deleted_organization_is_never_brought_back_by_a_claim,
    request_code_cannot_undo_a_removal_whatever_it_is_granted,
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
    let sync = sync(&w).await;
    let before = now() - 10;
    let user = UserId::new("user_provider_removed").unwrap();
    let joined = (now() - 3600) * 1000;
    // The provider adds the user, then removes them (both delivered, in order).
    for (id, kind) in [("m1", "created"), ("m2", "deleted")] {
        let e = membership_event(kind, "org_alpha", "orgmem_p1", &user, joined);
        assert_eq!(
            sync.apply(id, &e).await.unwrap(),
            Outcome::Applied,
            "{kind}"
        );
    }
    // A token issued before the removal cannot restore it...
    let stale = session("org_alpha", &user, Role::Member, before);
    assert_eq!(admitted(&t, &stale).await, Err("not_a_member"));
    assert!(w.pool.authorize(&user, w.a.id).await.is_err());
    // ...one issued after it (re-invited in the provider, webhook not yet here) is applied.
    let fresh = session("org_alpha", &user, Role::Member, now() + 2);
    assert_eq!(admitted(&t, &fresh).await, Ok(Role::Member));
}

async fn a_local_removal_stands_until_the_provider_confirms_a_newer_membership(role: As) {
    let w = world(role).await;
    let t = tenancy(&w).await;
    let sync = sync(&w).await;
    let joined = (now() - 3600) * 1000;
    // The owner removes the member in the application; the provider still lists them.
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
    // Tokens issued before and after the removal all still claim the membership: none is
    // applied.
    for issued_at in [now() - 10, now() + 2] {
        let s = session("org_alpha", &w.a.member, Role::Member, issued_at);
        assert_eq!(
            admitted(&t, &s).await,
            Err("not_a_member"),
            "iat {issued_at}"
        );
    }
    // Nor does the provider's event about the membership the owner removed (created before
    // the removal).
    // (The event is applied: its organization snapshot replaces the application's row.)
    let old = membership_event("updated", "org_alpha", "orgmem_old", &w.a.member, joined);
    sync.apply("u1", &old).await.unwrap();
    assert!(w.pool.authorize(&w.a.member, w.a.id).await.is_err());
    // A membership the provider created after the removal (invited again) brings them back.
    let again = membership_event(
        "created",
        "org_alpha",
        "orgmem_new",
        &w.a.member,
        (now() + 1) * 1000,
    );
    assert_eq!(sync.apply("c1", &again).await.unwrap(), Outcome::Applied);
    assert_eq!(
        w.pool.authorize(&w.a.member, w.a.id).await.unwrap().role(),
        Role::Member
    );
    // Positive control: a member nobody removed is claimed as before.
    let newcomer = UserId::new("user_newcomer").unwrap();
    let s = session("org_alpha", &newcomer, Role::Member, now());
    assert_eq!(admitted(&t, &s).await, Ok(Role::Member));
}

async fn a_removal_delivered_before_the_creation_blocks_the_claim(role: As) {
    let w = world(role).await;
    let t = tenancy(&w).await;
    let sync = sync(&w).await;
    let user = UserId::new("user_late").unwrap();
    let joined = (now() - 3600) * 1000;
    let issued = now() - 5; // while the membership existed in the provider
    // The provider created, then deleted, the membership; the deletion arrives first.
    let deleted = membership_event("deleted", "org_gamma", "orgmem_g1", &user, joined);
    assert_eq!(sync.apply("d1", &deleted).await.unwrap(), Outcome::Applied);
    // The user's token from before the removal claims it: refused.
    let s = session("org_gamma", &user, Role::Admin, issued);
    assert_eq!(admitted(&t, &s).await, Err("not_a_member"));
    // The late creation is dropped by the tombstone; the claim stays refused.
    let created = membership_event("created", "org_gamma", "orgmem_g1", &user, joined);
    assert_eq!(
        sync.apply("c1", &created).await.unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(admitted(&t, &s).await, Err("not_a_member"));
    let gamma = OrgId::from_external_id("org_gamma");
    assert!(w.pool.authorize(&user, gamma).await.is_err());
    // Positive control: another user's claim in the same organization, same token age.
    let other = UserId::new("user_other").unwrap();
    let s = session("org_gamma", &other, Role::Admin, issued);
    assert_eq!(admitted(&t, &s).await, Ok(Role::Admin));
}

async fn a_claim_racing_the_organizations_deletion_waits_for_it(role: As) {
    let w = world(role).await;
    let t = tenancy(&w).await;
    let deleter = w.db.service_pool(1).await.unwrap();
    let newcomer = UserId::new("user_racing").unwrap();
    let (deleted_tx, deleted_rx) = tokio::sync::oneshot::channel::<()>();
    let (commit_tx, commit_rx) = tokio::sync::oneshot::channel::<()>();
    // A service unit marks the organization deleted (its members go), then waits before
    // committing...
    let deletion = deleter.with_org(w.a.id, async |tx| {
        sqlx::query("UPDATE organizations SET deleted_at = now()")
            .execute(&mut *tx)
            .await?;
        deleted_tx.send(()).unwrap();
        commit_rx.await.unwrap();
        Ok::<_, pg_tenancy::Error>(())
    });
    // ...while a claim for the organization is applied...
    let claim = async {
        deleted_rx.await.unwrap();
        let s = session("org_alpha", &newcomer, Role::Member, now());
        let outcome = admitted(&t, &s).await;
        (outcome, std::time::Instant::now())
    };
    // ...and the deletion commits a moment later.
    let commit = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        commit_tx.send(()).unwrap();
        std::time::Instant::now()
    };
    let (deletion, (outcome, claimed_at), committed_at) = tokio::join!(deletion, claim, commit);
    deletion.unwrap();
    // The claim waited for the deletion, saw it, and added nobody.
    assert_eq!(outcome, Err("not_a_member"));
    assert!(claimed_at >= committed_at, "the claim did not wait");
    let members: i64 =
        w.db.service_pool(1)
            .await
            .unwrap()
            .with_org(w.a.id, async |tx| {
                Ok::<_, pg_tenancy::Error>(
                    sqlx::query_scalar("SELECT count(*) FROM organization_members")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
    assert_eq!(members, 0, "a membership in a deleted organization");
    // Positive control: the same claim in the live organization is applied.
    let s = session("org_beta", &newcomer, Role::Member, now());
    assert_eq!(admitted(&t, &s).await, Ok(Role::Member));
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

async fn request_code_cannot_undo_a_removal_whatever_it_is_granted(role: As) {
    let w = world(role).await;
    let t = tenancy(&w).await;
    // The common shortcut: every table of the schema granted to the application role.
    w.db.grant_app(&["membership_removals"]).await.unwrap();
    let owner = w.a.ctx(Role::Owner);
    let run = async |sql: &'static str| {
        w.pool
            .with_rls(&owner, async |tx| {
                Ok::<_, pg_tenancy::Error>(
                    sqlx::query(sql)
                        .bind(&w.a.member)
                        .execute(tx)
                        .await?
                        .rows_affected(),
                )
            })
            .await
    };
    assert_eq!(
        run("DELETE FROM organization_members WHERE user_id = $1")
            .await
            .unwrap(),
        1
    );
    // Passing the local removal off as the provider's (which a newer token overrides), or
    // deleting it: refused, or nothing to delete in a live organization.
    let e =
        run("UPDATE membership_removals SET local = false, removed_at = now() WHERE user_id = $1")
            .await
            .unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    assert_eq!(
        run("DELETE FROM membership_removals WHERE user_id = $1")
            .await
            .unwrap(),
        0
    );
    let e = run(
        "INSERT INTO membership_removals (organization_id, user_id, removed_at, local) \
         SELECT id, $1, now(), false FROM organizations \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET local = false",
    )
    .await
    .unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    // The removal stands against a newer token...
    let s = session("org_alpha", &w.a.member, Role::Member, now() + 2);
    assert_eq!(admitted(&t, &s).await, Err("not_a_member"));
    // ...and refreshing it as local is allowed (it only refuses more).
    assert_eq!(
        run("UPDATE membership_removals SET removed_at = now() WHERE user_id = $1")
            .await
            .unwrap(),
        1
    );
}
