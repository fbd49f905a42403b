//! The same guarantees on a real Citus cluster (a coordinator and two workers, started by
//! `pg_tenancy::testing::CitusCluster`): a tenant table distributed by `organization_id`
//! (`tenancy_distribute`), its policies running on the workers with the context the entry
//! propagates. Each case runs as the application role (neither superuser nor BYPASSRLS) and as
//! the tables' owner.
//!
//! Without a PostgreSQL that has Citus installed, each test prints `SKIPPED <test>: <reason>`;
//! under `TENANCY_REQUIRE_CITUS` (set by `.ci/run`, which builds Citus) it fails instead.

#[path = "support/mod.rs"]
#[allow(dead_code)] // Shared with the other test binaries; this one only skips.
mod support;

use pg_tenancy::audit::{AuditOptions, PolicyOptions, policy_sql_with};
use pg_tenancy::testing::{CitusCluster, HarnessError, TestDatabase};
use pg_tenancy::{Error, OrgContext, OrgId, Role, TenantPool, UserId};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The tenant table as a user writes it; the generator's Citus form (`pg-tenancy policy
/// projects --citus`) gives it its policy (the bare call: Citus refuses a subquery in a
/// policy) and distributes it (`tenancy_distribute`).
const PROJECTS: &str = "
CREATE TABLE projects (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            text NOT NULL,
    PRIMARY KEY (organization_id, id)
)";

/// Projects each organization starts with: enough to land on both workers' shards.
const PROJECTS_PER_ORG: usize = 6;

/// The cluster, or why it did not start (and whether that is Citus's absence).
static CLUSTER: OnceCell<Result<CitusCluster, (bool, String)>> = OnceCell::const_new();

