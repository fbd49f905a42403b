//! What the second adversarial review of the SQL layer found (issue 19), each defence beside a
//! positive control: re-entering a unit, switching it through a function, asking about other
//! organizations' members, triggers under a context changed mid-statement, session and role
//! settings left for the next borrower, and a lock that would stall every entry. Then what a
//! third read found (docs/security.md): the signed entry's and `authorize`'s lock timeout, an
//! owner undeleting their organization, a provider organization's slug and the slug oracle
//! that remains, and an owner acting with a lower role who could not leave. (The third read's
//! `pg_stat_statements` replay is in `hardened.rs`.)

use std::time::{Duration, Instant};

use pg_tenancy::{ContextKey, Error, OrgContext, Role, TenantPool};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::common::{As, World, backend_pid, run, sqlstate, world, world_with};

fn code(r: Result<u64, Error>) -> Option<String> {
    sqlstate(&r.expect_err("refused"))
}

#[tokio::test]
async fn sql_inside_a_unit_cannot_enter_again_switch_or_ask_about_others() {
    let w = world(As::App).await;
    let member = w.a.ctx(Role::Member);
    let settings = "current_setting('search_path'), current_setting('search_path')";
    // Re-entering as A's owner, as anyone in the switcher, or bootstrapping: TNC09.
    for sql in [
        format!(
            "CALL tenancy_enter('{}', '{}', 'owner', true, tenancy_session_settings())",
            w.a.id, w.a.owner
        ),
        format!("CALL tenancy_enter_user('{}', {settings})", w.b.owner),
        format!("SELECT tenancy_member_role('{}', '{}')", w.b.id, w.b.owner),
    ] {
        assert_eq!(
            code(run(&w.pool, &member, &sql).await).as_deref(),
            Some("TNC09"),
            "{sql}"
        );
    }
    // The context setter is not the application role's to call (42501).
    let e = run(
        &w.pool,
        &member,
        &format!(
            "SELECT tenancy_set_context('{}', '{}', 'owner')",
            w.b.id, w.b.owner
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    // Positive controls: the same entry and lookup outside a unit admit and answer.
    assert_eq!(
        w.pool.authorize(&w.b.owner, w.b.id).await.unwrap().role(),
        Role::Owner
    );
    assert_eq!(
        run(&w.pool, &w.a.ctx(Role::Owner), "SELECT 1")
            .await
            .unwrap(),
        1
    );
}

/// `RETURNING set_config(...)` runs after the WITH CHECK policies and before the AFTER ROW
/// triggers: the triggers refuse to act under the changed context (TNC10), in both modes.
#[tokio::test]
async fn triggers_refuse_a_context_changed_inside_the_statement() {
    for hardened in [false, true] {
        let w = world(As::App).await;
        let pool = if hardened {
            w.db.harden(&ContextKey::generate(), 2).await.unwrap()
        } else {
            w.pool.clone()
        };
        let owner = w.a.ctx(Role::Owner);
        let clear = "RETURNING set_config('app.current_org_id', '', true)";
        // The last owner demoting themselves.
        let demote = format!(
            "UPDATE organization_members SET role = 'member' WHERE user_id = '{}'",
            w.a.owner
        );
        assert_eq!(
            code(run(&pool, &owner, &format!("{demote} {clear}")).await).as_deref(),
            Some("TNC10"),
            "hardened {hardened}"
        );
        // Control: without the trick the same statement meets the last-owner rule (TNC03).
        assert_eq!(
            code(run(&pool, &owner, &demote).await).as_deref(),
            Some("TNC03")
        );
        // Marking the organization deleted while its memberships would survive.
        let delete = "UPDATE organizations SET deleted_at = now()";
        assert_eq!(
            code(run(&pool, &owner, &format!("{delete} {clear}")).await).as_deref(),
            Some("TNC10"),
            "hardened {hardened}"
        );
        // Control: the plain soft delete works, and its members are no longer admitted.
        assert_eq!(run(&pool, &owner, delete).await.unwrap(), 1);
        assert!(matches!(
            pool.authorize(&w.a.member, w.a.id).await,
            Err(Error::NotAMember)
        ));
    }
}

#[tokio::test]
async fn a_deleted_organization_is_refused_by_the_entry_itself() {
    let w = world(As::Owner).await;
    // Mark it deleted as the table owner with FORCE and the triggers lifted for one statement,
    // so that the memberships stay (what a trigger would have removed): the entry alone must
    // refuse.
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(AssertSqlSafe(format!(
            "BEGIN; ALTER TABLE organizations NO FORCE ROW LEVEL SECURITY; \
             ALTER TABLE organizations DISABLE TRIGGER USER; \
             UPDATE organizations SET deleted_at = now() WHERE id = '{}'; \
             ALTER TABLE organizations ENABLE TRIGGER USER; \
             ALTER TABLE organizations FORCE ROW LEVEL SECURITY; COMMIT",
            w.a.id
        )))
        .await
        .unwrap();
    let e = run(&w.pool, &w.a.ctx(Role::Member), "SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    assert!(matches!(
        w.pool.authorize(&w.a.member, w.a.id).await,
        Err(Error::NotAMember)
    ));
    // Control: the other organization is admitted.
    assert_eq!(
        run(&w.pool, &w.b.ctx(Role::Member), "SELECT 1")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn nobody_hard_deletes_an_organization_and_a_purge_keeps_its_id() {
    let w = world(As::App).await;
    assert_eq!(
        run(&w.pool, &w.a.ctx(Role::Owner), "DELETE FROM organizations")
            .await
            .unwrap(),
        0
    );
    let service = w.db.service_pool(1).await.unwrap();
    let hard = service
        .with_org(w.a.id, async |tx| {
            Ok::<_, Error>(
                sqlx::query("DELETE FROM organizations")
                    .execute(tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await
        .unwrap();
    assert_eq!(hard, 0, "not even a service unit");
    // The purge deletes A's data (its project) and keeps its row: the id stays taken.
    assert_eq!(service.purge_organization(w.a.id).await.unwrap(), 1);
    let e = w
        .pool
        .create_organization(w.a.id, "Again", None, &w.b.owner)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pg_tenancy::ErrorKind::Conflict, "{e}");
    // Control: B's data is untouched, and a new id bootstraps.
    assert_eq!(
        crate::common::visible_project_orgs(&w.pool, &w.b.ctx(Role::Member))
            .await
            .unwrap()
            .len(),
        1
    );
    w.pool
        .create_organization(
            pg_tenancy::OrgId::from_external_id("org_new"),
            "New",
            None,
            &w.b.owner,
        )
        .await
        .unwrap();
}

/// A unit that leaves session-level settings on its pooled connection changes nothing for the
/// next unit: the transaction defaults are voided by the BEGIN, which names its mode; changed
/// timeouts (and the other settings every entry compares) close the connection (TNC05).
#[tokio::test]
async fn settings_left_on_a_session_change_nothing_for_the_next_unit() {
    let w: World = world_with(As::App, 1).await;
    let (a, b) = (w.a.ctx(Role::Member), w.b.ctx(Role::Member));
    let state = async |pool: &TenantPool, ctx: &OrgContext| -> (String, String, i32) {
        pool.with_rls(ctx, async |tx| {
            let row: (String, String, i32) = sqlx::query_as(
                "SELECT current_setting('transaction_read_only'), \
                        current_setting('transaction_isolation'), pg_backend_pid()",
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_sleep(0.05)")
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(row)
        })
        .await
        .unwrap()
    };
    let (_, _, first) = state(&w.pool, &a).await;
    run(
        &w.pool,
        &a,
        "SELECT set_config('default_transaction_read_only', 'on', false), \
                set_config('default_transaction_isolation', 'serializable', false)",
    )
    .await
    .unwrap();
    let (read_only, isolation, pid) = state(&w.pool, &b).await;
    assert_eq!(
        (read_only.as_str(), isolation.as_str()),
        ("off", "read committed")
    );
    assert_eq!(pid, first, "voided, not refused: the connection stays");
    // Control: the same defaults on a plain session make its next transaction read-only.
    let mut plain = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    plain
        .execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    let mut tx = plain.begin().await.unwrap();
    let ro: String = sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(ro, "on");
    drop(tx);
    // A timeout left at session level: the next entry refuses the session and the pool
    // serves the unit on a new connection, without the timeout.
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(w.pool.pool())
        .await
        .unwrap();
    // (transaction_timeout, from PostgreSQL 17 on: it would end the next unit's connection.)
    let transaction_timeout =
        (version >= 170_000).then_some("SELECT set_config('transaction_timeout', '100ms', false)");
    for poison in [
        "SELECT set_config('statement_timeout', '10ms', false)",
        "SELECT set_config('lock_timeout', '1ms', false)",
        // (The throwaway cluster runs with synchronous_commit off; any other value is a change.)
        "SELECT set_config('synchronous_commit', 'local', false)",
        "SELECT set_config('row_security', 'off', false)",
        "SELECT set_config('exit_on_error', 'on', false)",
        "SELECT set_config('TimeZone', 'Pacific/Chatham', false)",
        "SELECT set_config('DateStyle', 'SQL, DMY', false)",
        "SELECT set_config('IntervalStyle', 'iso_8601', false)",
        "SELECT set_config('bytea_output', 'escape', false)",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config('array_nulls', 'off', false)",
        "SELECT set_config('extra_float_digits', '-15', false)",
    ]
    .into_iter()
    .chain(transaction_timeout)
    {
        let before = backend_pid(&w.pool, &a).await;
        run(&w.pool, &a, poison).await.unwrap();
        let (_, _, after) = state(&w.pool, &b).await;
        assert_ne!(
            after, before,
            "{poison}: the poisoned connection was closed"
        );
    }
}

#[tokio::test]
async fn a_pool_refuses_a_role_whose_role_level_settings_change_units() {
    let w = world(As::App).await;
    // One injected statement sets a default for the application role itself.
    run(
        &w.pool,
        &w.a.ctx(Role::Member),
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on",
    )
    .await
    .unwrap();
    let pool = || async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(w.db.app_options())
            .await
            .unwrap()
    };
    let e = TenantPool::new(pool().await).await.unwrap_err();
    assert!(
        matches!(&e, Error::UnsafeRoleSettings { settings, .. } if settings == "default_transaction_read_only"),
        "{e}"
    );
    // Control: once reset, the pool starts.
    let mut app = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    // (A new connection of the role is read-only now: that is the damage.)
    app.execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    app.execute("ALTER ROLE CURRENT_USER RESET ALL")
        .await
        .unwrap();
    TenantPool::new(pool().await).await.unwrap();
}

/// A unit holding `ACCESS EXCLUSIVE` on organization_members (its UPDATE grant allows the
/// lock) stalls no other organization's entry for longer than the entry's lock timeout.
#[tokio::test]
async fn a_lock_on_the_memberships_stalls_no_entry_for_long() {
    let w = world_with(As::App, 3).await;
    let mut holder = w.pool.begin(&w.a.ctx(Role::Admin)).await.unwrap();
    sqlx::query("LOCK TABLE organization_members IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = Instant::now();
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        run(&w.pool, &w.b.ctx(Role::Member), "SELECT 1"),
    )
    .await
    .expect("the entry waited unboundedly")
    .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Control: once the lock is gone, the entry is admitted.
    holder.rollback().await.unwrap();
    assert_eq!(
        run(&w.pool, &w.b.ctx(Role::Member), "SELECT 1")
            .await
            .unwrap(),
        1
    );
}

/// An entry or a lookup, started and awaited later.
type Attempt<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;

/// The signed entry of hardened mode and `authorize`'s lookup (both modes) wait on a unit's
/// `LOCK TABLE organization_members` at most 2 s, like the default entry above: 55P03, then
/// admitted once the lock is gone (the control).
#[tokio::test]
async fn a_lock_on_the_memberships_stalls_no_signed_entry_and_no_lookup_for_long() {
    let w = world_with(As::App, 3).await;
    let timed = async |what: &str, attempt: Attempt<'_>| {
        let started = Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .unwrap_or_else(|_| panic!("{what} waited unboundedly"))
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{what}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: {:?}",
            started.elapsed()
        );
    };
    let lock = async |pool: &TenantPool| {
        let mut holder = pool.begin(&w.a.ctx(Role::Admin)).await.unwrap();
        sqlx::query("LOCK TABLE organization_members IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *holder)
            .await
            .unwrap();
        holder
    };
    let authorize = |pool: &TenantPool| {
        let pool = pool.clone();
        let (user, org) = (w.b.member.clone(), w.b.id);
        Box::pin(async move { pool.authorize(&user, org).await.map(|_| ()) }) as Attempt<'static>
    };
    // Default mode: authorize.
    let holder = lock(&w.pool).await;
    timed("authorize", authorize(&w.pool)).await;
    holder.rollback().await.unwrap();
    assert_eq!(
        w.pool.authorize(&w.b.member, w.b.id).await.unwrap().role(),
        Role::Member
    );
    // Hardened mode: the signed entry and the signed lookup.
    let hardened = w.db.harden(&ContextKey::generate(), 3).await.unwrap();
    let holder = lock(&hardened).await;
    let entry = {
        let pool = hardened.clone();
        let ctx = w.b.ctx(Role::Member);
        Box::pin(async move { run(&pool, &ctx, "SELECT 1").await.map(|_| ()) }) as Attempt<'static>
    };
    timed("the signed entry", entry).await;
    timed("the signed authorize", authorize(&hardened)).await;
    holder.rollback().await.unwrap();
    assert_eq!(
        run(&hardened, &w.b.ctx(Role::Member), "SELECT 1")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        hardened
            .authorize(&w.b.member, w.b.id)
            .await
            .unwrap()
            .role(),
        Role::Member
    );
}

/// An owner who marked the organization deleted cannot bring it back from a request unit (it
/// would be live with no members and no removal records): clearing or moving the mark is
/// refused with TNC11. Controls: the deletion itself, and a service unit moving the mark (as
/// the sync's `organization.deleted` does on a deleted row).
#[tokio::test]
async fn a_deleted_organization_stays_deleted_for_request_units() {
    let w = world(As::App).await;
    let owner = w.a.ctx(Role::Owner);
    for undo in [
        "UPDATE organizations SET deleted_at = NULL",
        "UPDATE organizations SET deleted_at = deleted_at + interval '1 day'",
    ] {
        let e = w
            .pool
            .with_rls(&owner, async |tx| {
                let marked = sqlx::query("UPDATE organizations SET deleted_at = now()")
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                assert_eq!(marked, 1, "the owner marks it deleted");
                sqlx::query(AssertSqlSafe(undo)).execute(&mut *tx).await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("TNC11"), "{undo}: {e}");
        assert_eq!(e.kind(), pg_tenancy::ErrorKind::Forbidden, "{e}");
    }
    // Nothing was committed: A is live, and its owner's deletion goes through.
    assert_eq!(
        run(
            &w.pool,
            &owner,
            "UPDATE organizations SET deleted_at = now()"
        )
        .await
        .unwrap(),
        1
    );
    let e = run(&w.pool, &owner, "SELECT 1").await.unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    let service = w.db.service_pool(1).await.unwrap();
    let moved = service
        .with_org(w.a.id, async |tx| {
            Ok::<_, Error>(
                sqlx::query(
                    "UPDATE organizations SET deleted_at = now() WHERE deleted_at IS NOT NULL",
                )
                .execute(tx)
                .await?
                .rows_affected(),
            )
        })
        .await
        .unwrap();
    assert_eq!(moved, 1);
}

/// A provider organization's slug is the sync's: a request unit's rename of it is refused
/// (TNC11) before the unique constraint is checked, so it learns nothing about other
/// organizations' slugs. What remains (docs/security.md): an organization the application
/// created itself renames its slug, and the unique constraint then tells whether another
/// organization holds the slug it tries (23505), as bootstrap with a taken slug does.
#[tokio::test]
async fn a_provider_organizations_slug_is_the_syncs_and_what_a_slug_tells_remains() {
    let w = world(As::App).await;
    let service = w.db.service_pool(1).await.unwrap();
    service
        .with_org(w.a.id, async |tx| {
            sqlx::query("UPDATE organizations SET external_id = 'org_alpha_provider'")
                .execute(tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let a_owner = w.a.ctx(Role::Owner);
    for slug in ["beta", "nobody-holds-this"] {
        let sql = format!("UPDATE organizations SET slug = '{slug}'");
        let e = run(&w.pool, &a_owner, &sql).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("TNC11"), "{sql}: {e}");
    }
    // Control: the application's columns of a provider organization stay the owner's.
    assert_eq!(
        run(
            &w.pool,
            &a_owner,
            "UPDATE organizations SET name = 'Alpha Renamed'"
        )
        .await
        .unwrap(),
        1
    );
    // What remains, on B (created by the application): a slug A holds answers 23505, a free
    // one is taken.
    let b_owner = w.b.ctx(Role::Owner);
    let e = run(&w.pool, &b_owner, "UPDATE organizations SET slug = 'alpha'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    assert_eq!(
        run(
            &w.pool,
            &b_owner,
            "UPDATE organizations SET slug = 'nobody-holds-this'"
        )
        .await
        .unwrap(),
        1
    );
    let e = w
        .pool
        .create_organization(
            pg_tenancy::OrgId::from_external_id("org_gamma"),
            "Gamma",
            Some("alpha"),
            &w.b.member,
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
}

/// An owner whose unit entered with a lower role (an `OrgContext` for member or admin) can
/// leave while another owner remains: the last-owner trigger counts every owner, not only
/// those the unit's update policy shows. The last owner still cannot leave, whatever role it
/// acts with. The unit's context is unchanged afterwards (role, and in hardened mode the seal).
#[tokio::test]
async fn an_owner_acting_with_a_lower_role_can_leave_and_the_last_owner_stays() {
    let w = world(As::App).await;
    check_an_owner_leaving(&w, &w.pool).await;
    let w = world(As::App).await;
    let hardened = w.db.harden(&ContextKey::generate(), 2).await.unwrap();
    check_an_owner_leaving(&w, &hardened).await;
}

async fn check_an_owner_leaving(w: &World, pool: &TenantPool) {
    let co = pg_tenancy::UserId::new("user_co_owner").unwrap();
    pool.add_member(&w.a.ctx(Role::Owner), &co, Role::Owner)
        .await
        .unwrap();
    let leave = async |user: &pg_tenancy::UserId, role: Role| {
        let ctx = OrgContext::from_verified_session(w.a.id, user.clone(), role);
        pool.with_rls(&ctx, async |tx| {
            let left = sqlx::query("DELETE FROM organization_members WHERE user_id = $1")
                .bind(user.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let after: (Option<String>, i64) = sqlx::query_as(
                "SELECT tenancy_current_org_role(), (SELECT count(*) FROM projects)",
            )
            .fetch_one(&mut *tx)
            .await?;
            Ok::<_, Error>((left, after))
        })
        .await
    };
    // The first owner, acting as a member, leaves: one owner remains.
    assert_eq!(
        leave(&w.a.owner, Role::Member).await.unwrap(),
        (1, (Some("member".to_owned()), 1))
    );
    // The last owner, acting as a member or as an admin: TNC03.
    for role in [Role::Member, Role::Admin] {
        let e = leave(&co, role).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("TNC03"), "{role:?}: {e}");
    }
    let remaining = pool.authorize(&co, w.a.id).await.unwrap();
    assert_eq!(remaining.role(), Role::Owner);
}

/// The third read's findings on this round's SQL. The crate's functions with a pinned
/// `search_path` resolve names and operators in `pg_catalog` first: where the application role
/// may create objects in the crate's schema (a database upgraded from PostgreSQL 14, or a
/// grant), an operator it creates there cannot stand in for a built-in one inside the seal
/// check, which runs as the owner and reads hardened mode's key. The control: the same function
/// with the schema first hands the key's inner pad to the operator.
#[tokio::test]
async fn an_operator_in_the_crates_schema_cannot_stand_in_for_a_built_in_one() {
    let w = world(As::App).await;
    let admin = pg_tenancy::testing::TestCluster::global()
        .unwrap()
        .admin_options()
        .database(w.db.name());
    let mut admin = PgConnection::connect_with(&admin).await.unwrap();
    let app = w.db.app_options().get_username().to_owned();
    admin
        .execute(AssertSqlSafe(format!(
            "GRANT CREATE ON SCHEMA public TO \"{app}\""
        )))
        .await
        .unwrap();
    // Every pinned function of the crate puts pg_catalog first.
    let unpinned: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p, unnest(p.proconfig) c \
          WHERE p.pronamespace = 'public'::regnamespace AND c LIKE 'search_path=%' \
            AND c NOT LIKE 'search_path=pg_catalog, %'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(unpinned, Vec::<String>::new());
    let hardened = w.db.harden(&ContextKey::generate(), 2).await.unwrap();
    let attack = "CREATE OR REPLACE FUNCTION public.grab(a bytea, b bytea) RETURNS bytea \
                      LANGUAGE plpgsql \
                      AS $$ BEGIN RAISE EXCEPTION 'grabbed %', pg_catalog.length(a); END $$; \
                  DROP OPERATOR IF EXISTS public.|| (bytea, bytea); \
                  CREATE OPERATOR public.|| (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = public.grab); \
                  SELECT count(*) FROM projects WHERE tenancy_context_is_sealed()";
    // As shipped: the seal check uses pg_catalog's ||, and the unit reads its own rows.
    let sealed = hardened
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::raw_sql(AssertSqlSafe(attack))
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM projects")
                    .fetch_one(&mut *tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(sealed, 1);
    // Control: the schema first, as the functions captured it before they were pinned.
    admin
        .execute(
            "ALTER FUNCTION tenancy_context_is_sealed() \
             SET search_path = public, pg_catalog, pg_temp",
        )
        .await
        .unwrap();
    let grabbed = hardened
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::raw_sql(AssertSqlSafe(attack))
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(grabbed.to_string().contains("grabbed 64"), "{grabbed}");
}

/// `tenancy_lock_owners` runs only inside the last-owner trigger: SQL in a member's unit that
/// calls it is refused (it would lock the owners' rows for the rest of the unit), while the
/// trigger's own use still lets an owner leave when another owner remains.
#[tokio::test]
async fn only_the_last_owner_trigger_locks_the_owners() {
    let w = world(As::App).await;
    let sql = format!(
        "SELECT count(*) FROM (SELECT tenancy_lock_owners('{}')) s",
        w.a.id
    );
    assert_eq!(
        code(run(&w.pool, &w.a.ctx(Role::Member), &sql).await).as_deref(),
        Some("42501")
    );
    // Control: a second owner, then the first leaves through the trigger.
    let promoted = run(
        &w.pool,
        &w.a.ctx(Role::Owner),
        &format!(
            "UPDATE organization_members SET role = 'owner'              WHERE organization_id = '{}' AND user_id = '{}'",
            w.a.id, w.a.admin
        ),
    )
    .await
    .unwrap();
    assert_eq!(promoted, 1);
    let left = run(
        &w.pool,
        &w.a.ctx(Role::Owner),
        &format!(
            "DELETE FROM organization_members WHERE organization_id = '{}' AND user_id = '{}'",
            w.a.id, w.a.owner
        ),
    )
    .await
    .unwrap();
    assert_eq!(left, 1);
}

/// Bootstrap's check that an id is free waits at most 2 s for a lock, like the member entry:
/// a unit holding `LOCK TABLE organizations` stalls no `create_organization` for longer (the
/// control: once released, the same call succeeds).
#[tokio::test]
async fn a_lock_on_the_organizations_stalls_no_bootstrap_for_long() {
    let w = world(As::App).await;
    let mut holder = w.pool.begin(&w.a.ctx(Role::Admin)).await.unwrap();
    sqlx::query("LOCK TABLE organizations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let id = pg_tenancy::OrgId::from_external_id("org_locked_out");
    let started = Instant::now();
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        w.pool.create_organization(id, "New", None, &w.b.owner),
    )
    .await
    .expect("bootstrap waited unboundedly")
    .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.rollback().await.unwrap();
    w.pool
        .create_organization(id, "New", None, &w.b.owner)
        .await
        .unwrap();
}

/// The entries check the session on the session's own `search_path`, so their comparison
/// names pg_catalog's operators: where the application role may create a schema, an `=` of
/// its own on `text` first in the path does not make a poisoned session pass. SQL in A's unit
/// leaves `search_path = evil, pg_catalog` (and the operator) on its connection; B's next unit
/// there finds the session unclean, and the pool serves it on another connection with the
/// pool's path.
#[tokio::test]
async fn an_operator_first_in_the_sessions_path_does_not_pass_the_session_check() {
    let w = world_with(As::App, 1).await;
    let mut admin = PgConnection::connect_with(
        &pg_tenancy::testing::TestCluster::global()
            .unwrap()
            .admin_options()
            .database(w.db.name()),
    )
    .await
    .unwrap();
    let app = w.db.app_options().get_username().to_owned();
    admin
        .execute(AssertSqlSafe(format!(
            "GRANT CREATE ON DATABASE \"{}\" TO \"{app}\"",
            w.db.name()
        )))
        .await
        .unwrap();
    let (a, b) = (w.a.ctx(Role::Member), w.b.ctx(Role::Member));
    let state = async |ctx: &OrgContext| -> (i32, String) {
        w.pool
            .with_rls_read(ctx, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_as("SELECT pg_backend_pid(), current_setting('search_path')")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap()
    };
    let (poisoned, path) = state(&a).await;
    w.pool
        .with_rls(&a, async |tx| {
            sqlx::raw_sql(
                "CREATE SCHEMA evil; \
                 CREATE FUNCTION evil.eq(a text, b text) RETURNS boolean LANGUAGE sql \
                     IMMUTABLE AS $$ SELECT true $$; \
                 CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq); \
                 SELECT set_config('search_path', 'evil, pg_catalog', false)",
            )
            .execute(&mut *tx)
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let (pid, after) = state(&b).await;
    assert_ne!(pid, poisoned, "the poisoned connection was closed");
    assert_eq!(after, path);
}
