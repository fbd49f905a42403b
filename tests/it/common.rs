use pg_tenancy::testing::TestDatabase;
use pg_tenancy::{Error, OrgContext, OrgId, Role, ServicePool, TenantPool, UserId};
use sqlx::PgPool;
use uuid::Uuid;

/// Which role the pool under test connects as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum As {
    App,
    Owner,
}

#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub(crate) id: OrgId,
    pub(crate) owner: UserId,
    pub(crate) admin: UserId,
    pub(crate) member: UserId,
    pub(crate) project: Uuid,
}

impl Org {
    pub(crate) fn ctx(&self, role: Role) -> OrgContext {
        let user = match role {
            Role::Owner => &self.owner,
            Role::Admin => &self.admin,
            Role::Member => &self.member,
        };
        OrgContext::from_verified_session(self.id, user.clone(), role)
    }
}

pub(crate) struct World {
    pub(crate) db: TestDatabase,
    pub(crate) pool: TenantPool,
    pub(crate) a: Org,
    pub(crate) b: Org,
}

pub(crate) async fn world(role: As) -> World {
    world_with(role, 5).await
}

/// The example application's own migrations (its `projects` table), applied beside
/// pg-tenancy's as a user's would be.
pub(crate) static APP_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./examples/migrations");

/// A fresh database with pg-tenancy's migrations, then the application's own (`projects`),
/// granted to the application and service roles: what a deployment does.
pub(crate) async fn database() -> TestDatabase {
    let db = TestDatabase::create().await.expect("test database");
    with_projects(&db).await;
    db
}

/// The application's migrations and grants on `db` (made by `TestDatabase::create*`).
pub(crate) async fn with_projects(db: &TestDatabase) {
    db.migrate(&APP_MIGRATOR)
        .await
        .expect("the app's migrations");
    db.grant_app(&["projects", "invoices"])
        .await
        .expect("grant to the app role");
    db.grant_service(&["projects", "invoices"])
        .await
        .expect("grant to the service role");
}

pub(crate) async fn world_with(role: As, max_connections: u32) -> World {
    let db = database().await;
    let pool = match crate::bouncer::shared() {
        // TENANCY_VIA_PGBOUNCER=1: the suite's pools go through PgBouncer in transaction mode.
        Some(bouncer) => {
            bouncer.allow(&db);
            let options = match role {
                As::App => db.app_options_at(bouncer.addr()),
                As::Owner => db.owner_options_at(bouncer.addr()),
            };
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options.statement_cache_capacity(0))
                .await
                .expect("pool through pgbouncer");
            TenantPool::new(pool).await.expect("tenant pool")
        }
        None => match role {
            As::App => db.app_pool(max_connections).await,
            As::Owner => db.owner_pool(max_connections).await,
        }
        .expect("pool"),
    };
    let a = seed_org(&pool, "alpha").await;
    let b = seed_org(&pool, "beta").await;
    World { db, pool, a, b }
}

/// Creates an organization with an owner, an admin, a member and one project through the
/// request paths: the owner bootstraps it, the owner adds the others, the member adds a project.
pub(crate) async fn seed_org(pool: &TenantPool, slug: &str) -> Org {
    let id = OrgId::from_external_id(&format!("org_{slug}"));
    let user = |r: &str| UserId::new(format!("user_{slug}_{r}")).unwrap();
    let org = Org {
        id,
        owner: user("owner"),
        admin: user("admin"),
        member: user("member"),
        project: Uuid::new_v4(),
    };
    let owner = pool
        .create_organization(id, &format!("Org {slug}"), Some(slug), &org.owner)
        .await
        .expect("create organization");
    pool.add_member(&owner, &org.admin, Role::Admin)
        .await
        .expect("add admin");
    pool.add_member(&owner, &org.member, Role::Member)
        .await
        .expect("add member");
    let o = org.clone();
    pool.with_rls(&org.ctx(Role::Member), async |tx| {
        sqlx::query("INSERT INTO projects (organization_id, id, name) VALUES ($1, $2, $3)")
            .bind(o.id.as_uuid())
            .bind(o.project)
            .bind(format!("{slug} project"))
            .execute(&mut *tx)
            .await?;
        Ok::<_, pg_tenancy::Error>(())
    })
    .await
    .expect("seed project");
    org
}

/// The organization of every project a read unit as `ctx` sees, with no `WHERE`: what the
/// policies let through.
pub(crate) async fn visible_project_orgs(
    pool: &TenantPool,
    ctx: &OrgContext,
) -> Result<Vec<Uuid>, Error> {
    pool.with_rls_read(ctx, async |tx| {
        Ok(sqlx::query_scalar("SELECT organization_id FROM projects")
            .fetch_all(tx)
            .await?)
    })
    .await
}

/// The same through a service unit inside `org`.
pub(crate) async fn service_project_orgs(service: &ServicePool, org: OrgId) -> Vec<Uuid> {
    service
        .with_org(org, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT organization_id FROM projects")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await
        .unwrap()
}

/// What a connection carries between units: the org setting and the rows it can see.
pub(crate) async fn leftover_context(pool: &PgPool) -> (Option<String>, i64) {
    let mut conn = pool.acquire().await.expect("acquire");
    // Every context setting a unit sets, not only the organization; one simple-protocol
    // message (it also runs through PgBouncer in transaction mode, TENANCY_VIA_PGBOUNCER).
    let row = sqlx::raw_sql(
        "SELECT nullif(concat_ws(',', \
                    nullif(current_setting('app.current_org_id', true), ''), \
                    nullif(current_setting('app.current_user_id', true), ''), \
                    nullif(current_setting('app.current_org_role', true), '')), ''), \
                (SELECT count(*) FROM projects)",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("leftover context");
    (
        sqlx::Row::try_get(&row, 0).expect("setting"),
        sqlx::Row::try_get(&row, 1).expect("count"),
    )
}

/// Generates one test per role for an isolation case.
macro_rules! both_roles {
    ($($case:ident),* $(,)?) => {
        mod as_app {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::As::App).await })*
        }
        mod as_owner {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::As::Owner).await })*
        }
    };
}
pub(crate) use both_roles;

/// The backend serving the next unit of a pool of one.
pub(crate) async fn backend_pid(pool: &TenantPool, ctx: &OrgContext) -> i32 {
    pool.with_rls_read(ctx, async |tx| {
        Ok::<_, Error>(
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(tx)
                .await?,
        )
    })
    .await
    .unwrap()
}

/// How many projects a read unit as `ctx` sees, with no `WHERE`.
pub(crate) async fn project_orgs_count(w: &World, ctx: &OrgContext) -> i64 {
    w.pool
        .with_rls_read(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap()
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(e: &Error) -> Option<String> {
    match e {
        Error::Database(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs `sql` in a read-write unit as `ctx`; rows affected.
pub(crate) async fn run(pool: &TenantPool, ctx: &OrgContext, sql: &str) -> Result<u64, Error> {
    pool.with_rls(ctx, async |tx| {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(tx)
            .await?
            .rows_affected())
    })
    .await
}