/// The process's Citus cluster, or `None` (after `SKIPPED`) when Citus is not installed.
async fn cluster() -> Option<&'static CitusCluster> {
    let started = CLUSTER
        .get_or_init(|| async {
            CitusCluster::start()
                .await
                .map_err(|e| (matches!(e, HarnessError::NoCitus), e.to_string()))
        })
        .await;
    match started {
        Ok(c) => Some(c),
        Err((true, reason)) => {
            support::skip::skip_or_fail("TENANCY_REQUIRE_CITUS", reason);
            None
        }
        Err((false, e)) => panic!("the Citus cluster did not start: {e}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum As {
    App,
    Owner,
}

struct Org {
    id: OrgId,
    owner: UserId,
    admin: UserId,
    member: UserId,
}

impl Org {
    /// The context of the organization's user with `role` (its owner, admin or member).
    fn ctx(&self, role: Role) -> OrgContext {
        let user = match role {
            Role::Owner => &self.owner,
            Role::Admin => &self.admin,
            Role::Member => &self.member,
        };
        OrgContext::from_verified_session(self.id, user.clone(), role)
    }
}

struct World {
    db: TestDatabase,
    pool: TenantPool,
    a: Org,
    b: Org,
}

/// A fresh database on the cluster with `projects` distributed, and two organizations, each
/// with an owner, an admin, a member and [`PROJECTS_PER_ORG`] projects written through units.
async fn world(role: As) -> Option<World> {
    let cluster = cluster().await?;
    let db = cluster.create_database().await.expect("Citus database");
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    owner.execute(PROJECTS).await.expect("create projects");
    let policy = policy_sql_with("projects", &PolicyOptions::default().for_citus());
    owner
        .execute(sqlx::AssertSqlSafe(policy))
        .await
        .expect("policy and distribution");
    owner.close().await.unwrap();
    db.grant_app(&["projects"]).await.unwrap();
    let pool = match role {
        As::App => db.app_pool(4).await,
        As::Owner => db.owner_pool(4).await,
    }
    .expect("tenant pool");
    let a = seed(&pool, "alpha").await;
    let b = seed(&pool, "beta").await;
    Some(World { db, pool, a, b })
}

async fn seed(pool: &TenantPool, slug: &str) -> Org {
    let id = OrgId::from_external_id(&format!("org_{slug}"));
    let org = Org {
        id,
        owner: UserId::new(format!("user_{slug}_owner")).unwrap(),
        admin: UserId::new(format!("user_{slug}_admin")).unwrap(),
        member: UserId::new(format!("user_{slug}_member")).unwrap(),
    };
    let owner = pool
        .create_organization(id, slug, Some(slug), &org.owner)
        .await
        .expect("create organization");
    pool.add_member(&owner, &org.admin, Role::Admin)
        .await
        .expect("add admin");
    pool.add_member(&owner, &org.member, Role::Member)
        .await
        .expect("add member");
    pool.with_rls(&org.ctx(Role::Member), async |tx| {
        for i in 0..PROJECTS_PER_ORG {
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                .bind(id.as_uuid())
                .bind(format!("{slug} {i}"))
                .execute(&mut *tx)
                .await?;
        }
        Ok::<_, Error>(())
    })
    .await
    .expect("seed projects");
    org
}

/// The organization of every project a unit as `ctx` sees, with no `WHERE` (every shard).
async fn visible(pool: &TenantPool, ctx: &OrgContext) -> Result<Vec<Uuid>, Error> {
    pool.with_rls_read(ctx, async |tx| {
        Ok(sqlx::query_scalar("SELECT organization_id FROM projects")
            .fetch_all(tx)
            .await?)
    })
    .await
}

fn sqlstate(e: &Error) -> Option<String> {
    match e {
        Error::Database(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Runs `sql` in a write unit as `ctx`: the rows it affected.
async fn run(pool: &TenantPool, ctx: &OrgContext, sql: &str) -> Result<u64, Error> {
    let sql = sql.to_owned();
    pool.with_rls(ctx, async |tx| {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?
            .rows_affected())
    })
    .await
}

macro_rules! both_roles {
    ($($case:ident),* $(,)?) => {
        mod as_app {
            $(#[tokio::test] async fn $case() { super::$case(super::As::App).await })*
        }
        mod as_owner {
            $(#[tokio::test] async fn $case() { super::$case(super::As::Owner).await })*
        }
    };
}

both_roles!(
    a_query_without_the_tenant_column_returns_only_the_organizations_rows,
    writes_into_another_organization_fail,
    no_unit_sees_no_rows,
    the_entry_refuses_non_members_deleted_organizations_and_escalation,
    planted_context_does_not_reach_the_next_unit,
    forged_contexts_are_refused_before_the_closure_runs,
    stale_memberships_are_refused,
    a_member_cannot_act_as_an_admin_on_a_role_guarded_distributed_table,
    a_units_context_ends_with_it_on_the_cached_worker_connections,
);

/// A unit's `SELECT` without `WHERE` fans out to every shard (its plan says so) and returns
/// exactly its organization's rows, for each organization; a router query aimed at the other
/// organization returns none. The superuser sees both organizations' rows.
async fn a_query_without_the_tenant_column_returns_only_the_organizations_rows(role: As) {
    let Some(w) = world(role).await else { return };
    let cluster = cluster().await.unwrap();
    // The query has no tenant column to prune with: Citus sends it to every shard.
    let plan: Vec<String> = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("EXPLAIN (COSTS OFF) SELECT organization_id FROM projects")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    let shards: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'projects'::regclass",
    )
    .fetch_one(&mut *w.pool.pool().acquire().await.unwrap())
    .await
    .unwrap();
    assert!(
        plan.iter()
            .any(|l| l.contains(&format!("Task Count: {shards}"))),
        "not a fan-out over the {shards} shards: {plan:#?}"
    );
    for (me, other) in [(&w.a, &w.b), (&w.b, &w.a)] {
        let seen = visible(&w.pool, &me.ctx(Role::Member)).await.unwrap();
        assert_eq!(seen.len(), PROJECTS_PER_ORG, "its own rows, all of them");
        assert!(seen.iter().all(|o| o == me.id.as_uuid()), "{seen:?}");
        assert!(!seen.contains(other.id.as_uuid()));
        // Router query aimed at the other organization: nothing.
        let aimed: i64 = w
            .pool
            .with_rls_read(&me.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT count(*) FROM projects WHERE organization_id = $1")
                        .bind(other.id.as_uuid())
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        assert_eq!(aimed, 0);
    }
    // Positive control: the superuser (BYPASSRLS) sees both organizations' rows.
    let mut admin =
        PgConnection::connect_with(&cluster.coordinator().admin_options().database(w.db.name()))
            .await
            .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(DISTINCT organization_id) FROM projects")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(all, 2);
}

/// A unit cannot insert a row for another organization, move its row into one, or delete
/// another's; the same insert for its own organization succeeds (the positive control).
async fn writes_into_another_organization_fail(role: As) {
    let Some(w) = world(role).await else { return };
    let (a, b) = (&w.a, &w.b);
    let insert = |org: Uuid| {
        let ctx = a.ctx(Role::Member);
        let pool = w.pool.clone();
        async move {
            pool.with_rls(&ctx, async |tx| {
                sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'x')")
                    .bind(org)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
        }
    };
    let refused = insert(*b.id.as_uuid()).await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused:?}");
    insert(*a.id.as_uuid()).await.expect("its own organization");

    let moved = w
        .pool
        .with_rls(&a.ctx(Role::Member), async |tx| {
            sqlx::query("UPDATE projects SET organization_id = $1")
                .bind(b.id.as_uuid())
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await;
    assert!(moved.is_err(), "a row moved into another organization");
    let deleted = w
        .pool
        .with_rls(&a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query("DELETE FROM projects WHERE organization_id = $1")
                    .bind(b.id.as_uuid())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(
        visible(&w.pool, &b.ctx(Role::Member)).await.unwrap().len(),
        PROJECTS_PER_ORG,
        "B's rows are intact"
    );
    assert_eq!(
        visible(&w.pool, &a.ctx(Role::Member)).await.unwrap().len(),
        PROJECTS_PER_ORG + 1,
        "A's own insert landed"
    );
}

/// A transaction that entered no unit sees no row on any shard, also on a connection that
/// served units before; the same connection inside a unit sees its rows.
async fn no_unit_sees_no_rows(role: As) {
    let Some(w) = world(role).await else { return };
    let options = match role {
        As::App => w.db.app_options(),
        As::Owner => w.db.owner_options(),
    };
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let count = "SELECT count(*) FROM projects";
    let bare: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(bare, 0);
    // Positive control: the same connection, inside a unit entered by hand as the pool does.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("CALL tenancy_enter($1, $2, 'member', true, tenancy_session_settings())")
        .bind(w.a.id.as_uuid())
        .bind(w.a.member.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    let inside: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(inside, PROJECTS_PER_ORG as i64);
    tx.commit().await.unwrap();
    // And after it, in a transaction of its own: nothing again (the workers' connections
    // served that unit).
    let mut tx = conn.begin().await.unwrap();
    let after: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(after, 0);
    tx.commit().await.unwrap();
}

/// On Citus the entry still refuses a user who is not a member, a deleted organization and a
/// member claiming a higher role; the member with its own role enters (the positive control).
async fn the_entry_refuses_non_members_deleted_organizations_and_escalation(role: As) {
    let Some(w) = world(role).await else { return };
    let outsider = OrgContext::from_verified_session(
        w.a.id,
        UserId::new("user_nobody").unwrap(),
        Role::Member,
    );
    assert!(matches!(
        visible(&w.pool, &outsider).await,
        Err(Error::NotAMember)
    ));
    let escalated = OrgContext::from_verified_session(w.a.id, w.a.member.clone(), Role::Admin);
    assert!(matches!(
        visible(&w.pool, &escalated).await,
        Err(Error::InsufficientRole { .. })
    ));
    assert_eq!(
        visible(&w.pool, &w.a.ctx(Role::Member))
            .await
            .unwrap()
            .len(),
        PROJECTS_PER_ORG
    );
    // The owner deletes organization B (soft delete); B's member can no longer enter.
    w.pool
        .with_rls(&w.b.ctx(Role::Owner), async |tx| {
            sqlx::query("UPDATE organizations SET deleted_at = now() WHERE id = $1")
                .bind(w.b.id.as_uuid())
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert!(matches!(
        visible(&w.pool, &w.b.ctx(Role::Owner)).await,
        Err(Error::NotAMember)
    ));
    assert_eq!(
        visible(&w.pool, &w.a.ctx(Role::Member))
            .await
            .unwrap()
            .len(),
        PROJECTS_PER_ORG,
        "A is unaffected"
    );
}

/// Hardened mode on Citus: the seal is not verified on the workers (a hardened unit there
/// would see nothing), so enabling it after the set-up is refused (SQLSTATE 0A000, with the
/// reason), and the set-up refuses a database already hardened. Positive controls: with the
/// refusing trigger disabled, the same `harden` succeeds; the set-up runs again on the
/// database while it is not hardened.
#[tokio::test]
async fn hardened_mode_is_refused_on_citus() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let setup = async || {
        let mut owner = PgConnection::connect_with(&w.db.owner_options())
            .await
            .unwrap();
        let done = owner.execute(pg_tenancy::citus::SETUP).await.map(|_| ());
        owner.close().await.unwrap();
        done
    };
    setup()
        .await
        .expect("the set-up runs again while not hardened");
    let refused_as = |e: &sqlx::Error| {
        let e = e.as_database_error().expect("a database error");
        (e.code().map(|c| c.into_owned()), e.message().to_owned())
    };

    let key = pg_tenancy::ContextKey::generate();
    let refused = match w.db.harden(&key, 2).await {
        Err(HarnessError::Database(e)) => refused_as(&e),
        other => panic!("hardened mode was enabled on Citus: {other:?}"),
    };
    assert_eq!(refused.0.as_deref(), Some("0A000"));
    assert!(
        refused
            .1
            .contains("hardened mode is not supported on Citus"),
        "{refused:?}"
    );

    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute("ALTER TABLE tenancy_context_key DISABLE TRIGGER tenancy_refuse_hardened_mode")
        .await
        .unwrap();
    owner.close().await.unwrap();
    w.db.harden(&key, 2)
        .await
        .expect("without the trigger, hardened mode is enabled");
    let refused = refused_as(
        &setup()
            .await
            .expect_err("the set-up refuses a hardened database"),
    );
    assert_eq!(refused.0.as_deref(), Some("0A000"));
    assert!(
        refused
            .1
            .contains("hardened mode is not supported on Citus"),
        "{refused:?}"
    );
}

/// On Citus a unit costs the caller the round trips it costs on one server (write 3, read 2,
/// `authorize` 1; `tests/it/round_trips.rs`), counted at a TCP proxy in front of the
/// coordinator: the context reaches the workers inside the entry, in the `BEGIN` round trip.
/// Current-thread runtime, so the pool's release task cannot run before a count is read.
#[tokio::test(flavor = "current_thread")]
async fn a_unit_costs_the_same_round_trips_at_the_coordinator() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let server = cluster()
        .await
        .unwrap()
        .coordinator()
        .tcp_address()
        .expect("the coordinator's TCP listener");
    let proxy = pg_tenancy::testing::TcpProxy::start(server, std::time::Duration::ZERO).unwrap();
    let pool = w.db.app_pool_at(proxy.addr(), 1).await.unwrap();
    let ctx = w.a.ctx(Role::Member);
    let query = "SELECT count(*) FROM projects WHERE organization_id = $1";
    let org = *w.a.id.as_uuid();

    macro_rules! count {
        ($label:expr, $unit:expr) => {{
            $unit;
            let mut counts = Vec::new();
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let before = proxy.stats().round_trips();
                $unit;
                counts.push(proxy.stats().round_trips() - before);
            }
            counts.dedup();
            assert_eq!(counts.len(), 1, "{}: unstable count {counts:?}", $label);
            counts[0]
        }};
    }
    let write = count!(
        "write unit",
        pool.with_rls(&ctx, async |tx| {
            let n: i64 = sqlx::query_scalar(query).bind(org).fetch_one(tx).await?;
            assert_eq!(n, PROJECTS_PER_ORG as i64);
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let read = count!(
        "read unit",
        pool.with_rls_read(&ctx, async |tx| {
            let n: i64 = sqlx::query_scalar(query).bind(org).fetch_one(tx).await?;
            assert_eq!(n, PROJECTS_PER_ORG as i64);
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let authorize = count!(
        "authorize",
        pool.authorize(ctx.user_id(), ctx.org_id()).await.unwrap()
    );
    assert_eq!((write, read, authorize), (3, 2, 1));
}

/// The audit knows Citus: a tenant table that is not distributed is `citus_not_distributed`,
/// and its bare-call policy is `policy_per_row_function` (as on one server); distributed with
/// `tenancy_distribute`, both go. The distributed `projects` has neither, and pg-tenancy's own
/// tables (on the coordinator by design) are not reported.
#[tokio::test]
async fn the_audit_reports_tenant_tables_citus_does_not_distribute() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE notes (organization_id uuid NOT NULL, id uuid NOT NULL, \
             PRIMARY KEY (organization_id, id))",
        )
        .await
        .unwrap();
    let policy = policy_sql_with("notes", &PolicyOptions::default().for_citus());
    let (shape, distribute) = policy.split_once("SELECT tenancy_distribute").unwrap();
    owner.execute(sqlx::AssertSqlSafe(shape)).await.unwrap();
    w.db.grant_app(&["notes"]).await.unwrap();
    let codes = async || {
        let report = pg_tenancy::audit::audit(w.pool.pool(), &AuditOptions::default())
            .await
            .unwrap();
        report
            .findings
            .iter()
            .map(|f| (f.code, f.object.clone()))
            .collect::<Vec<_>>()
    };
    let on = |found: &[(&str, String)], code: &str, table: &str| {
        found
            .iter()
            .any(|(c, o)| *c == code && o.ends_with(&format!("public.{table}")))
    };
    let before = codes().await;
    assert!(on(&before, "citus_not_distributed", "notes"), "{before:?}");
    assert!(
        on(&before, "policy_per_row_function", "notes"),
        "{before:?}"
    );
    assert!(
        !on(&before, "citus_not_distributed", "projects"),
        "{before:?}"
    );
    assert!(
        !on(&before, "policy_per_row_function", "projects"),
        "{before:?}"
    );
    assert!(
        !before.iter().any(|(c, o)| c.starts_with("citus_")
            && pg_tenancy::migrations::SERVICE_TABLES
                .iter()
                .any(|t| o.ends_with(&format!("public.{t}")))),
        "{before:?}"
    );

    owner
        .execute(sqlx::AssertSqlSafe(format!(
            "SELECT tenancy_distribute{distribute}"
        )))
        .await
        .unwrap();
    owner.close().await.unwrap();
    let after = codes().await;
    assert!(!on(&after, "citus_not_distributed", "notes"), "{after:?}");
    assert!(!on(&after, "policy_per_row_function", "notes"), "{after:?}");
}

/// The audit knows a foreign key Citus cannot keep: from a tenant table to a table that is
/// neither distributed nor a reference table (distributing the tenant table fails while it
/// exists). The controls: a distributed tenant table's key to a reference table, and the key
/// to `organizations` (which `tenancy_distribute` drops), are not reported.
#[tokio::test]
async fn the_audit_reports_a_foreign_key_citus_cannot_keep() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE kinds (id int PRIMARY KEY);              CREATE TABLE tickets (organization_id uuid NOT NULL REFERENCES organizations (id),                                    id uuid NOT NULL, kind int REFERENCES kinds (id),                                    PRIMARY KEY (organization_id, id))",
        )
        .await
        .unwrap();
    let policy = policy_sql_with("tickets", &PolicyOptions::default().for_citus());
    let (shape, _) = policy.split_once("SELECT tenancy_distribute").unwrap();
    owner.execute(sqlx::AssertSqlSafe(shape)).await.unwrap();
    w.db.grant_app(&["tickets", "kinds"]).await.unwrap();
    let keys = async || {
        let report = pg_tenancy::audit::audit(w.pool.pool(), &AuditOptions::default())
            .await
            .unwrap();
        report
            .findings
            .iter()
            .filter(|f| f.code == "citus_foreign_key_to_coordinator")
            .map(|f| f.object.clone())
            .collect::<Vec<_>>()
    };
    // The control: a distributed tenant table whose key references a reference table.
    let policy = policy_sql_with("scores", &PolicyOptions::default().for_citus());
    for sql in [
        "CREATE TABLE grades (id int PRIMARY KEY)",
        "SELECT create_reference_table('grades')",
        "CREATE TABLE scores (organization_id uuid NOT NULL, id uuid NOT NULL, \
                              grade int REFERENCES grades (id), PRIMARY KEY (organization_id, id))",
    ]
    .into_iter()
    .chain(policy.split_inclusive(";\n"))
    {
        owner.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    owner.close().await.unwrap();
    let found = keys().await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("tickets_kind_fkey"), "{found:?}");
    let distributed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'scores'::regclass \
                        AND partmethod = 'h')",
    )
    .fetch_one(w.pool.pool())
    .await
    .unwrap();
    assert!(distributed, "the control's table is distributed");
}

/// Leaks through the pooled connection on Citus: SQL in A's unit leaves session-level context
/// values on the coordinator and, through a query pushed down to the shards, on the worker
/// connections the pooled connection keeps; a transaction outside any unit there sees no
/// project (the workers take a marker only in the distributed transaction it names:
/// `a_context_left_on_a_worker_connection_is_void_outside_its_transaction`); the next unit on
/// that connection, B's, sees exactly B's rows (every entry re-propagates all its settings),
/// and A's next unit exactly A's. A failing unit leaves nothing either.
async fn planted_context_does_not_reach_the_next_unit(role: As) {
    let Some(w) = world(role).await else { return };
    let db_pool = match role {
        As::App => w.db.app_pool(1).await,
        As::Owner => w.db.owner_pool(1).await,
    }
    .unwrap();
    let (a, b) = (*w.a.id.as_uuid(), *w.b.id.as_uuid());
    let planted: i64 = db_pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT set_config('app.current_org_id', $1::text, false), \
                        set_config('app.current_unit', 'planted', false), \
                        set_config('app.current_org_role', 'owner', false) FROM projects) s",
            )
            .bind(a)
            .fetch_one(&mut *tx)
            .await?;
            Ok::<_, Error>(n)
        })
        .await
        .unwrap();
    assert_eq!(planted, PROJECTS_PER_ORG as i64);
    // A transaction outside any unit on this connection sees nothing, on worker connections
    // that hold A's values or on fresh ones.
    {
        let mut conn = db_pool.pool().acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        let outside: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(outside, 0, "outside any unit");
        tx.rollback().await.unwrap();
    }
    let failing = db_pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::query("SELECT set_config('app.current_org_id', $1::text, false)")
                .bind(a)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT 1/0").execute(&mut *tx).await?;
            Ok::<_, Error>(())
        })
        .await;
    assert!(failing.is_err());
    let seen = visible(&db_pool, &w.b.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| *o == b), "{seen:?}");
    let seen = visible(&db_pool, &w.a.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| *o == a), "{seen:?}");
}

