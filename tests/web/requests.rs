//! The adapters' request path over HTTP, the same cases for axum and actix-web: the context
//! comes from the verified token with no lookup, the unit's entry decides (round trips counted
//! at a proxy in front of the server), and what a token's stale role does.
//!
//! Each app serves the same routes on a pool of one connection through a [`TcpProxy`] (and a
//! service pool through another); a middleware answers, in a header, the round trips the
//! request waited for on each, counted from the moment the request reached the app (before its
//! extractors) to the moment its handler returned (a read unit's queued `ROLLBACK`, flushed by
//! the pool's release task afterwards, is off the request's path, as in `tests/it/round_trips`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

use pg_tenancy::clerk::RoleMapping;
use pg_tenancy::testing::{DevTokenIssuer, TcpProxy, TestCluster, TestDatabase};
use pg_tenancy::web::{Admin, ApiError, RequireRole, Tenancy};
use pg_tenancy::{Error, OrgContext, OrgId, Role, ServicePool, TenantPool, UserId};
use sqlx::Connection as _;

const ORG: &str = "org_requests";
/// The tenant pool's round trips during the request.
const TRIPS: &str = "x-round-trips";
/// The service pool's (the token's membership claims).
const SERVICE_TRIPS: &str = "x-service-round-trips";

/// The database, the token issuer and the two proxies both apps connect through.
struct World {
    db: TestDatabase,
    /// A password set for the service role, for its pool's TCP connections (the harness's
    /// unix socket trusts local roles; TCP asks for one). A throwaway value; never printed.
    service_password: String,
    issuer: DevTokenIssuer,
    tenant: Arc<TcpProxy>,
    service: Arc<TcpProxy>,
}

