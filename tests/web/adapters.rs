//! The adapters themselves, without the example apps: caching of the verified session,
//! optional extractors, actix-web's answer when the state is missing, JSON body errors over
//! HTTP (`web::axum::Json`, `web::actix::json_config`), and a database failure answered 500
//! and logged with its cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, test as atest, web as aweb};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use tower::ServiceExt as _;

use pg_tenancy::testing::TestDatabase;
use pg_tenancy::web::actix::MaybeOrgContext;
use pg_tenancy::web::{Admin, ApiError, RequireRole, Session, SessionVerifier, Tenancy};
use pg_tenancy::{ErrorKind, OrgContext, OrgId, Role, UserId};

/// Tokens of the form `user:org` (org optional), counting verifications.
#[derive(Default)]
struct Plain {
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl SessionVerifier for Plain {
    async fn verify(&self, token: &str) -> Result<Session, ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (user, org) = token.split_once(':').unwrap_or((token, ""));
        let user = UserId::new(user)
            .map_err(|_| ApiError::new(ErrorKind::Unauthenticated, "bad_token", "bad token"))?;
        let org = (!org.is_empty()).then(|| OrgId::from_external_id(org));
        Ok(Session::new(user, org))
    }
}

async fn setup() -> (TestDatabase, Tenancy, Arc<AtomicUsize>) {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.app_pool(2).await.unwrap();
    pool.create_organization(
        OrgId::from_external_id("org_a"),
        "A",
        None,
        &UserId::new("user_owner").unwrap(),
    )
    .await
    .unwrap();
    let owner = pool
        .authorize(
            &UserId::new("user_owner").unwrap(),
            OrgId::from_external_id("org_a"),
        )
        .await
        .unwrap();
    pool.add_member(&owner, &UserId::new("user_member").unwrap(), Role::Member)
        .await
        .unwrap();
    let verifier = Plain::default();
    let calls = verifier.calls.clone();
    (db, Tenancy::new(pool, verifier), calls)
}

