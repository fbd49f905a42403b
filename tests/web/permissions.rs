//! Clerk permissions on the application side, the same cases for axum and actix-web: the
//! token's permissions (v2's `o.per` / `o.fpm` / `fea`, and v1's `org_permissions`) reach the
//! session and the context, `RequirePermission<P>` passes on them with no round trip, and a
//! token that lacks the permission costs one lookup and is refused 403 `missing_permission`
//! when the database's context lacks it too (round trips counted at a proxy in front of the
//! server, as in `requests.rs`).
//!
//! A token lacking a permission that the database's role grants since passes after that one
//! lookup (`TenantPool::authorize` answers the database's permissions).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use pg_tenancy::testing::{DevTokenIssuer, TcpProxy, TestCluster, TestDatabase};
use pg_tenancy::web::{ApiError, Permission, RequirePermission, Session, Tenancy};
use pg_tenancy::{Error, OrgContext, OrgId, Role, UserId};

const ORG: &str = "org_permissions";
/// The tenant pool's round trips during the request.
const TRIPS: &str = "x-round-trips";

pg_tenancy::permission! {
    /// What the guarded routes need.
    pub InvoicesWrite = "org:invoices:write";
}

/// The database (an owner and a member of [`ORG`]), the token issuer, and the proxy the apps'
/// pool of one connection goes through.
struct World {
    db: TestDatabase,
    issuer: DevTokenIssuer,
    proxy: Arc<TcpProxy>,
}

impl World {
    async fn new() -> World {
        let db = TestDatabase::create().await.unwrap();
        db.migrate(&sqlx::migrate!("./examples/migrations"))
            .await
            .unwrap();
        db.grant_app(&["projects", "invoices"]).await.unwrap();
        let pool = db.app_pool(1).await.unwrap();
        let owner = pool
            .create_organization(
                OrgId::from_external_id(ORG),
                "Permissions",
                None,
                &user("user_owner"),
            )
            .await
            .unwrap();
        pool.add_member(&owner, &user("user_member"), Role::Member)
            .await
            .unwrap();
        let server = TestCluster::global()
            .unwrap()
            .tcp_address()
            .expect("harness TCP listener");
        World {
            db,
            issuer: DevTokenIssuer::generate("https://clerk.permissions.test").unwrap(),
            proxy: Arc::new(TcpProxy::start(server, Duration::ZERO).unwrap()),
        }
    }

    async fn tenancy(&self) -> Tenancy {
        let pool = self.db.app_pool_at(self.proxy.addr(), 1).await.unwrap();
        Tenancy::new(pool, self.issuer.verifier())
    }

    /// A v2 token for `name` as a member of [`ORG`] whose permissions are encoded as Clerk
    /// does: `fea`, `o.per`, `o.fpm`.
    fn v2_token(&self, name: &str, fea: &str, per: &str, fpm: &str) -> String {
        let mut claims = self.issuer.claims(
            name,
            Some((ORG, "member", None)),
            DevTokenIssuer::LIFETIME_SECS,
        );
        claims["fea"] = fea.into();
        claims["o"]["per"] = per.into();
        claims["o"]["fpm"] = fpm.into();
        self.issuer.sign(&claims)
    }

    /// A v1 token (no `v`, top-level organization claims) with `org_permissions`.
    fn v1_token(&self, name: &str, permissions: &[&str]) -> String {
        let mut claims = self
            .issuer
            .claims(name, None, DevTokenIssuer::LIFETIME_SECS);
        let object = claims.as_object_mut().unwrap();
        object.remove("v");
        object.insert("org_id".into(), ORG.into());
        object.insert("org_role".into(), "org:member".into());
        object.insert("org_permissions".into(), json!(permissions));
        self.issuer.sign(&claims)
    }