/// A service unit (`ServicePool::with_org`) on Citus sees the organization's rows of a
/// distributed table and no other's.
#[tokio::test]
async fn a_service_unit_sees_its_organization_only() {
    let Some(w) = world(As::App).await else {
        return;
    };
    w.db.grant_service(&["projects"]).await.unwrap();
    let service = w.db.service_pool(1).await.unwrap();
    for org in [&w.a, &w.b] {
        let seen: Vec<Uuid> = service
            .with_org(org.id, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT organization_id FROM projects")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        assert_eq!(seen.len(), PROJECTS_PER_ORG);
        assert!(seen.iter().all(|o| o == org.id.as_uuid()), "{seen:?}");
    }
}

/// The load with a ledger on Citus: concurrent write units of both organizations, each
/// reading its projects with no `WHERE` (every shard) and adding 1 to its organization's
/// ledger row; then zero rows of the other organization were ever seen, and each ledger holds
/// exactly its organization's committed units. Two seconds here;
/// `TENANCY_CITUS_LOAD_SECS=60 cargo test --test citus ledger` for a long run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_exact_under_load() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE ledger (organization_id uuid NOT NULL, units bigint NOT NULL, \
             PRIMARY KEY (organization_id))",
        )
        .await
        .unwrap();
    owner
        .execute(sqlx::AssertSqlSafe(policy_sql_with(
            "ledger",
            &PolicyOptions::default().for_citus(),
        )))
        .await
        .unwrap();
    owner.close().await.unwrap();
    w.db.grant_app(&["ledger"]).await.unwrap();
    for org in [&w.a, &w.b] {
        w.pool
            .with_rls(&org.ctx(Role::Member), async |tx| {
                sqlx::query("INSERT INTO ledger VALUES ($1, 0)")
                    .bind(org.id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
    }
    let secs: u64 = std::env::var("TENANCY_CITUS_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let pool = w.pool.clone();
            let org = if i % 2 == 0 { &w.a } else { &w.b };
            let (ctx, id) = (org.ctx(Role::Member), *org.id.as_uuid());
            tokio::spawn(async move {
                let (mut committed, mut crossed) = (0i64, 0usize);
                while std::time::Instant::now() < deadline {
                    let seen = pool
                        .with_rls(&ctx, async |tx| {
                            let seen: Vec<Uuid> =
                                sqlx::query_scalar("SELECT organization_id FROM projects")
                                    .fetch_all(&mut *tx)
                                    .await?;
                            sqlx::query(
                                "UPDATE ledger SET units = units + 1 WHERE organization_id = $1",
                            )
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                            Ok::<_, Error>(seen)
                        })
                        .await
                        .unwrap();
                    assert_eq!(seen.len(), PROJECTS_PER_ORG);
                    crossed += seen.iter().filter(|o| **o != id).count();
                    committed += 1;
                }
                (id, committed, crossed)
            })
        })
        .collect();
    let mut expected = std::collections::HashMap::new();
    for t in tasks {
        let (id, committed, crossed) = t.await.unwrap();
        assert_eq!(crossed, 0, "rows of another organization were seen");
        *expected.entry(id).or_insert(0i64) += committed;
    }
    for org in [&w.a, &w.b] {
        let units: i64 = w
            .pool
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT units FROM ledger")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        let want = expected[org.id.as_uuid()];
        assert!(want > 0);
        assert_eq!(units, want, "the ledger of {:?}", org.id);
    }
    eprintln!("ledger: {expected:?} in {secs} s");
}

/// A forged context (a user who is no member of A, and B's owner claiming A) is refused at the
/// entry on Citus as on one server, by the read, write and explicit-transaction entries and by
/// `add_member`, before the closure runs. Positive control: once A's owner adds the stranger,
/// the same context enters and sees A's rows (on every shard) and no other's.
async fn forged_contexts_are_refused_before_the_closure_runs(role: As) {
    let Some(w) = world(role).await else { return };
    let stranger = UserId::new("user_mallory").unwrap();
    let forged = OrgContext::from_verified_session(w.a.id, stranger.clone(), Role::Owner);
    let elsewhere = OrgContext::from_verified_session(w.a.id, w.b.owner.clone(), Role::Owner);
    for ctx in [&forged, &elsewhere] {
        let ran = std::sync::atomic::AtomicBool::new(false);
        let e = w
            .pool
            .with_rls(ctx, async |_tx| {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{e}");
        let e = w
            .pool
            .with_rls_read(ctx, async |_tx| {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{e}");
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the closure ran"
        );
        assert!(matches!(
            w.pool.begin(ctx).await.unwrap_err(),
            Error::NotAMember
        ));
    }
    let e = w
        .pool
        .add_member(&forged, &stranger, Role::Owner)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    // Positive control: the owner adds the stranger, who then enters A, and only A.
    w.pool
        .add_member(&w.a.ctx(Role::Owner), &stranger, Role::Member)
        .await
        .unwrap();
    let admitted = OrgContext::from_verified_session(w.a.id, stranger, Role::Member);
    let seen = visible(&w.pool, &admitted).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| o == w.a.id.as_uuid()), "{seen:?}");
}

/// A stale context is refused from the next unit on: a member the admin removed
/// (`NotAMember`), an admin the owner demoted to member acting as admin (`InsufficientRole`),
/// and, once the owner marks the organization deleted, everyone in it, `authorize` included.
/// Positive controls: each context enters until its membership changes, the demoted admin
/// still enters as a member, and organization B is unaffected.
async fn stale_memberships_are_refused(role: As) {
    let Some(w) = world(role).await else { return };
    let member = w.a.ctx(Role::Member);
    assert_eq!(
        visible(&w.pool, &member).await.unwrap().len(),
        PROJECTS_PER_ORG
    );
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
    let e = visible(&w.pool, &member).await.unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");

    let admin = w.a.ctx(Role::Admin);
    assert_eq!(
        visible(&w.pool, &admin).await.unwrap().len(),
        PROJECTS_PER_ORG
    );
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
    let e = visible(&w.pool, &admin).await.unwrap_err();
    assert!(matches!(e, Error::InsufficientRole { .. }), "{e}");
    let demoted = OrgContext::from_verified_session(w.a.id, w.a.admin.clone(), Role::Member);
    assert_eq!(
        visible(&w.pool, &demoted).await.unwrap().len(),
        PROJECTS_PER_ORG
    );

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
    for ctx in [w.a.ctx(Role::Owner), demoted] {
        let e = visible(&w.pool, &ctx).await.unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{e}");
        assert!(matches!(
            w.pool.authorize(ctx.user_id(), ctx.org_id()).await,
            Err(Error::NotAMember)
        ));
    }
    let seen = visible(&w.pool, &w.b.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| o == w.b.id.as_uuid()), "{seen:?}");
}

/// A distributed table only admins and owners may use: `organization_id =
/// tenancy_current_org_id_at_least('admin')`, the bare form, evaluated on the workers with the
/// role the entry propagated.
const SECRETS: &str = "
CREATE TABLE secrets (
    organization_id uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    value           text NOT NULL,
    PRIMARY KEY (organization_id, id));
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY admins_only ON secrets
    USING      (organization_id = tenancy_current_org_id_at_least('admin'))
    WITH CHECK (organization_id = tenancy_current_org_id_at_least('admin'));
SELECT tenancy_distribute('secrets')";

/// On a role-guarded distributed table a member sees nothing, writes nothing, cannot claim
/// admin at the entry, and cannot make itself admin with raw SQL: not by promoting its own
/// membership (the coordinator's policies), not by `set_config` of the role inside its unit
/// (it never reaches the workers, where the guard runs). Positive control: the admin (and
/// the owner) sees, inserts and updates its organization's rows there, and only those.
async fn a_member_cannot_act_as_an_admin_on_a_role_guarded_distributed_table(role: As) {
    let Some(w) = world(role).await else { return };
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner.execute(SECRETS).await.expect("secrets, distributed");
    owner.close().await.unwrap();
    w.db.grant_app(&["secrets"]).await.unwrap();
    let count = async |ctx: &OrgContext| -> Result<i64, Error> {
        w.pool
            .with_rls_read(ctx, async |tx| {
                Ok(sqlx::query_scalar("SELECT count(*) FROM secrets")
                    .fetch_one(tx)
                    .await?)
            })
            .await
    };
    for org in [&w.a, &w.b] {
        let insert = format!(
            "INSERT INTO secrets (organization_id, value) VALUES ('{}', 'key')",
            org.id
        );
        assert_eq!(
            run(&w.pool, &org.ctx(Role::Admin), &insert).await.unwrap(),
            1
        );
        assert_eq!(
            run(&w.pool, &org.ctx(Role::Owner), &insert).await.unwrap(),
            1
        );
    }
    let (admin, member) = (w.a.ctx(Role::Admin), w.a.ctx(Role::Member));
    assert_eq!(
        count(&admin).await.unwrap(),
        2,
        "the admin sees A's two rows"
    );
    assert_eq!(
        run(&w.pool, &admin, "UPDATE secrets SET value = 'rotated'")
            .await
            .unwrap(),
        2,
        "the admin updates A's rows, and no other's"
    );

    assert_eq!(count(&member).await.unwrap(), 0);
    assert_eq!(
        run(&w.pool, &member, "UPDATE secrets SET value = 'x'")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        run(&w.pool, &member, "DELETE FROM secrets").await.unwrap(),
        0
    );
    let e = run(
        &w.pool,
        &member,
        &format!(
            "INSERT INTO secrets (organization_id, value) VALUES ('{}', 'x')",
            w.a.id
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    let claimed = OrgContext::from_verified_session(w.a.id, w.a.member.clone(), Role::Admin);
    assert!(matches!(
        count(&claimed).await,
        Err(Error::InsufficientRole { .. })
    ));
    assert_eq!(
        run(
            &w.pool,
            &member,
            &format!(
                "UPDATE organization_members SET role = 'admin' WHERE user_id = '{}'",
                w.a.member
            )
        )
        .await
        .unwrap(),
        0,
        "the member promoted itself"
    );
    let via_set_config: (i64, u64) = w
        .pool
        .with_rls(&member, async |tx| {
            sqlx::query("SELECT set_config('app.current_org_role', 'admin', true)")
                .execute(&mut *tx)
                .await?;
            let seen = sqlx::query_scalar("SELECT count(*) FROM secrets")
                .fetch_one(&mut *tx)
                .await?;
            let updated = sqlx::query("UPDATE secrets SET value = 'x'")
                .execute(&mut *tx)
                .await?
                .rows_affected();
            Ok::<_, Error>((seen, updated))
        })
        .await
        .unwrap();
    assert_eq!(via_set_config, (0, 0), "set_config reached the workers");
    // Nothing changed: A's two rows, rotated by its admin; B's untouched.
    let values = async |ctx: &OrgContext| -> Vec<String> {
        w.pool
            .with_rls_read(ctx, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT value FROM secrets ORDER BY value")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap()
    };
    assert_eq!(values(&w.a.ctx(Role::Owner)).await, ["rotated", "rotated"]);
    assert_eq!(values(&w.b.ctx(Role::Admin)).await, ["key", "key"]);
}

/// What every worker connection a transaction uses holds of the unit context: for each
/// backend on a worker (its pid), the context settings (empty when unset; the permissions
/// setting, where the migrations have it, only checked to be empty outside a unit). `tenancy_probe` is a
/// distributed table without Row-Level Security with rows on every shard, so the query runs
/// on every shard, in or out of a unit.
const PROBE: &str = "SELECT DISTINCT pg_backend_pid(), \
    coalesce(current_setting('app.current_org_id', true), ''), \
    coalesce(current_setting('app.current_user_id', true), ''), \
    coalesce(current_setting('app.current_org_role', true), ''), \
    coalesce(current_setting('app.current_unit', true), ''), \
    coalesce(current_setting('app.current_permissions', true), '') \
    FROM tenancy_probe";

type Probed = Vec<(i32, String, String, String, String, String)>;

/// Creates `tenancy_probe` (distributed, no policy, 1,000 rows: every shard has some).
async fn create_probe(db: &TestDatabase) {
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE tenancy_probe (organization_id uuid NOT NULL, n int NOT NULL); \
             SELECT create_distributed_table('tenancy_probe', 'organization_id'); \
             INSERT INTO tenancy_probe SELECT gen_random_uuid(), g FROM generate_series(1, 1000) g",
        )
        .await
        .unwrap();
    owner.close().await.unwrap();
    db.grant_app(&["tenancy_probe"]).await.unwrap();
}

async fn probe(conn: &mut PgConnection) -> Probed {
    sqlx::query_as(PROBE).fetch_all(conn).await.unwrap()
}

/// In a transaction that enters no unit, on the pool's one connection: what the worker
/// connections hold, and how many projects it sees.
async fn outside_a_unit(pool: &TenantPool) -> (Probed, i64) {
    let mut conn = pool.pool().acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let probed = probe(&mut tx).await;
    let seen = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    (probed, seen)
}

fn pids(p: &Probed) -> std::collections::BTreeSet<i32> {
    p.iter().map(|r| r.0).collect()
}

/// Row 7 of docs/security.md's open findings, for the context the entries send: a unit's
/// context reaches the worker connections as `SET LOCAL`, which ends with the transaction.
/// On a pool of one connection, whose coordinator backend keeps its worker connections
/// between transactions (asserted: the same worker backends serve the next transaction), after
/// a committed unit, a unit that returned an error (rolled back), a unit that failed on a
/// worker, and a read unit, a transaction outside any unit finds every setting empty on every
/// worker connection and sees no project; the next unit, of the other organization, on the
/// same worker backends, has its own context there and sees its own rows. The check is shown
/// to catch a value that does outlive its unit (when the workers' check is removed) in
/// `a_context_left_on_a_worker_connection_is_void_outside_its_transaction`.
async fn a_units_context_ends_with_it_on_the_cached_worker_connections(role: As) {
    let Some(w) = world(role).await else { return };
    create_probe(&w.db).await;
    let pool = match role {
        As::App => w.db.app_pool(1).await,
        As::Owner => w.db.owner_pool(1).await,
    }
    .unwrap();
    let in_unit = async |org: &Org| -> Probed {
        pool.with_rls(&org.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(probe(tx).await)
        })
        .await
        .unwrap()
    };
    let expect_own = |p: &Probed, org: &Org| {
        assert!(!p.is_empty());
        for (pid, id, user, r, unit, _) in p {
            assert_eq!(
                (id.as_str(), user.as_str(), r.as_str()),
                (org.id.to_string().as_str(), org.member.as_str(), "member"),
                "worker backend {pid}"
            );
            assert!(!unit.is_empty(), "worker backend {pid}: no unit marker");
        }
    };
    // Asserts that nothing of a unit is left, and returns whether the worker backends were
    // the ones `before` used (otherwise the round proved nothing about reuse).
    let expect_nothing_left = async |before: &Probed, after_what: &str| -> bool {
        let (probed, seen) = outside_a_unit(&pool).await;
        assert!(!probed.is_empty());
        for (pid, id, user, r, unit, permissions) in &probed {
            assert!(
                [id, user, r, unit, permissions]
                    .iter()
                    .all(|v| v.is_empty()),
                "after {after_what}, worker backend {pid} holds \
                 ({id:?}, {user:?}, {r:?}, {unit:?}, {permissions:?})"
            );
        }
        assert_eq!(seen, 0, "after {after_what}, outside a unit");
        !pids(before).is_disjoint(&pids(&probed))
    };
    let mut reused = Vec::new();
    for _ in 0..3 {
        // A committed unit of A.
        let a = in_unit(&w.a).await;
        expect_own(&a, &w.a);
        reused.push(expect_nothing_left(&a, "a committed unit").await);
        // B's unit next, on the worker backends A's unit used.
        let b = in_unit(&w.b).await;
        expect_own(&b, &w.b);
        reused.push(!pids(&a).is_disjoint(&pids(&b)));
        let seen = visible(&pool, &w.b.ctx(Role::Member)).await.unwrap();
        assert_eq!(seen.len(), PROJECTS_PER_ORG);
        assert!(seen.iter().all(|o| o == w.b.id.as_uuid()), "{seen:?}");
        // A unit of A that returns an error: rolled back.
        let mut probed = Probed::new();
        let e = pool
            .with_rls(&w.a.ctx(Role::Member), async |tx| {
                probed = probe(tx).await;
                Err::<(), _>(Error::NotAMember)
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotAMember));
        expect_own(&probed, &w.a);
        reused.push(expect_nothing_left(&probed, "a rolled-back unit").await);
        // A unit of A that fails on a worker (its insert into B refused there), after a probe.
        let mut probed = Probed::new();
        let e = pool
            .with_rls(&w.a.ctx(Role::Member), async |tx| {
                probed = probe(&mut *tx).await;
                sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'x')")
                    .bind(w.b.id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
        expect_own(&probed, &w.a);
        reused.push(expect_nothing_left(&probed, "a failed unit").await);
        // A read unit (it ends with a ROLLBACK the pool does not wait for).
        let read = pool
            .with_rls_read(&w.a.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(probe(tx).await)
            })
            .await
            .unwrap();
        expect_own(&read, &w.a);
        reused.push(expect_nothing_left(&read, "a read unit").await);
    }
    // The premise: the worker backends were reused (Citus keeps one connection per worker for
    // the coordinator backend), so a setting that outlived its transaction would have been
    // found. Citus may open fresh ones now and then; most rounds reuse.
    let hits = reused.iter().filter(|r| **r).count();
    assert!(
        hits * 2 > reused.len(),
        "worker backends reused in {hits} of {} rounds",
        reused.len()
    );
}

/// Row 7 of docs/security.md's open findings, for what SQL in a unit plants: A's unit leaves
/// A's context at session level on the worker backends (a `set_config(..., false)` in a query
/// pushed down to the shards), its unit marker and the distributed transaction it names
/// included (the values A's unit has there: nothing else would pass the workers' check). A
/// transaction outside any unit on the same connection finds them on the reused worker
/// backends (the premise), and sees no project there: a worker takes the marker only in the
/// distributed transaction it was propagated in (`tenancy_current_unit_is_live`, src/citus.sql).
/// The positive controls: A's next unit, on the same connection, sees A's rows; B's, B's.
#[tokio::test]
async fn a_context_left_on_a_worker_connection_is_void_outside_its_transaction() {
    let Some(w) = world(As::App).await else {
        return;
    };
    create_probe(&w.db).await;
    let pool = w.db.app_pool(1).await.unwrap();
    let a = w.a.id.to_string();
    let mut found = false;
    for _ in 0..5 {
        // The worker backends that ran the planting query (each ran some of its shards), and
        // the marker they were left with.
        let planted: Vec<(i32, String)> = pool
            .with_rls(&w.a.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_as(
                        "SELECT DISTINCT pid, unit FROM (SELECT pg_backend_pid() AS pid, \
                         set_config('app.current_org_id', $1, false), \
                         set_config('app.current_user_id', $2, false), \
                         set_config('app.current_org_role', 'member', false), \
                         set_config('app.current_transaction', \
                                    coalesce(current_setting('app.current_transaction', true), ''), \
                                    false), \
                         set_config('app.current_unit', current_setting('app.current_unit'), \
                                    false) AS unit \
                         FROM tenancy_probe) s",
                    )
                    .bind(&a)
                    .bind(w.a.member.as_str())
                    .fetch_all(&mut *tx)
                    .await?,
                )
            })
            .await
            .unwrap();
        assert!(!planted.is_empty());
        assert!(planted.iter().all(|(_, unit)| !unit.is_empty()));
        let planted: std::collections::BTreeSet<i32> = planted.iter().map(|p| p.0).collect();
        let (probed, seen) = outside_a_unit(&pool).await;
        // Every reused worker backend holds A's values; a fresh one holds nothing.
        for r in &probed {
            if planted.contains(&r.0) {
                assert_eq!(r.1, a, "{r:?}");
                assert!(!r.4.is_empty(), "{r:?}");
            } else {
                assert_eq!((r.1.as_str(), r.4.as_str()), ("", ""), "{r:?}");
            }
        }
        // When every worker backend of that transaction was one of the planted ones, its
        // projects query ran there too.
        if !probed.is_empty() && probed.iter().all(|r| planted.contains(&r.0)) {
            assert_eq!(
                seen, 0,
                "A's rows outside a unit, on the worker backends A's unit left its context on"
            );
            found = true;
            break;
        }
    }
    assert!(found, "the worker backends were never reused");
    let seen = visible(&pool, &w.a.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| o == w.a.id.as_uuid()), "{seen:?}");
    // What the entry does to get its distributed transaction leaves Citus's own commands
    // alone: `EXPLAIN ANALYZE` in a unit (which Citus refuses once a transaction executed a
    // query locally, as a read of a reference table on the coordinator would) runs, on a
    // worker, with the unit's rows.
    let plan: Vec<String> = pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) \
                     SELECT name FROM projects WHERE organization_id = $1",
                )
                .bind(w.a.id.as_uuid())
                .fetch_all(&mut *tx)
                .await?,
            )
        })
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Citus Adaptive"), "{plan}");
    assert!(
        plan.contains(&format!("(actual rows={PROJECTS_PER_ORG} loops=1)")),
        "{plan}"
    );
    let seen = visible(&pool, &w.b.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| o == w.b.id.as_uuid()), "{seen:?}");
}