async fn axum_call(router: Router, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().uri("/");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn axum_verifies_once_per_request_and_optional_extractors_say_none() {
    let (_db, tenancy, calls) = setup().await;
    // Three extractors that all need the session: one verification, one lookup.
    let all = Router::new()
        .route(
            "/",
            get(
                |s: Session, ctx: OrgContext, admin: RequireRole<Admin>| async move {
                    format!("{} {} {}", s.user_id, ctx.role(), admin.role())
                },
            ),
        )
        .with_state(tenancy.clone());
    assert_eq!(
        axum_call(all.clone(), Some("user_owner:org_a")).await,
        (StatusCode::OK, "user_owner owner owner".to_owned())
    );
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
    let (status, body) = axum_call(all, Some("user_member:org_a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("insufficient_role"), "{body}");

    let optional = Router::new()
        .route(
            "/",
            get(|s: Option<Session>, ctx: Option<OrgContext>| async move {
                format!(
                    "{:?} {:?}",
                    s.map(|s| s.user_id.to_string()),
                    ctx.map(|c| c.role())
                )
            }),
        )
        .with_state(tenancy.clone());
    // No token at all: Option<Session> is None, and Option<OrgContext> still needs a session.
    let (status, body) = axum_call(optional.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("missing_token"), "{body}");
    // A session without an organization: Some, None.
    assert_eq!(
        axum_call(optional.clone(), Some("user_member")).await,
        (StatusCode::OK, "Some(\"user_member\") None".to_owned())
    );
    assert_eq!(
        axum_call(optional.clone(), Some("user_member:org_a")).await,
        (
            StatusCode::OK,
            "Some(\"user_member\") Some(Member)".to_owned()
        )
    );
    // An active organization the user is not in is still a 403, not None.
    let (status, body) = axum_call(optional, Some("user_stranger:org_a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("not_a_member"), "{body}");
    let only_session = Router::new()
        .route(
            "/",
            get(|s: Option<Session>| async move { format!("{}", s.is_some()) }),
        )
        .with_state(tenancy);
    assert_eq!(
        axum_call(only_session, None).await,
        (StatusCode::OK, "false".to_owned())
    );
}

#[actix_web::test]
async fn actix_verifies_once_answers_a_missing_state_with_the_fix_and_maybe_is_none() {
    let (_db, tenancy, calls) = setup().await;
    let handler = |s: Session, ctx: OrgContext, admin: RequireRole<Admin>| async move {
        HttpResponse::Ok().body(format!("{} {} {}", s.user_id, ctx.role(), admin.role()))
    };
    let app = atest::init_service(
        App::new()
            .app_data(aweb::Data::new(tenancy.clone()))
            .route("/", aweb::get().to(handler))
            .route(
                "/maybe",
                aweb::get().to(|m: MaybeOrgContext| async move {
                    HttpResponse::Ok().body(format!("{:?}", m.0.map(|c| c.role())))
                }),
            ),
    )
    .await;
    let call = |path: &str, token: &str| {
        atest::TestRequest::get()
            .uri(path)
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request()
    };
    let response = atest::call_service(&app, call("/", "user_owner:org_a")).await;
    assert_eq!(response.status().as_u16(), 200);
    let body = atest::read_body(response).await;
    assert_eq!(&body[..], b"user_owner owner owner");
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
    let response = atest::call_service(&app, call("/", "user_member:org_a")).await;
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = atest::read_body_json(response).await;
    assert_eq!(body["error"], "insufficient_role");
    let response = atest::call_service(&app, call("/maybe", "user_member")).await;
    assert_eq!(&atest::read_body(response).await[..], b"None");
    let response = atest::call_service(&app, call("/maybe", "user_member:org_a")).await;
    assert_eq!(&atest::read_body(response).await[..], b"Some(Member)");

    // ThinData serves as well.
    let thin = atest::init_service(
        App::new()
            .app_data(aweb::ThinData(tenancy))
            .route("/", aweb::get().to(handler)),
    )
    .await;
    let response = atest::call_service(&thin, call("/", "user_owner:org_a")).await;
    assert_eq!(response.status().as_u16(), 200);

    // No state: 500, and the message says what to add.
    let bare = atest::init_service(App::new().route("/", aweb::get().to(handler))).await;
    let response = atest::call_service(&bare, call("/", "user_owner:org_a")).await;
    assert_eq!(response.status().as_u16(), 500);
    let body: serde_json::Value = atest::read_body_json(response).await;
    assert_eq!(body["error"], "server_misconfigured");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(".app_data(web::Data::new(tenancy))"),
        "{body}"
    );
}

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

/// The body limit the JSON tests set, in bytes.
const BODY_LIMIT: usize = 1024;

/// Sends `body` with `content_type` to `url`: the status, and the body parsed as JSON (`Null`
/// when it is not JSON).
async fn post_body(url: &str, content_type: Option<&str>, body: &[u8]) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(url).body(body.to_vec());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// What is sent (a name, the content type, the body) and the answer expected (status, code).
type BodyCase<'a> = (&'a str, Option<&'a str>, &'a [u8], u16, &'a str);

/// Every way a JSON body fails, each answered by `url` in the API's JSON error shape with the
/// code from the table; beside the well-formed body accepted.
async fn assert_json_body_errors(url: &str) {
    const JSON: Option<&str> = Some("application/json");
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(BODY_LIMIT));
    let cases: [BodyCase; 7] = [
        (
            "no content type",
            None,
            br#"{"name": "a"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            Some("text/plain"),
            br#"{"name": "a"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "malformed JSON",
            JSON,
            b"{\"name\": ",
            400,
            "malformed_body",
        ),
        (
            "not UTF-8",
            JSON,
            b"{\"name\": \"\xff\xfe\"}",
            400,
            "malformed_body",
        ),
        (
            "a missing field",
            JSON,
            br#"{"title": "a"}"#,
            422,
            "invalid_body",
        ),
        ("a wrong type", JSON, br#"{"name": 5}"#, 422, "invalid_body"),
        ("too large", JSON, big.as_bytes(), 413, "payload_too_large"),
    ];
    for (what, content_type, body, status, code) in cases {
        let (got, answer) = post_body(url, content_type, body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
        assert!(answer["message"].is_string(), "{what}: {answer}");
    }
    // The same route takes a good body, just under the limit too.
    let (status, answer) = post_body(url, JSON, br#"{"name": "a"}"#).await;
    assert_eq!((status, answer), (200, serde_json::json!("a")));
    let fits = format!(r#"{{"name": "{}"}}"#, "x".repeat(BODY_LIMIT - 12));
    assert_eq!(post_body(url, JSON, fits.as_bytes()).await.0, 200);
}

#[tokio::test]
async fn axum_json_bodies_fail_in_the_api_error_shape_over_http() {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use pg_tenancy::web::axum::Json;

    let router = Router::new()
        .route(
            "/",
            post(|Json(n): Json<Named>| async move { Json(n.name) }),
        )
        .route(
            "/plain",
            post(|axum::Json(n): axum::Json<Named>| async move { axum::Json(n.name) }),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    assert_json_body_errors(&format!("{base}/")).await;
    // The control: axum's own Json answers the same body in plain text.
    let (status, answer) = post_body(&format!("{base}/plain"), None, br#"{"name": "a"}"#).await;
    assert_eq!((status, answer), (415, serde_json::Value::Null));
}

#[actix_web::test]
async fn actix_json_bodies_fail_in_the_api_error_shape_over_http() {
    let server = actix_web::HttpServer::new(|| {
        let named = |n: aweb::Json<Named>| async move { HttpResponse::Ok().json(&n.name) };
        App::new()
            .service(
                aweb::resource("/")
                    .app_data(pg_tenancy::web::actix::json_config().limit(BODY_LIMIT))
                    .route(aweb::post().to(named)),
            )
            .service(aweb::resource("/plain").route(aweb::post().to(named)))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    assert_json_body_errors(&format!("{base}/")).await;
    // The control: actix-web's default answers the same body in plain text.
    let (status, answer) = post_body(&format!("{base}/plain"), None, br#"{"name": "a"}"#).await;
    assert_eq!((status, answer), (400, serde_json::Value::Null));
    handle.stop(false).await;
}

/// Records every `tracing` event as `level field=value ...`.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Recorder {
    fn errors(&self) -> Vec<String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| e.starts_with("ERROR"))
            .cloned()
            .collect()
    }
}

/// A unit of work that fails in the database: a table that does not exist.
async fn failing_unit(tenancy: &Tenancy, ctx: &OrgContext) -> Result<(), ApiError> {
    tenancy
        .pool()
        .with_rls_read(ctx, async |tx| {
            sqlx::query("SELECT 1 FROM no_such_table")
                .execute(tx)
                .await?;
            Ok::<_, pg_tenancy::Error>(())
        })
        .await?;
    Ok(())
}

/// The one error event for a 500: the cause's text is there (and not in the answer), no token.
fn assert_logged_once(recorder: &Recorder, token: &str) {
    let errors = recorder.errors();
    assert_eq!(errors.len(), 1, "one error event per 500: {errors:?}");
    let event = &errors[0];
    assert!(event.contains("ERROR pg_tenancy::web::error"), "{event}");
    assert!(
        event.contains("status=500") && event.contains("code=\"internal\""),
        "{event}"
    );
    assert!(
        event.contains("no_such_table"),
        "the cause is logged: {event}"
    );
    assert!(!event.contains(token), "no token text: {event}");
}

#[tokio::test]
async fn axum_a_database_failure_is_500_internal_and_its_cause_is_logged_once() {
    let (_db, tenancy, _) = setup().await;
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let router = Router::new()
        .route(
            "/",
            get(
                |axum::extract::State(t): axum::extract::State<Tenancy>, ctx: OrgContext| async move {
                    failing_unit(&t, &ctx).await
                },
            ),
        )
        .with_state(tenancy);
    // A 403 (the client's) logs nothing.
    let (status, _) = axum_call(router.clone(), Some("user_stranger:org_a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(recorder.errors(), Vec::<String>::new());
    let (status, body) = axum_call(router, Some("user_owner:org_a")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "internal", "message": "internal error"})
    );
    assert_logged_once(&recorder, "user_owner:org_a");
}

#[actix_web::test]
async fn actix_a_database_failure_is_500_internal_and_its_cause_is_logged_once() {
    let (_db, tenancy, _) = setup().await;
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let app = atest::init_service(App::new().app_data(aweb::Data::new(tenancy)).route(
        "/",
        aweb::get().to(|t: aweb::Data<Tenancy>, ctx: OrgContext| async move {
            failing_unit(&t, &ctx)
                .await
                .map(|()| HttpResponse::Ok().finish())
        }),
    ))
    .await;
    let call = |token: &str| {
        atest::TestRequest::get()
            .uri("/")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request()
    };
    let response = atest::call_service(&app, call("user_stranger:org_a")).await;
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(recorder.errors(), Vec::<String>::new());
    let response = atest::call_service(&app, call("user_owner:org_a")).await;
    assert_eq!(response.status().as_u16(), 500);
    let body: serde_json::Value = atest::read_body_json(response).await;
    assert_eq!(
        body,
        serde_json::json!({"error": "internal", "message": "internal error"})
    );
    assert_logged_once(&recorder, "user_owner:org_a");
}