impl World {
    async fn new() -> World {
        let db = TestDatabase::create().await.unwrap();
        db.migrate(&sqlx::migrate!("./examples/migrations"))
            .await
            .unwrap();
        db.grant_app(&["projects", "invoices"]).await.unwrap();
        db.grant_service(&["projects", "invoices"]).await.unwrap();
        let pool = db.app_pool(1).await.unwrap();
        let owner = pool
            .create_organization(
                OrgId::from_external_id(ORG),
                "Requests",
                None,
                &user("user_owner"),
            )
            .await
            .unwrap();
        for (name, role) in [
            ("user_admin", Role::Admin),
            ("user_member", Role::Member),
            ("user_leaver", Role::Member),
        ] {
            pool.add_member(&owner, &user(name), role).await.unwrap();
        }
        // Removed in the application (a request unit: recorded as a local removal, which no
        // token's claim undoes).
        pool.with_rls(&owner, async |tx| {
            sqlx::query("DELETE FROM organization_members WHERE user_id = 'user_leaver'")
                .execute(tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        let server = TestCluster::global()
            .unwrap()
            .tcp_address()
            .expect("harness TCP listener");
        let service_password = uuid::Uuid::new_v4().simple().to_string();
        let mut admin = sqlx::PgConnection::connect_with(&Self::admin_options(&db))
            .await
            .unwrap();
        // The role name is generated from letters, digits and '_'; the password is hex.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE \"{}\" PASSWORD '{service_password}'",
            db.service_role()
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        World {
            db,
            service_password,
            issuer: DevTokenIssuer::generate("https://clerk.requests.test").unwrap(),
            tenant: Arc::new(TcpProxy::start(server, Duration::ZERO).unwrap()),
            service: Arc::new(TcpProxy::start(server, Duration::ZERO).unwrap()),
        }
    }

    /// The apps' state: one connection each, through the proxies, with token memberships on.
    async fn tenancy(&self) -> Tenancy {
        let pool = self.db.app_pool_at(self.tenant.addr(), 1).await.unwrap();
        let addr = self.service.addr();
        let service = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(
                sqlx::postgres::PgConnectOptions::new_without_pgpass()
                    .host(&addr.ip().to_string())
                    .port(addr.port())
                    .ssl_mode(sqlx::postgres::PgSslMode::Disable)
                    .database(self.db.name())
                    .username(self.db.service_role())
                    .password(&self.service_password),
            )
            .await
            .unwrap();
        let service = ServicePool::new(service).await.unwrap();
        // A custom Clerk role that maps to owner: a claim of it lands as admin at most.
        let roles = RoleMapping::default().with_role("org:founder", Role::Owner);
        Tenancy::new(pool, self.issuer.verifier().with_roles(roles)).with_token_memberships(service)
    }

    /// A Clerk-shaped token for `name` with the organization active, claiming `role` (Clerk's
    /// key without `org:`).
    fn token(&self, name: &str, role: &str) -> String {
        self.issuer.token(name, Some((ORG, role)))
    }

    /// Sets `name`'s role in the database, through the service path (as the webhook sync
    /// does): a change made after the token was issued.
    async fn set_role(&self, name: &str, role: Role) {
        let service = self.db.service_pool(1).await.unwrap();
        let org = OrgId::from_external_id(ORG);
        let changed = service
            .with_org(org, async |tx| {
                Ok::<_, Error>(
                    sqlx::query(
                        "UPDATE organization_members SET role = $1 \
                         WHERE organization_id = $2 AND user_id = $3",
                    )
                    .bind(role)
                    .bind(org)
                    .bind(user(name))
                    .execute(tx)
                    .await?
                    .rows_affected(),
                )
            })
            .await
            .unwrap();
        assert_eq!(changed, 1);
    }

    /// The cluster's superuser on this database (no policy applies to it): to check what was
    /// written, never to serve.
    fn admin_options(db: &TestDatabase) -> sqlx::postgres::PgConnectOptions {
        TestCluster::global()
            .unwrap()
            .admin_options()
            .database(db.name())
    }

    /// One number, read by the superuser: what was written.
    async fn count(&self, sql: &str, name: &str) -> i64 {
        let mut admin = sqlx::PgConnection::connect_with(&Self::admin_options(&self.db))
            .await
            .unwrap();
        let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        n
    }

    /// The projects named `name`.
    async fn projects_named(&self, name: &str) -> i64 {
        self.count("SELECT count(*) FROM projects WHERE name = $1", name)
            .await
    }

    /// Whether `name` is a member.
    async fn is_member(&self, name: &str) -> bool {
        self.count(
            "SELECT count(*) FROM organization_members WHERE user_id = $1",
            name,
        )
        .await
            == 1
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

// ---- the handlers, framework-free ------------------------------------------------------------

/// Inserts a project named `name`; the role the unit acted with.
async fn insert(tenancy: &Tenancy, ctx: &OrgContext, name: &str) -> Result<Value, ApiError> {
    let role: String = tenancy
        .pool()
        .with_rls(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar(
                    "INSERT INTO projects (organization_id, name) VALUES ($1, $2) \
                     RETURNING tenancy_current_org_role()",
                )
                .bind(ctx.org_id())
                .bind(name)
                .fetch_one(tx)
                .await?,
            )
        })
        .await?;
    Ok(serde_json::json!({ "acted_as": role, "token_role": ctx.role() }))
}

/// Counts the projects in one read unit.
async fn count(tenancy: &Tenancy, ctx: &OrgContext) -> Result<i64, ApiError> {
    Ok(tenancy
        .pool()
        .with_rls_read(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await?)
}

// ---- the two apps ----------------------------------------------------------------------------

/// `POST /projects` (a write unit), `GET /projects` (a read unit), `GET /twice` (two read
/// units), `POST /admin/projects` (`RequireRole<Admin>`, a write unit), `GET /context` (no
/// unit).
async fn serve_axum(world: &World) -> String {
    use axum::Router;
    use axum::extract::{Request, State};
    use axum::middleware::{Next, from_fn};
    use axum::routing::{get, post};

    let (tenant, service) = (world.tenant.clone(), world.service.clone());
    let counted = from_fn(move |request: Request, next: Next| {
        let (tenant, service) = (tenant.clone(), service.clone());
        async move {
            let before = (tenant.stats().round_trips(), service.stats().round_trips());
            let mut response = next.run(request).await;
            let trips = tenant.stats().round_trips() - before.0;
            let service_trips = service.stats().round_trips() - before.1;
            let headers = response.headers_mut();
            headers.insert(TRIPS, trips.into());
            headers.insert(SERVICE_TRIPS, service_trips.into());
            response
        }
    });
    let router = Router::new()
        .route(
            "/projects",
            post(|State(t): State<Tenancy>, ctx: OrgContext| async move {
                insert(&t, &ctx, "web")
                    .await
                    .map(|v| (axum::http::StatusCode::CREATED, axum::Json(v)))
            })
            .get(|State(t): State<Tenancy>, ctx: OrgContext| async move {
                count(&t, &ctx).await.map(axum::Json)
            }),
        )
        .route(
            "/twice",
            get(|State(t): State<Tenancy>, ctx: OrgContext| async move {
                let first = count(&t, &ctx).await?;
                let second = count(&t, &ctx).await?;
                Ok::<_, ApiError>(axum::Json(first + second))
            }),
        )
        .route(
            "/admin/projects",
            post(
                |State(t): State<Tenancy>, ctx: RequireRole<Admin>| async move {
                    insert(&t, &ctx, "admin")
                        .await
                        .map(|v| (axum::http::StatusCode::CREATED, axum::Json(v)))
                },
            ),
        )
        .route(
            "/context",
            get(|ctx: OrgContext| async move { ctx.role().to_string() }),
        )
        .layer(counted)
        .with_state(world.tenancy().await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// The same routes in actix-web, in a system on a thread of its own with one worker (whose
/// runtime runs the handler and the pool's release task, one after the other).
async fn serve_actix(world: &Arc<World>) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::dev::Service as _;
    use actix_web::{App, HttpResponse, HttpServer, web};

    async fn created(t: web::Data<Tenancy>, ctx: OrgContext) -> Result<HttpResponse, ApiError> {
        Ok(HttpResponse::Created().json(insert(&t, &ctx, "web").await?))
    }
    async fn list(t: web::Data<Tenancy>, ctx: OrgContext) -> Result<HttpResponse, ApiError> {
        Ok(HttpResponse::Ok().json(count(&t, &ctx).await?))
    }
    async fn twice(t: web::Data<Tenancy>, ctx: OrgContext) -> Result<HttpResponse, ApiError> {
        let first = count(&t, &ctx).await?;
        let second = count(&t, &ctx).await?;
        Ok(HttpResponse::Ok().json(first + second))
    }
    async fn admin(
        t: web::Data<Tenancy>,
        ctx: RequireRole<Admin>,
    ) -> Result<HttpResponse, ApiError> {
        Ok(HttpResponse::Created().json(insert(&t, &ctx, "admin").await?))
    }
    async fn context(ctx: OrgContext) -> String {
        ctx.role().to_string()
    }

    let world = world.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let tenancy = world.tenancy().await;
            let server = HttpServer::new(move || {
                let (tenant, service) = (world.tenant.clone(), world.service.clone());
                App::new()
                    .app_data(web::Data::new(tenancy.clone()))
                    .wrap_fn(move |request, srv| {
                        let before = (tenant.stats().round_trips(), service.stats().round_trips());
                        let (tenant, service) = (tenant.clone(), service.clone());
                        let call = srv.call(request);
                        async move {
                            let mut response = call.await?;
                            let trips = tenant.stats().round_trips() - before.0;
                            let service_trips = service.stats().round_trips() - before.1;
                            let headers = response.headers_mut();
                            headers.insert(TRIPS.try_into().unwrap(), trips.into());
                            headers.insert(SERVICE_TRIPS.try_into().unwrap(), service_trips.into());
                            Ok(response)
                        }
                    })
                    .route("/projects", web::post().to(created))
                    .route("/projects", web::get().to(list))
                    .route("/twice", web::get().to(twice))
                    .route("/admin/projects", web::post().to(admin))
                    .route("/context", web::get().to(context))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
            let base = format!("http://{}", server.addrs()[0]);
            let server = server.run();
            tx.send((base, server.handle())).unwrap();
            server.await.unwrap();
        });
    });
    tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap()
}

// ---- the cases -------------------------------------------------------------------------------

/// One answer: status, JSON body (`Null` when not JSON), tenant and service round trips.
struct Answer {
    status: StatusCode,
    body: Value,
    trips: u64,
    service_trips: u64,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

async fn call(base: &str, method: reqwest::Method, path: &str, token: &str) -> Answer {
    // Let the previous request's release (its ping, a read unit's queued ROLLBACK) finish.
    // (On a loaded machine the app's runtime may wait for a core: generously.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let header =
        |name: &str| -> u64 { response.headers()[name].to_str().unwrap().parse().unwrap() };
    let (trips, service_trips) = (header(TRIPS), header(SERVICE_TRIPS));
    let status = response.status();
    let text = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        trips,
        service_trips,
    }
}

async fn post(base: &str, path: &str, token: &str) -> Answer {
    call(base, reqwest::Method::POST, path, token).await
}

/// The round trips of `path` for `token`, after a warm-up request (which prepares the
/// statements on the connection), the same over five requests.
async fn steady_trips(base: &str, method: reqwest::Method, path: &str, token: &str) -> u64 {
    let warm = call(base, method.clone(), path, token).await;
    assert!(warm.status.is_success(), "{path}: {:?}", warm.body);
    let mut counts = Vec::new();
    for _ in 0..5 {
        let answer = call(base, method.clone(), path, token).await;
        assert!(answer.status.is_success(), "{path}: {:?}", answer.body);
        assert_eq!(answer.service_trips, 0, "{path}: no claim for a member");
        counts.push(answer.trips);
    }
    counts.dedup();
    assert_eq!(counts.len(), 1, "{path}: unstable round trips {counts:?}");
    counts[0]
}

/// A write request costs 3 round trips, a read request 2, a request running two read units
/// two entries and no lookup: 2 + 2, and 1 for the first unit's queued `ROLLBACK`, which the
/// second unit waits for on this pool of one connection (it is the pool's release, not a
/// lookup: a lookup would make it 6). The context alone costs none. A member's requests never
/// touch the service pool, with token memberships on.
async fn requests_cost_the_round_trips_of_their_units(base: &str, world: &World) {
    use reqwest::Method;
    let member = world.token("user_member", "member");
    let write = steady_trips(base, Method::POST, "/projects", &member).await;
    let read = steady_trips(base, Method::GET, "/projects", &member).await;
    let twice = steady_trips(base, Method::GET, "/twice", &member).await;
    let context = steady_trips(base, Method::GET, "/context", &member).await;
    let admin = world.token("user_admin", "admin");
    let guarded = steady_trips(base, Method::POST, "/admin/projects", &admin).await;
    println!(
        "round trips: write {write}, read {read}, two reads {twice}, context {context}, \
         admin write {guarded}"
    );
    assert_eq!(
        (write, read, twice, context, guarded),
        (3, 2, 2 * read + 1, 0, 3)
    );
}

/// Demoted since the token was issued: the token claims admin, the database holds member. The
/// guard passes on the token's role (no lookup), the entry refuses: 403, and the handler's
/// insert never ran. Beside it, the same request for an admin writes its row.
async fn a_token_claiming_more_than_the_database_holds_is_refused_at_the_entry(
    base: &str,
    world: &World,
) {
    let stale = world.token("user_member", "admin");
    let before = world.projects_named("admin").await;
    let refused = post(base, "/admin/projects", &stale).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (403, "insufficient_role"),
        "{:?}",
        refused.body
    );
    assert_eq!(
        refused.trips, 2,
        "the entry and the rollback of its refusal: no lookup, no query"
    );
    assert_eq!(
        world.projects_named("admin").await,
        before,
        "nothing written"
    );
    // Also through a plain OrgContext: the entry requires the token's role.
    let before_web = world.projects_named("web").await;
    let refused = post(base, "/projects", &stale).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (403, "insufficient_role")
    );
    assert_eq!(
        world.projects_named("web").await,
        before_web,
        "nothing written"
    );
    // The positive control: an admin's token, the same route.
    let admin = world.token("user_admin", "admin");
    let allowed = post(base, "/admin/projects", &admin).await;
    assert_eq!(allowed.status.as_u16(), 201, "{:?}", allowed.body);
    assert_eq!(world.projects_named("admin").await, before + 1);
}

/// Promoted since the token was issued: the token claims member, the database holds admin.
/// The guard looks the role up once (only on this path) and lets the request through with the
/// database's role; a plain context's unit acts with the database's role, no lookup. The
/// owner, whose Clerk token says admin (Clerk has no owner role), acts as owner.
async fn a_token_claiming_less_than_the_database_holds_is_not_held_back(base: &str, world: &World) {
    world.set_role("user_member", Role::Admin).await;
    let stale = world.token("user_member", "member");
    let guarded = post(base, "/admin/projects", &stale).await;
    assert_eq!(guarded.status.as_u16(), 201, "{:?}", guarded.body);
    assert_eq!(guarded.body["acted_as"], "admin");
    // One lookup (1 round trip) and the write unit (3), which on this pool of one connection
    // waits for the release of the lookup's connection (1: sqlx pings a connection it takes
    // back); a second lookup would make it 7.
    assert_eq!(guarded.trips, 5, "one lookup, then the write unit");
    let plain = post(base, "/projects", &stale).await;
    assert_eq!(plain.status.as_u16(), 201, "{:?}", plain.body);
    assert_eq!(
        (
            plain.body["acted_as"].as_str(),
            plain.body["token_role"].as_str()
        ),
        (Some("admin"), Some("member"))
    );
    assert_eq!(plain.trips, 3, "no lookup");
    let owner = world.token("user_owner", "admin");
    let as_owner = post(base, "/projects", &owner).await;
    assert_eq!(as_owner.body["acted_as"], "owner", "{:?}", as_owner.body);
    // The control: back to member, the same stale token is refused by the lookup.
    world.set_role("user_member", Role::Member).await;
    let refused = post(base, "/admin/projects", &stale).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code(), refused.trips),
        (403, "insufficient_role", 1),
        "{:?}",
        refused.body
    );
}