/// The session settings the entry checks on the coordinator (`tenancy_session_settings()`),
/// on the worker connections: SQL in A's unit leaves a timeout, `synchronous_commit`,
/// `row_security`, `TimeZone` and `search_path` at session level on the worker backends (a
/// `set_config(..., false)` pushed down to the shards), where the entry, reading the
/// coordinator's session, does not look. The positive control: a transaction outside any unit
/// on the same connection finds them there, on the reused worker backends. The next unit, of
/// B, on those backends, runs its shard queries with the pool's values (the coordinator's, in
/// the same unit): the entry re-asserts them as `SET LOCAL`, which Citus sends with the
/// context. Its projects query works (under `row_security = off` it would fail) and sees B's
/// rows.
#[tokio::test]
async fn settings_left_on_a_worker_connection_do_not_reach_the_next_unit() {
    let Some(w) = world(As::App).await else {
        return;
    };
    create_probe(&w.db).await;
    let pool = w.db.app_pool(1).await.unwrap();
    const SETTINGS: &str = "current_setting('statement_timeout'), \
        current_setting('synchronous_commit'), current_setting('row_security'), \
        current_setting('TimeZone'), current_setting('search_path'), \
        current_setting('standard_conforming_strings'), current_setting('array_nulls'), \
        current_setting('transaction_read_only')";
    type Settings = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    type OnWorker = (
        i32,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let settings = |r: &OnWorker| {
        (
            r.1.clone(),
            r.2.clone(),
            r.3.clone(),
            r.4.clone(),
            r.5.clone(),
            r.6.clone(),
            r.7.clone(),
            r.8.clone(),
        )
    };
    // (`default_transaction_read_only` planted: a worker transaction Citus begins names no
    // access mode, so it starts read-only there.)
    let planted_values: Settings = (
        "4321ms".into(),
        "local".into(),
        "off".into(),
        "Pacific/Chatham".into(),
        "tenancy_elsewhere".into(),
        "off".into(),
        "off".into(),
        "on".into(),
    );
    let on_workers = format!("SELECT DISTINCT pg_backend_pid(), {SETTINGS} FROM tenancy_probe");
    let mut reused = false;
    for _ in 0..5 {
        let planted: std::collections::BTreeSet<i32> = pool
            .with_rls(&w.a.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar(
                        "SELECT DISTINCT pid FROM (SELECT pg_backend_pid() AS pid, \
                         set_config('statement_timeout', '4321', false), \
                         set_config('synchronous_commit', 'local', false), \
                         set_config('row_security', 'off', false), \
                         set_config('TimeZone', 'Pacific/Chatham', false), \
                         set_config('search_path', 'tenancy_elsewhere', false), \
                         set_config('standard_conforming_strings', 'off', false), \
                         set_config('array_nulls', 'off', false), \
                         set_config('default_transaction_read_only', 'on', false) \
                         FROM tenancy_probe) s",
                    )
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect(),
                )
            })
            .await
            .unwrap();
        assert!(!planted.is_empty());
        // The positive control: outside a unit, the reused worker backends hold the values.
        let outside: Vec<OnWorker> = {
            let mut conn = pool.pool().acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(on_workers.clone()))
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            rows
        };
        assert!(!outside.is_empty());
        for r in outside.iter().filter(|r| planted.contains(&r.0)) {
            assert_eq!(
                settings(r),
                planted_values,
                "outside a unit, worker backend {}",
                r.0
            );
        }
        // B's unit: its shard queries run with the pool's values, on the same backends, and
        // its writes go through (a read-only worker transaction would refuse them; text with
        // a backslash and an array with a NULL keep their meaning).
        let (coordinator, workers, seen, written) = pool
            .with_rls(&w.b.ctx(Role::Member), async |tx| {
                let coordinator: Settings =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SETTINGS}")))
                        .fetch_one(&mut *tx)
                        .await?;
                let workers: Vec<OnWorker> =
                    sqlx::query_as(sqlx::AssertSqlSafe(on_workers.clone()))
                        .fetch_all(&mut *tx)
                        .await?;
                let seen: Vec<Uuid> = sqlx::query_scalar("SELECT organization_id FROM projects")
                    .fetch_all(&mut *tx)
                    .await?;
                let written: Vec<(String, bool)> = sqlx::query_as(
                    "UPDATE projects SET name = $2 WHERE organization_id = $1 \
                     RETURNING name, ($3::text[])[2] IS NULL",
                )
                .bind(w.b.id.as_uuid())
                .bind(r"C:\new\table")
                .bind(vec![Some("a".to_string()), None])
                .fetch_all(&mut *tx)
                .await?;
                Ok::<_, Error>((coordinator, workers, seen, written))
            })
            .await
            .unwrap();
        assert_ne!(
            coordinator.0, planted_values.0,
            "the coordinator's own session"
        );
        assert_eq!(written.len(), PROJECTS_PER_ORG);
        assert!(
            written
                .iter()
                .all(|(name, null)| name == r"C:\new\table" && *null),
            "{written:?}"
        );
        assert!(!workers.is_empty());
        for r in &workers {
            assert_eq!(
                settings(r),
                coordinator,
                "in B's unit, worker backend {}",
                r.0
            );
        }
        assert_eq!(seen.len(), PROJECTS_PER_ORG);
        assert!(seen.iter().all(|o| o == w.b.id.as_uuid()), "{seen:?}");
        // A round proves the point when B's unit ran on worker backends that held the values
        // (seen there outside a unit just before).
        if outside.iter().any(|r| planted.contains(&r.0))
            && workers.iter().all(|r| planted.contains(&r.0))
        {
            reused = true;
            break;
        }
    }
    assert!(reused, "the worker backends were never reused");
}

