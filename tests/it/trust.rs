//! The database decides who may act, with which role, and nothing survives a unit.
//!
//! Each attack of the trust issue, tried as an attacker would: through the public API, and with
//! raw SQL inside a unit as a bug or an injection in application code would run it. Isolation
//! cases run as the application role and as the tables' owner. Each defence sits beside a
//! positive control (so a policy that refuses everything cannot pass), and the central ones are
//! also run with the defence removed (`*_without_the_defence`), which shows the attack working:
//! the test would catch the regression.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use pg_tenancy::testing::TestDatabase;
use pg_tenancy::{Error, ErrorKind, OrgContext, OrgId, Role, UserId};

use crate::common::{
    As, World, backend_pid, both_roles, run, service_project_orgs, sqlstate, visible_project_orgs,
    world, world_with,
};

both_roles!(
    forged_context_is_refused_before_the_closure_runs,
    removed_member_and_deleted_organization_are_refused,
    claimed_role_above_the_membership_is_refused,
    member_cannot_escalate_or_manage_with_raw_sql,
    admin_manages_members_but_not_owners,
    last_owner_stays,
    webhook_bookkeeping_is_closed_to_request_units,
    read_unit_cannot_become_read_write,
);

/// `user`'s role in `org`, as the database holds it (through the org's owner).
async fn stored_role(w: &World, owner: &OrgContext, user: &UserId) -> Option<String> {
    w.pool
        .with_rls_read(owner, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT role FROM organization_members WHERE user_id = $1")
                    .bind(user.as_str())
                    .fetch_optional(tx)
                    .await?,
            )
        })
        .await
        .unwrap()
}

async fn owner_conn(db: &TestDatabase) -> PgConnection {
    PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap()
}

fn assert_refused_by_policy(r: Result<u64, Error>, what: &str) {
    let e = r.expect_err(what);
    assert!(e.is_rls_violation(), "{what}: {e}");
}