/// A member who just joined (the token claims the membership, the webhook has not come): the
/// entry finds no membership, the claim is applied through the service path, the entry is
/// tried again, and the request succeeds; the next request pays nothing for it. A token naming
/// the organization for a user removed in the application (whose claim must not be applied)
/// is 403 `not_a_member`, and nothing runs.
async fn a_just_joined_member_pays_for_the_claim_once_and_a_stranger_is_refused(
    base: &str,
    world: &World,
) {
    assert!(!world.is_member("user_newcomer").await);
    let token = world.token("user_newcomer", "member");
    let first = post(base, "/projects", &token).await;
    assert_eq!(first.status.as_u16(), 201, "{:?}", first.body);
    assert!(
        first.service_trips > 0,
        "the claim went through the service path"
    );
    assert!(world.is_member("user_newcomer").await);
    let next = post(base, "/projects", &token).await;
    assert_eq!(
        (next.status.as_u16(), next.trips, next.service_trips),
        (201, 3, 0)
    );

    // A token claiming owner (a custom role mapped to owner): the claim lands as admin (what a
    // claim grants), and the entry tried again still requires the token's owner: refused, 403,
    // nothing written, until the provider's own event makes the membership an owner's.
    let founder = world.token("user_founder", "founder");
    let before = world.projects_named("web").await;
    let first = post(base, "/projects", &founder).await;
    assert_eq!(
        (first.status.as_u16(), first.code()),
        (403, "insufficient_role"),
        "{:?}",
        first.body
    );
    assert!(world.is_member("user_founder").await, "the claim landed");
    assert_eq!(world.projects_named("web").await, before, "nothing written");
    world.set_role("user_founder", Role::Owner).await;
    let synced = post(base, "/projects", &founder).await;
    assert_eq!(synced.status.as_u16(), 201, "{:?}", synced.body);
    assert_eq!(
        (
            synced.body["acted_as"].as_str(),
            synced.body["token_role"].as_str()
        ),
        (Some("owner"), Some("owner"))
    );

    let leaver = world.token("user_leaver", "member");
    let before = world.projects_named("web").await;
    let refused = post(base, "/projects", &leaver).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (403, "not_a_member"),
        "{:?}",
        refused.body
    );
    assert!(!world.is_member("user_leaver").await);
    assert_eq!(world.projects_named("web").await, before, "nothing written");
}