/// The default mode's documented limit (docs/security.md: SQL inside a unit can choose its
/// context; hardened mode, which is refused on Citus, is the defence), on Citus. A
/// `set_config` of B's organization inside A's unit changes the coordinator's setting only:
/// the distributed table, whose policy runs on the workers, still shows A's rows and refuses
/// a row for B. A `SET LOCAL` of the settings is propagated to the workers
/// (`citus.propagate_set_commands` is `local` for the rest of the unit): the unit then reads
/// and writes B's rows, as the same injection does on one server
/// (`hardened::default_mode_lets_an_injection_switch_the_context`). Either way the switch ends
/// with the unit: the next units of A and of B on the same connection see their own rows.
#[tokio::test]
async fn an_injected_context_on_citus_is_the_default_modes_limit() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let pool = w.db.app_pool(1).await.unwrap();
    let b = w.b.id.to_string();
    let injected = async |switch: &'static str| -> (Vec<Uuid>, Result<u64, Error>) {
        let b = b.clone();
        pool.with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::query(sqlx::AssertSqlSafe(switch.replace("$B", &b)))
                .execute(&mut *tx)
                .await?;
            let seen: Vec<Uuid> = sqlx::query_scalar("SELECT organization_id FROM projects")
                .fetch_all(&mut *tx)
                .await?;
            let wrote = sqlx::query(
                "INSERT INTO projects (organization_id, name) VALUES ($1::uuid, 'planted')",
            )
            .bind(&b)
            .execute(&mut *tx)
            .await
            .map(|r| r.rows_affected())
            .map_err(Error::from);
            Ok::<_, Error>((seen, wrote))
        })
        .await
        .unwrap_or_else(|e| (Vec::new(), Err(e)))
    };
    let (seen, wrote) = injected("SELECT set_config('app.current_org_id', '$B', true)").await;
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| o == w.a.id.as_uuid()), "{seen:?}");
    let e = wrote.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");

    let (seen, wrote) = injected("SET LOCAL app.current_org_id = '$B'").await;
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| o == w.b.id.as_uuid()), "{seen:?}");
    assert_eq!(wrote.unwrap(), 1);

    for org in [&w.a, &w.b] {
        let seen = visible(&pool, &org.ctx(Role::Member)).await.unwrap();
        assert!(seen.iter().all(|o| o == org.id.as_uuid()), "{seen:?}");
    }
    assert_eq!(
        visible(&pool, &w.b.ctx(Role::Member)).await.unwrap().len(),
        PROJECTS_PER_ORG + 1,
        "B holds the planted row"
    );
}

