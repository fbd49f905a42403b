//! The axum routes over `shared`: extractors from `pg_tenancy::web::axum`, JSON errors from
//! `ApiError`.

// pub for the end-to-end tests, which include this file.
#![allow(unreachable_pub, missing_debug_implementations)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use pg_tenancy::OrgContext;
use pg_tenancy::web::{Admin, ApiError, RequireRole, Session, Tenancy};

use crate::shared::{self, App, WEBHOOK_BODY_LIMIT};

/// The router's state: the app, and the `Tenancy` slice the extractors take through `FromRef`.
#[derive(Clone)]
pub struct AppState {
    app: Arc<App>,
}

impl FromRef<AppState> for Tenancy {
    fn from_ref(state: &AppState) -> Tenancy {
        state.app.tenancy.clone()
    }
}

type Answer = Result<Json<Value>, ApiError>;

/// Every route of the API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(|| async { Json(shared::health()) }))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/dev/token", post(dev_token))
        .route("/api/me/organizations", get(my_organizations))
        .route("/api/organizations", post(create_organization))
        .route("/api/projects", get(list_projects).post(create_project))
        .route(
            "/api/projects/{id}",
            get(get_project).delete(delete_project),
        )
        .route("/api/members", get(list_members).post(add_member))
        .route(
            "/api/members/{user_id}",
            axum::routing::delete(remove_member),
        )
        .route("/webhooks/clerk", post(clerk_webhook))
        .fallback(|| async { ApiError::not_found() })
        .with_state(AppState { app })
}

async fn index() -> Html<&'static str> {
    Html(shared::INDEX_HTML)
}

async fn jwks(State(s): State<AppState>) -> Response {
    match &s.app.dev {
        Some(dev) => Json(dev.jwks().clone()).into_response(),
        None => ApiError::not_found().into_response(),
    }
}

async fn dev_token(State(s): State<AppState>, body: Bytes) -> Answer {
    shared::dev_token(&s.app, &body).await.map(Json)
}

async fn my_organizations(State(s): State<AppState>, session: Session) -> Answer {
    shared::my_organizations(&s.app, &session).await.map(Json)
}

async fn create_organization(State(s): State<AppState>, session: Session, body: Bytes) -> Response {
    match shared::create_organization(&s.app, &session, &body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_projects(State(s): State<AppState>, ctx: OrgContext) -> Answer {
    shared::list_projects(&s.app, &ctx).await.map(Json)
}

async fn create_project(State(s): State<AppState>, ctx: OrgContext, body: Bytes) -> Response {
    match shared::create_project(&s.app, &ctx, &body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_project(State(s): State<AppState>, ctx: OrgContext, Path(id): Path<String>) -> Answer {
    shared::get_project(&s.app, &ctx, &id).await.map(Json)
}

async fn delete_project(
    State(s): State<AppState>,
    ctx: RequireRole<Admin>,
    Path(id): Path<String>,
) -> Answer {
    shared::delete_project(&s.app, &ctx, &id).await.map(Json)
}

async fn list_members(State(s): State<AppState>, ctx: OrgContext) -> Answer {
    shared::list_members(&s.app, &ctx).await.map(Json)
}

async fn add_member(State(s): State<AppState>, ctx: RequireRole<Admin>, body: Bytes) -> Response {
    match shared::add_member(&s.app, &ctx, &body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove_member(
    State(s): State<AppState>,
    ctx: OrgContext,
    Path(user_id): Path<String>,
) -> Answer {
    shared::remove_member(&s.app, &ctx, &user_id)
        .await
        .map(Json)
}

async fn clerk_webhook(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Answer {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > WEBHOOK_BODY_LIMIT) {
        return Err(ApiError::payload_too_large(WEBHOOK_BODY_LIMIT));
    }
    let body = axum::body::to_bytes(body, WEBHOOK_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::payload_too_large(WEBHOOK_BODY_LIMIT))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    shared::clerk_webhook(&s.app, header, &body).await.map(Json)
}