/// A token naming an organization the user is not a member of, with no claim to apply (a
/// pool without token memberships): 403 `not_a_member` at the entry, nothing written.
async fn a_stranger_without_claims_is_refused(world: &World) {
    let pool: TenantPool = world.db.app_pool(1).await.unwrap();
    let tenancy = Tenancy::new(pool, world.issuer.verifier());
    let session = tenancy
        .session(Some(&world.token("user_stranger", "admin")))
        .await
        .unwrap();
    let ctx = tenancy.org_context(&session).await.unwrap();
    let refused = insert(&tenancy, &ctx, "stranger").await.unwrap_err();
    assert_eq!((refused.status(), refused.code()), (403, "not_a_member"));
    assert_eq!(world.projects_named("stranger").await, 0);
}

#[tokio::test]
async fn axum_requests_enter_once_and_the_entry_decides() {
    let world = World::new().await;
    let base = serve_axum(&world).await;
    requests_cost_the_round_trips_of_their_units(&base, &world).await;
    a_token_claiming_more_than_the_database_holds_is_refused_at_the_entry(&base, &world).await;
    a_token_claiming_less_than_the_database_holds_is_not_held_back(&base, &world).await;
    a_just_joined_member_pays_for_the_claim_once_and_a_stranger_is_refused(&base, &world).await;
    a_stranger_without_claims_is_refused(&world).await;
}