    /// The projects named `name`, read by the cluster's superuser (no policy applies to it):
    /// what was written.
    async fn projects_named(&self, name: &str) -> i64 {
        use sqlx::Connection as _;
        let options = TestCluster::global()
            .unwrap()
            .admin_options()
            .database(self.db.name());
        let mut admin = sqlx::PgConnection::connect_with(&options).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM projects WHERE name = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        n
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Inserts a project named `name` in one write unit.
async fn insert(tenancy: &Tenancy, ctx: &OrgContext, name: &str) -> Result<Value, ApiError> {
    tenancy
        .pool()
        .with_rls(ctx, async |tx| {
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                .bind(ctx.org_id())
                .bind(name)
                .execute(tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await?;
    Ok(json!({ "written": name }))
}

fn permissions_of(ctx: &OrgContext) -> Value {
    json!(ctx.permissions())
}

// ---- the two apps ----------------------------------------------------------------------------

/// `POST /invoices` (`RequirePermission<InvoicesWrite>`, a write unit), `GET /check` (the
/// extractor alone: the context's permissions), `GET /session` (the session's permissions).
async fn serve_axum(world: &World) -> String {
    use axum::Router;
    use axum::extract::{Request, State};
    use axum::middleware::{Next, from_fn};
    use axum::routing::{get, post};

    let proxy = world.proxy.clone();
    let counted = from_fn(move |request: Request, next: Next| {
        let proxy = proxy.clone();
        async move {
            let before = proxy.stats().round_trips();
            let mut response = next.run(request).await;
            let trips = proxy.stats().round_trips() - before;
            response.headers_mut().insert(TRIPS, trips.into());
            response
        }
    });
    let router =
        Router::new()
            .route(
                "/invoices",
                post(
                    |State(t): State<Tenancy>, ctx: RequirePermission<InvoicesWrite>| async move {
                        insert(&t, &ctx, "invoice")
                            .await
                            .map(|v| (axum::http::StatusCode::CREATED, axum::Json(v)))
                    },
                ),
            )
            .route(
                "/check",
                get(|ctx: RequirePermission<InvoicesWrite>| async move {
                    axum::Json(permissions_of(&ctx))
                }),
            )
            .route(
                "/session",
                get(|s: Session| async move { axum::Json(json!(s.permissions)) }),
            )
            .layer(counted)
            .with_state(world.tenancy().await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// The same routes in actix-web, in a system on a thread of its own with one worker.
async fn serve_actix(world: &Arc<World>) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::dev::Service as _;
    use actix_web::{App, HttpResponse, HttpServer, web};

    async fn invoices(
        t: web::Data<Tenancy>,
        ctx: RequirePermission<InvoicesWrite>,
    ) -> Result<HttpResponse, ApiError> {
        Ok(HttpResponse::Created().json(insert(&t, &ctx, "invoice").await?))
    }
    async fn check(ctx: RequirePermission<InvoicesWrite>) -> HttpResponse {
        HttpResponse::Ok().json(permissions_of(&ctx))
    }
    async fn session(s: Session) -> HttpResponse {
        HttpResponse::Ok().json(json!(s.permissions))
    }

    let world = world.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let tenancy = world.tenancy().await;
            let server = HttpServer::new(move || {
                let proxy = world.proxy.clone();
                App::new()
                    .app_data(web::Data::new(tenancy.clone()))
                    .wrap_fn(move |request, srv| {
                        let before = proxy.stats().round_trips();
                        let proxy = proxy.clone();
                        let call = srv.call(request);
                        async move {
                            let mut response = call.await?;
                            let trips = proxy.stats().round_trips() - before;
                            response
                                .headers_mut()
                                .insert(TRIPS.try_into().unwrap(), trips.into());
                            Ok(response)
                        }
                    })
                    .route("/invoices", web::post().to(invoices))
                    .route("/check", web::get().to(check))
                    .route("/session", web::get().to(session))
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

struct Answer {
    status: StatusCode,
    body: Value,
    trips: u64,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

async fn call(base: &str, method: reqwest::Method, path: &str, token: &str) -> Answer {
    // Let the previous request's release (its ping) finish first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let trips = response.headers()[TRIPS].to_str().unwrap().parse().unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        trips,
    }
}

/// The token states the permission: the guard passes with no round trip, and the write
/// request costs its unit's 3; v1's `org_permissions` the same. The session and the context
/// carry the token's permissions, decoded from v2's bitmask.
async fn a_token_stating_the_permission_passes_with_no_lookup(base: &str, world: &World) {
    use reqwest::Method;
    // `fea` has a user feature first (a `u:` whose name holds an `o`, taken for the
    // organization's by an old SDK); invoices gets 0b10: write, not read.
    let token = world.v2_token(
        "user_member",
        "u:tools,o:invoices,o:reports",
        "read,write",
        "2,1",
    );
    let session = call(base, Method::GET, "/session", &token).await;
    assert_eq!(
        session.body,
        json!(["org:invoices:write", "org:reports:read"])
    );
    let check = call(base, Method::GET, "/check", &token).await;
    assert_eq!(check.status, StatusCode::OK, "{:?}", check.body);
    assert_eq!(
        check.body,
        json!(["org:invoices:write", "org:reports:read"])
    );
    assert_eq!(check.trips, 0, "the token's permission: no lookup");
    let before = world.projects_named("invoice").await;
    // A warm-up request prepares the statements on the connection.
    let warm = call(base, Method::POST, "/invoices", &token).await;
    assert_eq!(warm.status, StatusCode::CREATED, "{:?}", warm.body);
    let written = call(base, Method::POST, "/invoices", &token).await;
    assert_eq!(written.status, StatusCode::CREATED, "{:?}", written.body);
    assert_eq!(written.trips, 3, "the write unit alone");
    assert_eq!(world.projects_named("invoice").await, before + 2);

    let v1 = world.v1_token("user_member", &["org:invoices:write"]);
    let answer = call(base, Method::POST, "/invoices", &v1).await;
    assert_eq!(
        (answer.status, answer.trips),
        (StatusCode::CREATED, 3),
        "{:?}",
        answer.body
    );
    assert_eq!(world.projects_named("invoice").await, before + 3);
}

/// The token lacks the permission (its bitmask grants `read` only; or `write` is a bit beyond
/// `per`): one lookup asks the database, which lacks it too, and the answer is 403
/// `missing_permission` naming it; the handler never ran. The positive control is the case
/// above, on the same routes.
async fn a_token_lacking_the_permission_is_refused_after_one_lookup(base: &str, world: &World) {
    use reqwest::Method;
    let before = world.projects_named("invoice").await;
    for token in [
        world.v2_token("user_member", "o:invoices", "read,write", "1"),
        // Bit 2 (value 4) is beyond `per`: it grants nothing.
        world.v2_token("user_member", "o:invoices", "read,write", "4"),
        world.v1_token("user_member", &["org:invoices:read"]),
    ] {
        let refused = call(base, Method::POST, "/invoices", &token).await;
        assert_eq!(
            (refused.status.as_u16(), refused.code()),
            (403, "missing_permission"),
            "{:?}",
            refused.body
        );
        assert_eq!(
            refused.body["message"], "missing permission org:invoices:write",
            "the answer names the permission"
        );
        assert_eq!(refused.trips, 1, "one lookup, no unit");
    }
    assert_eq!(
        world.projects_named("invoice").await,
        before,
        "nothing written"
    );
    // A user who is not a member: the lookup finds no membership.
    let stranger = world.v2_token("user_stranger", "o:invoices", "read", "1");
    let refused = call(base, Method::GET, "/check", &stranger).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code()),
        (403, "not_a_member")
    );
}

/// Permission claims that are not Clerk's encoding refuse the token (401 `invalid_claim`),
/// beside the same token with the claim put right.
async fn a_token_with_malformed_permission_claims_is_401(base: &str, world: &World) {
    use reqwest::Method;
    for (fea, fpm) in [("o:invoices", "x"), ("invoices", "2"), ("o:invoices", "-2")] {
        let token = world.v2_token("user_member", fea, "read,write", fpm);
        let refused = call(base, Method::GET, "/session", &token).await;
        assert_eq!(
            (refused.status.as_u16(), refused.code()),
            (401, "invalid_claim"),
            "{fea:?} {fpm:?}: {:?}",
            refused.body
        );
    }
    let token = world.v2_token("user_member", "o:invoices", "read,write", "2");
    let fine = call(base, Method::GET, "/session", &token).await;
    assert_eq!(fine.body, json!(["org:invoices:write"]));
}

/// The token lacks the permission but the database's role grants it now (granted after the
/// token was issued): the one lookup lets the request through, and the write runs. Taken away
/// again, the same token is refused after the lookup. (The control of the refusal is the
/// grant, with the same token.)
async fn a_token_lacking_a_permission_the_database_grants_passes_after_one_lookup(
    base: &str,
    world: &World,
) {
    use reqwest::Method;
    let service = world.db.service_pool(1).await.unwrap();
    let token = world.v2_token("user_member", "o:invoices", "read,write", "1");
    let before = world.projects_named("invoice").await;
    service
        .set_role_permissions("member", [InvoicesWrite::KEY])
        .await
        .unwrap();
    let passed = call(base, Method::POST, "/invoices", &token).await;
    assert_eq!(passed.status, StatusCode::CREATED, "{:?}", passed.body);
    // The lookup, the write unit's 3, and the lookup's connection released (a ping) on this
    // one-connection pool.
    assert_eq!(passed.trips, 5, "one lookup, then the unit");
    assert_eq!(world.projects_named("invoice").await, before + 1);
    service
        .set_role_permissions("member", [] as [&str; 0])
        .await
        .unwrap();
    let refused = call(base, Method::POST, "/invoices", &token).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code(), refused.trips),
        (403, "missing_permission", 1),
        "{:?}",
        refused.body
    );
    assert_eq!(world.projects_named("invoice").await, before + 1);
    service.pool().close().await;
}

async fn all_cases(base: &str, world: &World) {
    a_token_stating_the_permission_passes_with_no_lookup(base, world).await;
    a_token_lacking_the_permission_is_refused_after_one_lookup(base, world).await;
    a_token_with_malformed_permission_claims_is_401(base, world).await;
    a_token_lacking_a_permission_the_database_grants_passes_after_one_lookup(base, world).await;
}

#[tokio::test]
async fn axum_require_permission_checks_the_token_then_the_database() {
    let world = World::new().await;
    let base = serve_axum(&world).await;
    all_cases(&base, &world).await;
}

#[tokio::test]
async fn actix_require_permission_checks_the_token_then_the_database() {
    let world = Arc::new(World::new().await);
    let (base, handle) = serve_actix(&world).await;
    all_cases(&base, &world).await;
    handle.stop(false).await;
}

/// `Tenancy::require_permission` without a framework: the token's context when it states the
/// permission (the same context, no round trip); a lookup's answer otherwise. A token stating a
/// permission is the application's check only: the unit's entry still refuses a user who is
/// not a member, whatever the token says.
#[tokio::test]
async fn tenancy_require_permission_trusts_the_token_only_for_its_own_check() {
    let world = World::new().await;
    let tenancy = world.tenancy().await;
    let context = async |token: &str| {
        let session = tenancy.session(Some(token)).await.unwrap();
        tenancy.org_context(&session).await.unwrap()
    };
    let ctx = context(&world.v2_token("user_member", "o:invoices", "read,write", "3")).await;
    let trips = world.proxy.stats().round_trips();
    let checked = tenancy
        .require_permission(&ctx, InvoicesWrite::KEY)
        .await
        .unwrap();
    assert_eq!(world.proxy.stats().round_trips(), trips, "no round trip");
    assert_eq!(checked, ctx);
    assert_eq!(checked.permissions(), ctx.permissions());

    let lacking = context(&world.v2_token("user_member", "o:invoices", "read,write", "1")).await;
    let refused = tenancy
        .require_permission(&lacking, InvoicesWrite::KEY)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (403, "missing_permission")
    );
    assert!(world.proxy.stats().round_trips() > trips, "looked up");

    // The stranger's token states the permission: the application's check passes, and the
    // database refuses the unit at its entry; nothing is written.
    let stranger = context(&world.v2_token("user_stranger", "o:invoices", "write", "1")).await;
    let passed = tenancy
        .require_permission(&stranger, InvoicesWrite::KEY)
        .await
        .unwrap();
    let refused = insert(&tenancy, &passed, "stranger").await.unwrap_err();
    assert_eq!((refused.status(), refused.code()), (403, "not_a_member"));
    assert_eq!(world.projects_named("stranger").await, 0);
}