async fn forged_context_is_refused_before_the_closure_runs(role: As) {
    let w = world(role).await;
    let stranger = UserId::new("user_mallory").unwrap();
    let forged = OrgContext::from_verified_session(w.a.id, stranger.clone(), Role::Owner);
    let elsewhere = OrgContext::from_verified_session(w.a.id, w.b.owner.clone(), Role::Owner);
    for ctx in [&forged, &elsewhere] {
        let ran = AtomicBool::new(false);
        let e = w
            .pool
            .with_rls(ctx, async |_tx| {
                ran.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{e}");
        let e = w
            .pool
            .with_rls_read(ctx, async |_tx| {
                ran.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{e}");
        assert!(!ran.load(Ordering::SeqCst), "the closure never runs");
        assert!(matches!(
            w.pool.begin(ctx).await.unwrap_err(),
            Error::NotAMember
        ));
        assert!(matches!(
            w.pool.begin_read(ctx).await.unwrap_err(),
            Error::NotAMember
        ));
    }
    // add_member with the forged context: refused, nothing written.
    let e = w
        .pool
        .add_member(&forged, &stranger, Role::Owner)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    assert_eq!(
        stored_role(&w, &w.a.ctx(Role::Owner), &stranger).await,
        None
    );
    // Positive control: the real owner adds and the new member is admitted.
    w.pool
        .add_member(&w.a.ctx(Role::Owner), &stranger, Role::Member)
        .await
        .unwrap();
    let now_member = OrgContext::from_verified_session(w.a.id, stranger, Role::Member);
    assert_eq!(run(&w.pool, &now_member, "SELECT 1").await.unwrap(), 1);
}

#[tokio::test]
async fn forged_context_without_the_defence() {
    // The same forged context against an enter function that does not check the membership
    // (the pre-trust behaviour): it reads and writes the organization.
    let w = world(As::App).await;
    let mut owner = owner_conn(&w.db).await;
    owner
        .execute(
            "CREATE OR REPLACE PROCEDURE tenancy_enter(org uuid, member text, required text, \
             act_as_required boolean, session_expected text) \
             LANGUAGE plpgsql AS $$ DECLARE i text; BEGIN \
             i := set_config('app.current_unit', transaction_timestamp()::text, true); \
             i := set_config('app.current_org_id', org::text, true); \
             i := set_config('app.current_user_id', member, true); \
             i := set_config('app.current_org_role', required, true); END $$",
        )
        .await
        .unwrap();
    let forged = OrgContext::from_verified_session(
        w.a.id,
        UserId::new("user_mallory").unwrap(),
        Role::Owner,
    );
    assert_eq!(
        run(&w.pool, &forged, "UPDATE projects SET name = 'defaced'")
            .await
            .unwrap(),
        1
    );
}

async fn removed_member_and_deleted_organization_are_refused(role: As) {
    let w = world(role).await;
    let member = w.a.ctx(Role::Member);
    assert_eq!(run(&w.pool, &member, "SELECT 1").await.unwrap(), 1);
    // The admin removes the member: their context is stale from the next unit on.
    let removed = run(
        &w.pool,
        &w.a.ctx(Role::Admin),
        &format!(
            "DELETE FROM organization_members WHERE user_id = '{}'",
            w.a.member
        ),
    )
    .await
    .unwrap();
    assert_eq!(removed, 1);
    let e = run(&w.pool, &member, "SELECT 1").await.unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    // The owner deletes the organization (soft): nobody is admitted any more.
    assert_eq!(
        run(
            &w.pool,
            &w.a.ctx(Role::Owner),
            "UPDATE organizations SET deleted_at = now()"
        )
        .await
        .unwrap(),
        1
    );
    for ctx in [w.a.ctx(Role::Owner), w.a.ctx(Role::Admin)] {
        let e = run(&w.pool, &ctx, "SELECT 1").await.unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{e}");
        assert!(matches!(
            w.pool.authorize(ctx.user_id(), ctx.org_id()).await,
            Err(Error::NotAMember)
        ));
    }
    // B is untouched.
    assert_eq!(
        run(&w.pool, &w.b.ctx(Role::Member), "SELECT 1")
            .await
            .unwrap(),
        1
    );
}

async fn claimed_role_above_the_membership_is_refused(role: As) {
    let w = world(role).await;
    let claims_owner = OrgContext::from_verified_session(w.a.id, w.a.member.clone(), Role::Owner);
    let e = run(&w.pool, &claims_owner, "SELECT 1").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InsufficientRole {
                required: Role::Owner,
                actual: Role::Member
            }
        ),
        "{e}"
    );
    // What policies see: the context's role when it is not above the membership, the
    // membership's role in with_member.
    let seen = async |ctx: &OrgContext| -> Option<String> {
        w.pool
            .with_rls_read(ctx, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT tenancy_current_org_role()")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap()
    };
    assert_eq!(seen(&w.a.ctx(Role::Admin)).await.as_deref(), Some("admin"));
    let owner_as_member =
        OrgContext::from_verified_session(w.a.id, w.a.owner.clone(), Role::Member);
    assert_eq!(seen(&owner_as_member).await.as_deref(), Some("member"));
    let via_member: Option<String> = w
        .pool
        .with_member(&w.a.owner, w.a.id, Role::Member, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT tenancy_current_org_role()")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(via_member.as_deref(), Some("owner"));
    // A demoted admin's stale context.
    run(
        &w.pool,
        &w.a.ctx(Role::Owner),
        &format!(
            "UPDATE organization_members SET role = 'member' WHERE user_id = '{}'",
            w.a.admin
        ),
    )
    .await
    .unwrap();
    let e = run(&w.pool, &w.a.ctx(Role::Admin), "SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InsufficientRole { .. }), "{e}");
}

async fn member_cannot_escalate_or_manage_with_raw_sql(role: As) {
    let w = world(role).await;
    let m = w.a.ctx(Role::Member);
    let me = &w.a.member;
    let owner = &w.a.owner;
    // Promote self, remove the owner, rename or delete the organization: no row qualifies.
    for sql in [
        format!("UPDATE organization_members SET role = 'owner' WHERE user_id = '{me}'"),
        format!("DELETE FROM organization_members WHERE user_id = '{owner}'"),
        "UPDATE organizations SET name = 'pwned'".to_owned(),
        "DELETE FROM organizations".to_owned(),
    ] {
        assert_eq!(run(&w.pool, &m, &sql).await.unwrap(), 0, "{sql}");
    }
    // Insert an owner (or any) membership for a friend: refused by WITH CHECK.
    assert_refused_by_policy(
        run(
            &w.pool,
            &m,
            "INSERT INTO organization_members (organization_id, user_id, role) \
             SELECT id, 'user_friend', 'owner' FROM organizations",
        )
        .await,
        "member inserts an owner",
    );
    let o = w.a.ctx(Role::Owner);
    assert_eq!(stored_role(&w, &o, me).await.as_deref(), Some("member"));
    assert_eq!(stored_role(&w, &o, owner).await.as_deref(), Some("owner"));
    assert_eq!(
        run(&w.pool, &o, "SELECT 1 FROM projects").await.unwrap(),
        1,
        "projects survive"
    );
    // Positive controls: a member may leave; an admin renames; an owner deletes.
    assert_eq!(
        run(
            &w.pool,
            &m,
            &format!("DELETE FROM organization_members WHERE user_id = '{me}'")
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        run(
            &w.pool,
            &w.a.ctx(Role::Admin),
            "UPDATE organizations SET name = 'Renamed'"
        )
        .await
        .unwrap(),
        1
    );
    // Nobody hard-deletes an organization, its owner included: the row stays as the id's
    // tombstone (marking it deleted is the owner's way; see last_owner_stays).
    assert_eq!(
        run(&w.pool, &o, "DELETE FROM organizations").await.unwrap(),
        0
    );
}

#[tokio::test]
async fn member_escalation_without_the_defence() {
    // With the pre-trust tenant-only policy back on organization_members, the member promotes
    // themselves: the role policies are what stops it.
    let w = world(As::App).await;
    let mut owner = owner_conn(&w.db).await;
    owner
        .execute(
            "CREATE POLICY tenant_isolation ON organization_members \
             USING (organization_id = (SELECT tenancy_current_org_id())) \
             WITH CHECK (organization_id = (SELECT tenancy_current_org_id()))",
        )
        .await
        .unwrap();
    let sql = format!(
        "UPDATE organization_members SET role = 'owner' WHERE user_id = '{}'",
        w.a.member
    );
    assert_eq!(run(&w.pool, &w.a.ctx(Role::Member), &sql).await.unwrap(), 1);
}

async fn admin_manages_members_but_not_owners(role: As) {
    let w = world(role).await;
    let admin = w.a.ctx(Role::Admin);
    let owner = w.a.ctx(Role::Owner);
    let newbie = UserId::new("user_newbie").unwrap();
    // Positive: an admin adds a member and an admin, and removes a member.
    w.pool
        .add_member(&admin, &newbie, Role::Member)
        .await
        .unwrap();
    assert_eq!(
        run(
            &w.pool,
            &admin,
            &format!("UPDATE organization_members SET role = 'admin' WHERE user_id = '{newbie}'")
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        run(
            &w.pool,
            &admin,
            &format!("DELETE FROM organization_members WHERE user_id = '{newbie}'")
        )
        .await
        .unwrap(),
        1
    );
    // Refused: grant owner (insert or promote), touch the owner's row, mark the org deleted.
    assert_refused_by_policy(
        run(
            &w.pool,
            &admin,
            "INSERT INTO organization_members (organization_id, user_id, role) \
             SELECT id, 'user_friend', 'owner' FROM organizations",
        )
        .await,
        "admin inserts an owner",
    );
    assert_refused_by_policy(
        run(
            &w.pool,
            &admin,
            &format!(
                "UPDATE organization_members SET role = 'owner' WHERE user_id = '{}'",
                w.a.member
            ),
        )
        .await,
        "admin promotes to owner",
    );
    for sql in [
        format!(
            "DELETE FROM organization_members WHERE user_id = '{}'",
            w.a.owner
        ),
        format!(
            "UPDATE organization_members SET role = 'member' WHERE user_id = '{}'",
            w.a.owner
        ),
        "DELETE FROM organizations".to_owned(),
    ] {
        assert_eq!(run(&w.pool, &admin, &sql).await.unwrap(), 0, "{sql}");
    }
    assert_refused_by_policy(
        run(
            &w.pool,
            &admin,
            "UPDATE organizations SET deleted_at = now()",
        )
        .await,
        "admin deletes the organization",
    );
    assert!(matches!(
        w.pool.add_member(&admin, &newbie, Role::Owner).await,
        Err(Error::InsufficientRole { .. })
    ));
    // Positive: an owner adds an owner and an admin.
    w.pool
        .add_member(&owner, &UserId::new("user_co_owner").unwrap(), Role::Owner)
        .await
        .unwrap();
    w.pool
        .add_member(&owner, &newbie, Role::Admin)
        .await
        .unwrap();
    assert_eq!(
        stored_role(&w, &owner, &newbie).await.as_deref(),
        Some("admin")
    );
}

async fn last_owner_stays(role: As) {
    let w = world(role).await;
    let owner = w.a.ctx(Role::Owner);
    for sql in [
        format!(
            "UPDATE organization_members SET role = 'admin' WHERE user_id = '{}'",
            w.a.owner
        ),
        format!(
            "DELETE FROM organization_members WHERE user_id = '{}'",
            w.a.owner
        ),
    ] {
        let e = run(&w.pool, &owner, &sql).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{sql}: {e}");
    }
    // With a second owner, the first may leave.
    let co = UserId::new("user_co_owner").unwrap();
    w.pool.add_member(&owner, &co, Role::Owner).await.unwrap();
    assert_eq!(
        run(
            &w.pool,
            &owner,
            &format!(
                "DELETE FROM organization_members WHERE user_id = '{}'",
                w.a.owner
            )
        )
        .await
        .unwrap(),
        1
    );
    let co_ctx = OrgContext::from_verified_session(w.a.id, co.clone(), Role::Owner);
    let e = run(
        &w.pool,
        &co_ctx,
        &format!("DELETE FROM organization_members WHERE user_id = '{co}'"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    // Deleting the whole organization (marking it deleted) is not blocked by the rule.
    assert_eq!(
        run(
            &w.pool,
            &co_ctx,
            "UPDATE organizations SET deleted_at = now()"
        )
        .await
        .unwrap(),
        1
    );
}

async fn webhook_bookkeeping_is_closed_to_request_units(role: As) {
    let w = world(role).await;
    let o = w.a.ctx(Role::Owner);
    for sql in [
        "INSERT INTO webhook_deliveries (organization_id, message_id, event_type) \
         SELECT id, 'msg_future', 'organization.updated' FROM organizations",
        "INSERT INTO membership_tombstones (organization_id, external_id, user_id) \
         SELECT id, 'orgmem_forged', 'user_x' FROM organizations",
    ] {
        let e = run(&w.pool, &o, sql).await.unwrap_err();
        // The application role has no grant: a refusal, classified as the operator's
        // configuration (500), not the client's (403). The owner has the grant but no policy:
        // a row-level security refusal (403).
        match role {
            As::App => {
                assert!(!e.is_rls_violation(), "{sql}: {e}");
                assert_eq!(e.kind(), ErrorKind::Internal, "{sql}: {e}");
            }
            As::Owner => {
                assert!(e.is_rls_violation(), "{sql}: {e}");
                assert_eq!(e.kind(), ErrorKind::Forbidden, "{sql}: {e}");
            }
        }
    }
    // The old prune setting opens nothing.
    let r = w
        .pool
        .with_rls(&o, async |tx| {
            sqlx::query("SELECT set_config('app.webhook_prune_before', 'infinity', true)")
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(
                sqlx::query("DELETE FROM webhook_deliveries")
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await;
    match role {
        As::App => assert_eq!(r.unwrap_err().kind(), ErrorKind::Internal),
        As::Owner => assert_eq!(r.unwrap(), 0),
    }
}

async fn read_unit_cannot_become_read_write(role: As) {
    let w = world(role).await;
    for escape in [
        "SET TRANSACTION READ WRITE",
        "SET LOCAL transaction_read_only = off",
    ] {
        let r = w
            .pool
            .with_rls_read(&w.a.ctx(Role::Owner), async |tx| {
                sqlx::query(AssertSqlSafe(escape)).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM projects")
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await;
        let e = r.unwrap_err();
        assert!(sqlstate(&e).as_deref() == Some("25001"), "{escape}: {e}");
    }
    assert_eq!(
        run(&w.pool, &w.a.ctx(Role::Owner), "SELECT 1 FROM projects")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_session_level_context_is_void_after_its_transaction() {
    if crate::bouncer::skip_session_test("a session-level setting on the pool's one session") {
        return;
    }
    let w = world_with(As::App, 1).await;
    let b = w.b.id;
    w.pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::query("SELECT set_config('app.current_org_id', $1, false)")
                .bind(b.to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "SELECT set_config('app.current_unit', transaction_timestamp()::text, false)",
            )
            .execute(&mut *tx)
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    // The session-level values survived the commit on the pool's only connection...
    let mut conn = w.pool.pool().acquire().await.unwrap();
    let left: String = sqlx::query_scalar("SELECT current_setting('app.current_org_id')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(left, b.to_string());
    // ...but count for nothing outside the transaction that set them.
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    drop(conn);
    // And the next unit sees its own organization only.
    assert_eq!(
        visible_project_orgs(&w.pool, &w.a.ctx(Role::Member))
            .await
            .unwrap(),
        vec![*w.a.id.as_uuid()]
    );
}

#[tokio::test]
async fn a_session_level_context_without_the_defence() {
    if crate::bouncer::skip_session_test("a session-level setting on the pool's one session") {
        return;
    }
    // Without the transaction binding (the pre-trust function), the leftover value opens B.
    let w = world_with(As::App, 1).await;
    let mut owner = owner_conn(&w.db).await;
    owner
        .execute(
            "CREATE OR REPLACE FUNCTION tenancy_current_org_id() RETURNS uuid LANGUAGE sql STABLE \
             AS $$ SELECT nullif(current_setting('app.current_org_id', true), '')::uuid $$",
        )
        .await
        .unwrap();
    let mut conn = w.pool.pool().acquire().await.unwrap();
    sqlx::query("SELECT set_config('app.current_org_id', $1, false)")
        .bind(w.b.id.to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn a_poisoned_session_is_closed_before_the_next_unit() {
    if crate::bouncer::skip_session_test("which backend serves the pool's one connection") {
        return;
    }
    // As the owner, who (unlike the application role) may create temporary tables. SQL-level
    // prepared statements: hardened::hardened_mode_closes_a_session_with_a_planted_statement.
    let w = world_with(As::Owner, 1).await;
    let ctx = w.a.ctx(Role::Member);
    for poison in [
        "CREATE TEMP TABLE organization_members \
         (organization_id uuid, user_id text, role text, created_at timestamptz)",
        "SET search_path = pg_catalog",
    ] {
        let before = backend_pid(&w.pool, &ctx).await;
        // A clean unit keeps its connection.
        assert_eq!(backend_pid(&w.pool, &ctx).await, before);
        w.pool
            .with_rls(&ctx, async |tx| {
                sqlx::query(AssertSqlSafe(poison)).execute(&mut *tx).await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        // The next unit runs, on another backend: the poisoned one was closed.
        assert_ne!(backend_pid(&w.pool, &ctx).await, before, "{poison}");
    }
}

#[tokio::test]
async fn temp_tables_cannot_shadow_tenancy_lookups() {
    // On the session that creates it, a temporary organization_members does not change what
    // tenancy's functions read: they resolve names with pg_temp last. (The owner may create
    // temporary tables; the application role may not, below.)
    let w = world_with(As::Owner, 1).await;
    let mallory = UserId::new("user_mallory").unwrap();
    let mut session = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TEMP TABLE organization_members \
         (organization_id uuid, user_id text, role text, created_at timestamptz)",
    )
    .execute(&mut session)
    .await
    .unwrap();
    sqlx::query("INSERT INTO organization_members VALUES ($1, $2, 'owner', now())")
        .bind(w.b.id.as_uuid())
        .bind(mallory.as_str())
        .execute(&mut session)
        .await
        .unwrap();
    let role_of = async |session: &mut PgConnection, user: &UserId| -> Option<String> {
        sqlx::query_scalar("SELECT tenancy_member_role($1, $2)")
            .bind(w.b.id.as_uuid())
            .bind(user.as_str())
            .fetch_one(session)
            .await
            .unwrap()
    };
    assert_eq!(role_of(&mut session, &mallory).await, None);
    // Control: the same lookup on the same session finds the real owner.
    assert_eq!(
        role_of(&mut session, &w.b.owner).await.as_deref(),
        Some("owner")
    );
    // The application role cannot create one at all (TEMP revoked by the set-up).
    let app = world(As::App).await;
    let e = run(
        &app.pool,
        &app.a.ctx(Role::Member),
        "CREATE TEMP TABLE t (x int)",
    )
    .await
    .unwrap_err();
    // Permission denied (42501 from the privilege check): the set-up's decision, not a
    // policy refusal.
    assert!(sqlstate(&e).as_deref() == Some("42501"), "{e}");
    assert!(!e.is_rls_violation());
}

#[tokio::test]
async fn a_replaced_prepared_statement_cannot_fake_authorize() {
    let w = world_with(As::App, 1).await;
    let stranger = UserId::new("user_mallory").unwrap();
    w.pool.authorize(&w.a.owner, w.a.id).await.unwrap();
    // Replace every statement the driver prepared on this session with one that answers
    // 'owner', as an injection could.
    w.pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            let names: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, coalesce(array_to_string(parameter_types::text[], ','), '') \
                 FROM pg_prepared_statements WHERE NOT from_sql",
            )
            .fetch_all(&mut *tx)
            .await?;
            for (name, types) in names {
                let sql = format!(
                    "DEALLOCATE \"{name}\"; PREPARE \"{name}\" ({types}) AS SELECT 'owner'::text"
                );
                tx.execute(AssertSqlSafe(sql.replace(" ()", ""))).await?;
            }
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let e = w.pool.authorize(&stranger, w.a.id).await.unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    assert_eq!(
        w.pool.authorize(&w.a.owner, w.a.id).await.unwrap().role(),
        Role::Owner
    );
}

#[tokio::test]
async fn service_units_are_out_of_reach_of_request_code() {
    let w = world(As::App).await;
    // The application role cannot enter a service unit, not even with raw SQL...
    let e = run(
        &w.pool,
        &w.a.ctx(Role::Owner),
        &format!(
            "CALL tenancy_enter_service('{}', current_setting('search_path'), current_setting('search_path'))",
            w.b.id
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // ...nor wrap its pool as a service pool.
    let e = pg_tenancy::ServicePool::new(w.pool.pool().clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAServiceRole { .. }), "{e}");
    // Positive control: the service role acts inside one organization, and only there.
    let service = w.db.service_pool(1).await.unwrap();
    assert_eq!(
        service_project_orgs(&service, w.b.id).await,
        vec![*w.b.id.as_uuid()]
    );
}

#[tokio::test]
async fn bootstrap_only_creates_new_organizations() {
    let w = world(As::App).await;
    let mallory = UserId::new("user_mallory").unwrap();
    let e = w
        .pool
        .create_organization(w.a.id, "Hijack", None, &mallory)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    // An injection calling the bootstrap entry inside a unit is refused: the transaction has
    // already entered a unit (TNC09).
    let e = run(
        &w.pool,
        &w.b.ctx(Role::Member),
        &format!(
            "CALL tenancy_enter_new_organization('{}', '{mallory}', \
             current_setting('search_path'), current_setting('search_path'))",
            w.a.id
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("TNC09"), "{e}");
    assert!(matches!(
        w.pool.authorize(&mallory, w.a.id).await,
        Err(Error::NotAMember)
    ));
    // Positive control: a new id works and its creator is the owner.
    let fresh = OrgId::from_uuid(uuid::Uuid::new_v4());
    let ctx = w
        .pool
        .create_organization(fresh, "Fresh", None, &mallory)
        .await
        .unwrap();
    assert_eq!(
        w.pool.authorize(&mallory, fresh).await.unwrap().role(),
        Role::Owner
    );
    assert_eq!(ctx.role(), Role::Owner);
}
