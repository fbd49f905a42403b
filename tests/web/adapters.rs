//! The adapters themselves, without the example apps: caching of the verified session,
//! optional extractors, and actix-web's answer when the state is missing.

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
