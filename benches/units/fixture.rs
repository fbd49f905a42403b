//! The data every unit runs on, and the pools (tenant, application, bypassing, hardened).

use std::net::SocketAddr;
use std::sync::Arc;

use pg_tenancy::testing::{TestCluster, TestDatabase};
use pg_tenancy::{ContextKey, Error, OrgContext, OrgId, TenantPool, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

pub(crate) const Q_RLS: &str = "SELECT name FROM projects WHERE id = $1";
/// `Q_RLS` on a copy of `projects` whose policy asks for a permission
/// (`tenancy_current_org_id_with('org:projects:read')`), which the bench user's role grants.
pub(crate) const Q_PERMITTED: &str = "SELECT name FROM projects_permitted WHERE id = $1";
pub(crate) const Q_EXPLICIT: &str =
    "SELECT name FROM projects WHERE organization_id = $1 AND id = $2";
/// The article's context statement, with what today's policies also want: the context bound
/// to its transaction.
pub(crate) const SET_CONTEXT: &str = "SELECT set_config('app.current_org_id', $1, true), \
                           set_config('app.current_unit', transaction_timestamp()::text, true)";

pub(crate) struct Fixture {
    pub(crate) db: TestDatabase,
    pub(crate) bypass_role: (String, String),
    pub(crate) ctx: OrgContext,
    pub(crate) project: Uuid,
    /// The same data in a second database in hardened mode, its key and its project id.
    pub(crate) hardened: Option<(TestDatabase, ContextKey, Uuid)>,
}

#[derive(Clone)]
pub(crate) struct Pools {
    pub(crate) tenant: TenantPool,
    pub(crate) app: PgPool,
    pub(crate) bypass: PgPool,
    /// A hardened pool on the hardened copy, and the project id there.
    pub(crate) hardened: Option<(TenantPool, Uuid)>,
    /// The article's membership lookup runs on a connection of its own (as a bypassing role:
    /// the article's lookup ran without a tenant context), so that its pool's release ping,
    /// which runs concurrently and off the caller's path, does not enter the round-trip count.
    pub(crate) lookup: Arc<tokio::sync::Mutex<PgConnection>>,
    /// The bypassing role's session settings as `tenancy_enter` reads them (the literal a pool
    /// sends), for the `context_without_rls` diagnostic's own entry.
    pub(crate) bypass_settings: Arc<str>,
}

pub(crate) async fn pool(options: PgConnectOptions, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(max)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap()
}

pub(crate) async fn pools(f: &Fixture, addr: SocketAddr, max: u32) -> Pools {
    let app = pool(f.db.app_options_at(addr), max).await;
    let bypass_opts =
        f.db.app_options_at(addr)
            .username(&f.bypass_role.0)
            .password(&f.bypass_role.1);
    let hardened = match &f.hardened {
        Some((db, key, project)) => Some((
            TenantPool::hardened(pool(db.app_options_at(addr), max).await, key.clone())
                .await
                .unwrap(),
            *project,
        )),
        None => None,
    };
    let bypass = pool(bypass_opts.clone(), max).await;
    let settings: String = sqlx::query_scalar("SELECT tenancy_session_settings()")
        .fetch_one(&bypass)
        .await
        .unwrap();
    Pools {
        hardened,
        tenant: TenantPool::new(app.clone()).await.unwrap(),
        app,
        lookup: Arc::new(tokio::sync::Mutex::new(
            PgConnection::connect_with(&bypass_opts).await.unwrap(),
        )),
        bypass,
        bypass_settings: Arc::from(settings),
    }
}

/// `projects_permitted`: a copy of `projects` under a permission-guarded policy, and the
/// owners' role granting that permission (set up as the cluster's superuser; measurements
/// never use it).
pub(crate) async fn permitted_copy(db: &TestDatabase) {
    let cluster = TestCluster::global().unwrap();
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    let app = db.app_options().get_username().to_owned();
    for sql in [
        "CREATE TABLE projects_permitted AS SELECT * FROM projects".to_owned(),
        "ALTER TABLE projects_permitted ADD PRIMARY KEY (organization_id, id)".to_owned(),
        "ALTER TABLE projects_permitted ENABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE projects_permitted FORCE ROW LEVEL SECURITY".to_owned(),
        "CREATE POLICY permitted ON projects_permitted \
         USING (organization_id = (SELECT tenancy_current_org_id_with('org:projects:read')))"
            .to_owned(),
        format!("GRANT SELECT ON projects_permitted TO {app}"),
        "SELECT tenancy_set_role_permissions('owner', ARRAY['org:projects:read'])".to_owned(),
        "ANALYZE projects_permitted".to_owned(),
    ] {
        admin.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
}

/// A role that bypasses RLS (not superuser), with the same grants as the application role.
pub(crate) async fn bypass_role(db: &TestDatabase) -> (String, String) {
    let cluster = TestCluster::global().unwrap();
    let name = format!("{}_bypass", db.name());
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    let password = Uuid::new_v4().simple().to_string();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN BYPASSRLS PASSWORD '{password}'"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"
        )))
        .await
        .unwrap();
    (name, password)
}

pub(crate) async fn fixture() -> Fixture {
    let mut f = unhardened_fixture().await;
    let copy = unhardened_fixture().await;
    let key = ContextKey::generate();
    copy.db.harden(&key, 1).await.unwrap();
    f.hardened = Some((copy.db, key, copy.project));
    f
}

pub(crate) async fn unhardened_fixture() -> Fixture {
    let db = crate::support::database().await;
    let tenant = db.app_pool(2).await.unwrap();
    let user = UserId::new("user_bench").unwrap();
    let mut ctx = None;
    let mut project = Uuid::nil();
    for i in 0..10 {
        let org = OrgId::from_external_id(&format!("org_bench_{i}"));
        let c = tenant
            .create_organization(org, &format!("Bench {i}"), None, &user)
            .await
            .unwrap();
        let ids: Vec<Uuid> = tenant
            .with_rls(&c, async |tx| {
                let mut ids = Vec::new();
                for p in 0..100 {
                    ids.push(
                        sqlx::query_scalar("INSERT INTO projects (organization_id, name) VALUES ($1, $2) RETURNING id")
                            .bind(org.as_uuid())
                            .bind(format!("project {p}"))
                            .fetch_one(&mut *tx)
                            .await?,
                    );
                }
                Ok::<_, Error>(ids)
            })
            .await
            .unwrap();
        if i == 3 {
            project = ids[42];
            ctx = Some(tenant.authorize(&user, org).await.unwrap());
        }
    }
    let bypass_role = bypass_role(&db).await;
    permitted_copy(&db).await;
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    owner.execute("ANALYZE").await.unwrap();
    Fixture {
        db,
        bypass_role,
        ctx: ctx.unwrap(),
        project,
        hardened: None,
    }
}