#[tokio::test]
async fn actix_requests_enter_once_and_the_entry_decides() {
    let world = Arc::new(World::new().await);
    let (base, handle) = serve_actix(&world).await;
    requests_cost_the_round_trips_of_their_units(&base, &world).await;
    a_token_claiming_more_than_the_database_holds_is_refused_at_the_entry(&base, &world).await;
    a_token_claiming_less_than_the_database_holds_is_not_held_back(&base, &world).await;
    a_just_joined_member_pays_for_the_claim_once_and_a_stranger_is_refused(&base, &world).await;
    handle.stop(false).await;
}

/// An impersonated session (Clerk's `act` claim) names its actor beside the user acted as; the
/// context, and so every unit, is the user's. A session without `act` names none.
#[tokio::test]
async fn an_impersonated_session_names_its_actor_and_acts_as_the_user() {
    let db = TestDatabase::create().await.unwrap();
    let issuer = DevTokenIssuer::generate("https://clerk.actor.test").unwrap();
    let tenancy = Tenancy::new(db.app_pool(1).await.unwrap(), issuer.verifier());
    let mut claims = issuer.claims("user_bob", Some((ORG, "member", None)), 60);
    let plain = tenancy.session(Some(&issuer.sign(&claims))).await.unwrap();
    assert_eq!(plain.actor, None);
    claims["act"] = serde_json::json!({
        "sub": "user_support", "iss": "https://dashboard.clerk.com", "sid": "sess_support"
    });
    let session = tenancy.session(Some(&issuer.sign(&claims))).await.unwrap();
    assert_eq!(session.actor.as_deref(), Some("user_support"));
    assert_eq!(session.user_id, user("user_bob"));
    let ctx = tenancy.org_context(&session).await.unwrap();
    assert_eq!(ctx.user_id(), &user("user_bob"));
}