/// `ServicePool::purge_organization` on Citus deletes the organization's rows from its
/// distributed tenant tables (which lost their foreign key to `organizations` when
/// distributed, where the one-server purge finds its tables) and no other organization's: the
/// count is `projects`' rows, as on one server (`tasks`, a distributed child of `projects`, goes
/// by its `ON DELETE CASCADE`), and a distributed table without Row-Level Security (not a
/// tenant table) is left alone. The organization is marked deleted and its owner can no longer
/// enter. Controls: B's rows, tasks and members are intact.
#[tokio::test]
async fn purging_an_organization_reaches_its_distributed_tables() {
    let Some(w) = world(As::App).await else {
        return;
    };
    create_probe(&w.db).await;
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE tasks (organization_id uuid NOT NULL, project_id uuid NOT NULL, \
             id uuid NOT NULL DEFAULT gen_random_uuid(), PRIMARY KEY (organization_id, id), \
             FOREIGN KEY (organization_id, project_id) \
             REFERENCES projects (organization_id, id) ON DELETE CASCADE)",
        )
        .await
        .unwrap();
    owner
        .execute(sqlx::AssertSqlSafe(policy_sql_with(
            "tasks",
            &PolicyOptions::default().for_citus(),
        )))
        .await
        .expect("tasks, distributed beside projects");
    owner.close().await.unwrap();
    w.db.grant_app(&["tasks"]).await.unwrap();
    w.db.grant_service(&["projects"]).await.unwrap();
    for org in [&w.a, &w.b] {
        // One VALUES row per project: Citus runs an INSERT ... SELECT as a COPY, which
        // Row-Level Security refuses (docs/scaling.md).
        let projects: Vec<Uuid> = w
            .pool
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT id FROM projects")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        for p in projects {
            run(
                &w.pool,
                &org.ctx(Role::Member),
                &format!(
                    "INSERT INTO tasks (organization_id, project_id) VALUES ('{}', '{p}')",
                    org.id
                ),
            )
            .await
            .unwrap();
        }
    }
    let service = w.db.service_pool(1).await.unwrap();
    let purged = service.purge_organization(w.a.id).await.unwrap();
    assert_eq!(purged, PROJECTS_PER_ORG as u64, "projects' rows");
    let cluster = cluster().await.unwrap();
    let mut admin =
        PgConnection::connect_with(&cluster.coordinator().admin_options().database(w.db.name()))
            .await
            .unwrap();
    let mut left = async |table: &str, org: &Org| -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE organization_id = $1"
        )))
        .bind(org.id.as_uuid())
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    assert_eq!(left("projects", &w.a).await, 0, "A's projects");
    assert_eq!(left("tasks", &w.a).await, 0, "A's tasks");
    assert_eq!(left("projects", &w.b).await, PROJECTS_PER_ORG as i64);
    assert_eq!(left("tasks", &w.b).await, PROJECTS_PER_ORG as i64);
    let probe_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_probe")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(probe_rows, 1000, "not a tenant table");
    assert!(matches!(
        visible(&w.pool, &w.a.ctx(Role::Owner)).await,
        Err(Error::NotAMember)
    ));
    assert_eq!(
        visible(&w.pool, &w.b.ctx(Role::Member))
            .await
            .unwrap()
            .len(),
        PROJECTS_PER_ORG
    );
}

