//! 3. The policy's cost on many rows, with the plans' node types.

use std::net::SocketAddr;
use std::time::Instant;

use pg_tenancy::testing::TestCluster;
use pg_tenancy::{Error, OrgContext, OrgId, Role, UserId};
use sqlx::{Connection, Executor, PgConnection};
use tokio::runtime::Runtime;
use uuid::Uuid;

use crate::*;

// ---- 3. policy cost ----------------------------------------------------------------------

pub(crate) struct PolicyFixture {
    pub(crate) pools: Pools,
    pub(crate) orgs: Vec<OrgId>,
    pub(crate) user: UserId,
}

pub(crate) async fn policy_fixture(
    server: SocketAddr,
    orgs: usize,
    per_org: usize,
) -> PolicyFixture {
    let db = crate::support::database().await;
    let cluster = TestCluster::global().unwrap();
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    let ids: Vec<OrgId> = (0..orgs)
        .map(|i| OrgId::from_external_id(&format!("org_policy_{i}")))
        .collect();
    let uuids: Vec<Uuid> = ids.iter().map(|o| *o.as_uuid()).collect();
    // Bulk load as the cluster's superuser (setup only; measurements never use it).
    sqlx::query(
        "INSERT INTO organizations (id, name) SELECT id, id::text FROM unnest($1::uuid[]) AS id",
    )
    .bind(&uuids)
    .execute(&mut admin)
    .await
    .unwrap();
    // Members' role grants the permission the permission-guarded copy asks for.
    sqlx::query("SELECT tenancy_set_role_permissions('member', ARRAY['org:projects:read'])")
        .execute(&mut admin)
        .await
        .unwrap();
    // The listing's user is a member of every organization (every unit checks membership).
    sqlx::query(
        "INSERT INTO organization_members (organization_id, user_id, role) \
         SELECT id, 'user_policy', 'member' FROM unnest($1::uuid[]) AS id",
    )
    .bind(&uuids)
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO projects (organization_id, name) \
         SELECT o, 'project ' || g FROM unnest($1::uuid[]) AS o, generate_series(1, $2) AS g",
    )
    .bind(&uuids)
    .bind(per_org as i32)
    .execute(&mut admin)
    .await
    .unwrap();
    let app_role = db.app_options().get_username().to_owned();
    // A copy of the table under the article's policy (text cast, no bare column).
    for sql in [
        "CREATE TABLE projects_text_cast_policy AS SELECT * FROM projects".to_owned(),
        "ALTER TABLE projects_text_cast_policy ADD PRIMARY KEY (organization_id, id)".to_owned(),
        "ALTER TABLE projects_text_cast_policy ENABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE projects_text_cast_policy FORCE ROW LEVEL SECURITY".to_owned(),
        "CREATE POLICY text_cast_policy ON projects_text_cast_policy \
         USING (organization_id::text = current_setting('app.current_org_id', true))"
            .to_owned(),
        format!("GRANT SELECT ON projects_text_cast_policy TO {app_role}"),
        "CREATE TABLE projects_role_policy AS SELECT * FROM projects".to_owned(),
        "ALTER TABLE projects_role_policy ADD PRIMARY KEY (organization_id, id)".to_owned(),
        "ALTER TABLE projects_role_policy ENABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE projects_role_policy FORCE ROW LEVEL SECURITY".to_owned(),
        "CREATE POLICY role_policy ON projects_role_policy \
         USING (organization_id = (SELECT tenancy_current_org_id()) \
                AND (SELECT tenancy_current_org_role()) IN ('member', 'admin', 'owner'))"
            .to_owned(),
        format!("GRANT SELECT ON projects_role_policy TO {app_role}"),
        "CREATE TABLE projects_permission_policy AS SELECT * FROM projects".to_owned(),
        "ALTER TABLE projects_permission_policy ADD PRIMARY KEY (organization_id, id)".to_owned(),
        "ALTER TABLE projects_permission_policy ENABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE projects_permission_policy FORCE ROW LEVEL SECURITY".to_owned(),
        "CREATE POLICY permission_policy ON projects_permission_policy \
         USING (organization_id = (SELECT tenancy_current_org_id_with('org:projects:read')))"
            .to_owned(),
        format!("GRANT SELECT ON projects_permission_policy TO {app_role}"),
        "VACUUM ANALYZE projects_permission_policy".to_owned(),
        "VACUUM ANALYZE projects_role_policy".to_owned(),
        "VACUUM ANALYZE projects".to_owned(),
        "VACUUM ANALYZE projects_text_cast_policy".to_owned(),
    ] {
        admin.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    let bypass_role = bypass_role(&db).await;
    let user = UserId::new("user_policy").unwrap();
    let f = Fixture {
        db,
        bypass_role,
        ctx: OrgContext::from_verified_session(ids[0], user.clone(), Role::Member),
        project: Uuid::nil(),
        hardened: None,
    };
    PolicyFixture {
        pools: pools(&f, server, 4).await,
        orgs: ids,
        user,
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Listing {
    Rls,
    ExplicitWhere,
    /// The article's policy on a copy: the column cast to text and compared with the setting
    /// (lines: `seed_policy`).
    TextCastPolicy,
    /// The tenant policy and a role condition (`tenancy_current_org_role()`), on a copy.
    RolePolicy,
    /// The permission-guarded form (`tenancy_current_org_id_with(...)`), on a copy.
    PermissionPolicy,
}

pub(crate) async fn listing(kind: Listing, p: &Pools, org: OrgId, user: &UserId) -> usize {
    match kind {
        Listing::Rls | Listing::RolePolicy | Listing::PermissionPolicy => {
            let ctx = OrgContext::from_verified_session(org, user.clone(), Role::Member);
            let sql = match kind {
                Listing::Rls => "SELECT id, name FROM projects",
                Listing::RolePolicy => "SELECT id, name FROM projects_role_policy",
                _ => "SELECT id, name FROM projects_permission_policy",
            };
            p.tenant
                .with_rls_read(&ctx, async |tx| {
                    Ok::<_, Error>(sqlx::query(sql).fetch_all(tx).await?.len())
                })
                .await
                .unwrap()
        }
        Listing::ExplicitWhere => {
            let mut tx = p.bypass.begin_with("BEGIN READ ONLY").await.unwrap();
            sqlx::query("SELECT id, name FROM projects WHERE organization_id = $1")
                .bind(org.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .unwrap()
                .len()
        }
        Listing::TextCastPolicy => {
            let mut tx = p.app.begin_with("BEGIN READ ONLY").await.unwrap();
            sqlx::query(SET_CONTEXT)
                .bind(org.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("SELECT id, name FROM projects_text_cast_policy")
                .fetch_all(&mut *tx)
                .await
                .unwrap()
                .len()
        }
    }
}

/// Node types of the plan, outermost first, as PostgreSQL reports them.
pub(crate) async fn plan(p: &Pools, kind: Listing, org: OrgId) -> String {
    let (pool, sql, set) = match kind {
        Listing::Rls => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects",
            true,
        ),
        Listing::ExplicitWhere => (
            &p.bypass,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects WHERE organization_id = $1",
            false,
        ),
        Listing::TextCastPolicy => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects_text_cast_policy",
            true,
        ),
        Listing::RolePolicy => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects_role_policy",
            true,
        ),
        Listing::PermissionPolicy => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects_permission_policy",
            true,
        ),
    };
    let mut tx = pool.begin().await.unwrap();
    if set {
        sqlx::query(SET_CONTEXT)
            .bind(org.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let q = sqlx::query_scalar::<_, sqlx::types::JsonValue>(sql);
    let q = if set { q } else { q.bind(org.as_uuid()) };
    let json = q.fetch_one(&mut *tx).await.unwrap();
    let mut nodes = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(t) = v.get("Node Type").and_then(|t| t.as_str()) {
            out.push(t.to_owned());
        }
        for child in v
            .get("Plans")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            walk(child, out);
        }
    }
    walk(&json[0]["Plan"], &mut nodes);
    nodes.join(" > ")
}