/// Hardened mode: a context from a session token enters through the signed entry like any
/// other, acting with the database's role (the owner, whose Clerk token says admin), and a
/// token claiming more than the database holds is refused there; a lower claim is not held
/// back.
#[tokio::test]
async fn a_hardened_pool_decides_on_a_token_context_at_its_signed_entry() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.app_pool(1).await.unwrap();
    let owner = pool
        .create_organization(
            OrgId::from_external_id(ORG),
            "Hardened",
            None,
            &user("user_owner"),
        )
        .await
        .unwrap();
    pool.add_member(&owner, &user("user_member"), Role::Member)
        .await
        .unwrap();
    let hardened = db
        .harden(&pg_tenancy::ContextKey::generate(), 1)
        .await
        .unwrap();
    let issuer = DevTokenIssuer::generate("https://clerk.hardened.test").unwrap();
    let tenancy = Tenancy::new(hardened, issuer.verifier());
    let acted_as = async |name: &str, role: &str| -> Result<String, ApiError> {
        let token = issuer.token(name, Some((ORG, role)));
        let ctx = tenancy
            .org_context(&tenancy.session(Some(&token)).await?)
            .await?;
        Ok(tenancy
            .pool()
            .with_rls_read(&ctx, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT tenancy_current_org_role()")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await?)
    };
    assert_eq!(acted_as("user_owner", "admin").await.unwrap(), "owner");
    assert_eq!(acted_as("user_member", "member").await.unwrap(), "member");
    let refused = acted_as("user_member", "admin").await.unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (403, "insufficient_role")
    );
    let stranger = acted_as("user_stranger", "member").await.unwrap_err();
    assert_eq!((stranger.status(), stranger.code()), (403, "not_a_member"));
}