/// A `client_encoding` SQL in a unit leaves on the cached worker connections (Citus does not
/// propagate a `SET LOCAL` of it, so the entry cannot re-assert it) would have the next units'
/// text stored converted twice: the workers refuse it, the worker backend ends with the error,
/// and the next unit runs on a new worker connection. Positive control: before the plant, and
/// after the failed unit, B's units write and read their text exactly.
#[tokio::test]
async fn a_client_encoding_left_on_a_worker_connection_fails_one_unit_and_no_more() {
    let Some(w) = world(As::App).await else {
        return;
    };
    create_probe(&w.db).await;
    let pool = w.db.app_pool(1).await.unwrap();
    let b = w.b.ctx(Role::Member);
    let write_and_read = || async {
        pool.with_rls(&b, async |tx| {
            let names: Vec<String> = sqlx::query_scalar(
                "UPDATE projects SET name = $2 WHERE organization_id = $1 RETURNING name",
            )
            .bind(w.b.id.as_uuid())
            .bind("gärbled €")
            .fetch_all(&mut *tx)
            .await?;
            Ok::<_, Error>(names)
        })
        .await
    };
    let names = write_and_read().await.unwrap();
    assert_eq!(names, vec!["gärbled €".to_string(); PROJECTS_PER_ORG]);
    let planted: i64 = pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar(
                    "SELECT count(DISTINCT pid) FROM (SELECT pg_backend_pid() AS pid, \
                     set_config('client_encoding', 'LATIN1', false) FROM tenancy_probe) s",
                )
                .fetch_one(&mut *tx)
                .await?,
            )
        })
        .await
        .unwrap();
    assert!(planted > 0);
    let refused = write_and_read().await;
    assert!(
        refused.is_err(),
        "B's unit ran on the planted connection: {refused:?}"
    );
    let names = write_and_read().await.unwrap();
    assert_eq!(names, vec!["gärbled €".to_string(); PROJECTS_PER_ORG]);
}