pub(crate) fn policy_section(c: &mut criterion::Criterion, rt: &Runtime, server: SocketAddr) {
    // 3. Policy cost.
    let (orgs, per_org) = if support::fast() {
        (1000, 50)
    } else {
        (1000, 1000)
    };
    let pf = rt.block_on(policy_fixture(server, orgs, per_org));
    support::report("policy.rows", orgs * per_org);
    let mut group = c.benchmark_group("policy");
    for (name, kind) in [
        ("rls", Listing::Rls),
        ("explicit_where", Listing::ExplicitWhere),
        ("seed_policy", Listing::TextCastPolicy),
        ("role_policy", Listing::RolePolicy),
        ("permission_policy", Listing::PermissionPolicy),
    ] {
        let key = format!("policy/{name}");
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, orgs, user, key) = (
                    pf.pools.clone(),
                    pf.orgs.clone(),
                    pf.user.clone(),
                    key.clone(),
                );
                async move {
                    let t = Instant::now();
                    for i in 0..iters as usize {
                        let n = listing(kind, &p, orgs[i % orgs.len()], &user).await;
                        assert_eq!(n, per_org);
                    }
                    let e = t.elapsed();
                    support::record(&key, e, iters);
                    e
                }
            })
        });
        support::report(
            &format!("plan.{name}"),
            rt.block_on(plan(&pf.pools, kind, pf.orgs[7])),
        );
    }
    group.finish();
    // Figures from interleaved rounds, as for the unit latencies (see `latency`).
    let kinds = [
        ("rls", Listing::Rls, 50),
        ("explicit_where", Listing::ExplicitWhere, 50),
        ("seed_policy", Listing::TextCastPolicy, 2),
        ("role_policy", Listing::RolePolicy, 50),
        ("permission_policy", Listing::PermissionPolicy, 50),
    ];
    let rounds = if support::fast() { 5 } else { 21 };
    rt.block_on(async {
        let mut next = 0;
        for round in 0..rounds {
            for k in 0..kinds.len() {
                let (name, kind, batch) = kinds[(round + k) % kinds.len()];
                let t = Instant::now();
                for _ in 0..batch {
                    next += 1;
                    listing(kind, &pf.pools, pf.orgs[next % pf.orgs.len()], &pf.user).await;
                }
                support::record(&format!("policy/{name}/interleaved"), t.elapsed(), batch);
            }
        }
    });
    let pm = |n: &str| support::median_all(&format!("policy/{n}/interleaved"));
    for n in [
        "rls",
        "explicit_where",
        "seed_policy",
        "role_policy",
        "permission_policy",
    ] {
        support::report_time(&format!("time.policy.{n}"), pm(n));
    }
    support::report_ratio(
        "ratio.policy.rls_vs_explicit_where",
        pm("rls") / pm("explicit_where"),
    );
    support::report_ratio(
        "ratio.policy.seed_policy_vs_rls",
        pm("seed_policy") / pm("rls"),
    );
    support::report_ratio(
        "ratio.policy.role_policy_vs_rls",
        pm("role_policy") / pm("rls"),
    );
    support::report_ratio(
        "ratio.policy.permission_policy_vs_rls",
        pm("permission_policy") / pm("rls"),
    );
}