/// Session settings SQL in a unit leaves on the coordinator's session that would change the
/// next units on Citus: an `application_name` of Citus's own (every later distributed query
/// failed, "cannot execute a distributed query from a query on a shard", or, the rebalancer's,
/// Citus dropped its worker connections after every transaction), and `extra_float_digits`
/// (Citus writes a bound float into the shard query as text: the next units' floats came back
/// rounded). The next entry refuses the session (TNC05), the pool closes it, and B's unit runs
/// on a new connection, its float exact.
#[tokio::test]
async fn a_coordinator_session_left_unclean_by_a_unit_is_refused_at_the_next_entry() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let pool = w.db.app_pool(1).await.unwrap();
    let unit = |ctx: OrgContext| {
        let pool = &pool;
        async move {
            pool.with_rls(&ctx, async |tx| {
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *tx)
                    .await?;
                let seen: Vec<(Uuid, f64)> =
                    sqlx::query_as("SELECT organization_id, $1::float8 FROM projects")
                        .bind(std::f64::consts::PI)
                        .fetch_all(&mut *tx)
                        .await?;
                Ok::<_, Error>((pid, seen))
            })
            .await
            .unwrap()
        }
    };
    for poison in [
        "SELECT set_config('application_name', 'citus_internal gpid=10000000001', false)",
        "SELECT set_config('application_name', 'citus_rebalancer gpid=10000000001', false)",
        "SELECT set_config('application_name', 'citus_run_command gpid=10000000001', false)",
        "SELECT set_config('extra_float_digits', '-15', false)",
    ] {
        let (before, _) = unit(w.a.ctx(Role::Member)).await;
        pool.with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::query(sqlx::AssertSqlSafe(poison))
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        let (after, seen) = unit(w.b.ctx(Role::Member)).await;
        assert_ne!(after, before, "{poison}: the session was reused");
        assert_eq!(seen.len(), PROJECTS_PER_ORG, "{poison}");
        assert!(
            seen.iter()
                .all(|(o, v)| o == w.b.id.as_uuid() && *v == std::f64::consts::PI),
            "{poison}: {seen:?}"
        );
    }
}

/// An `application_name` SQL in a unit leaves on the cached worker connections (no longer
/// Citus's, so the liveness check would not know the backend): the next unit would see no
/// rows and have its writes refused, silently. The worker recognises the unit's distributed
/// transaction, refuses it loudly and ends the backend, so at most one unit per renamed worker
/// connection fails, and the next runs on new ones. Positive control: B's units see their rows
/// before the plant and after the refused ones.
#[tokio::test]
async fn an_application_name_left_on_a_worker_connection_fails_a_unit_once_per_connection() {
    let Some(w) = world(As::App).await else {
        return;
    };
    create_probe(&w.db).await;
    let pool = w.db.app_pool(1).await.unwrap();
    let b = w.b.ctx(Role::Member);
    let count = || async {
        pool.with_rls(&b, async |tx| {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
                .fetch_one(&mut *tx)
                .await?;
            Ok::<_, Error>(n)
        })
        .await
    };
    assert_eq!(count().await.unwrap(), PROJECTS_PER_ORG as i64);
    pool.with_rls(&w.a.ctx(Role::Member), async |tx| {
        sqlx::query(
            "SELECT count(set_config('application_name', 'renamed', false)) FROM tenancy_probe",
        )
        .execute(&mut *tx)
        .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    // B's count reaches both workers, and a unit stops at the first worker that refuses it:
    // one refused unit per renamed worker connection, each ending its backend, then a clean one.
    let mut refused = Vec::new();
    let seen = loop {
        match count().await {
            Ok(n) => break n,
            Err(e) => refused.push(e.to_string()),
        }
        assert!(
            refused.len() <= 2,
            "refused more than once per worker: {refused:?}"
        );
    };
    assert!(
        !refused.is_empty(),
        "B's unit ran on the renamed worker connections and saw {seen} rows"
    );
    assert!(
        refused.iter().all(|e| e.contains("session not clean")),
        "{refused:?}"
    );
    assert_eq!(seen, PROJECTS_PER_ORG as i64);
    assert_eq!(count().await.unwrap(), PROJECTS_PER_ORG as i64);
}
