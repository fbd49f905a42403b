//! The axum routes: extractors from `pg_tenancy::web::axum` (the context, the role, and `Json`
//! bodies that fail in the API's JSON error shape), the logic in `shared`.

// pub for the end-to-end tests, which include this file.
#![allow(unreachable_pub, missing_debug_implementations)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use axum::routing::{delete, get, post};
use serde_json::Value;

use pg_tenancy::OrgContext;
use pg_tenancy::web::axum::Json;
use pg_tenancy::web::{Admin, ApiError, RequirePermission, RequireRole, Session, Tenancy};
use pg_tenancy::webhook::WebhookHeaders;

use crate::shared::{self, App, WEBHOOK_BODY_LIMIT};

/// The router's state: the app; the extractors take its `Tenancy` through `FromRef`.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl FromRef<AppState> for Tenancy {
    fn from_ref(state: &AppState) -> Tenancy {
        state.0.tenancy.clone()
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Every route of the API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/dev/token", post(dev_token))
        .route("/api/me/organizations", get(my_organizations))
        .route("/api/organizations", post(create_organization))
        .route("/api/projects", get(list_projects).post(create_project))
        .route(
            "/api/projects/{id}",
            get(get_project).delete(delete_project),
        )
        .route("/api/invoices", get(list_invoices).post(create_invoice))
        .route("/api/members", get(list_members).post(add_member))
        .route("/api/members/{user_id}", delete(remove_member))
        .route("/webhooks/clerk", post(clerk_webhook))
        .fallback(|| async { ApiError::not_found() })
        .with_state(AppState(app))
}

async fn index() -> Html<&'static str> {
    Html(shared::INDEX_HTML)
}

async fn health() -> Json<shared::Health> {
    Json(shared::health())
}

async fn jwks(State(AppState(app)): State<AppState>) -> Result<Json<Value>> {
    let dev = app.dev.as_ref().ok_or_else(ApiError::not_found)?;
    Ok(Json(dev.jwks().clone()))
}

async fn dev_token(
    State(AppState(app)): State<AppState>,
    Json(request): Json<shared::TokenRequest>,
) -> Result<Json<shared::DevToken>> {
    Ok(Json(shared::dev_token(&app, request).await?))
}

async fn my_organizations(
    State(AppState(app)): State<AppState>,
    session: Session,
) -> Result<Json<shared::MyOrganizations>> {
    Ok(Json(shared::my_organizations(&app, &session).await?))
}

async fn create_organization(
    State(AppState(app)): State<AppState>,
    session: Session,
    Json(new): Json<shared::NewOrganization>,
) -> Result<(StatusCode, Json<shared::Organization>)> {
    let organization = shared::create_organization(&app, &session, new).await?;
    Ok((StatusCode::CREATED, Json(organization)))
}

async fn list_projects(
    State(AppState(app)): State<AppState>,
    ctx: OrgContext,
) -> Result<Json<Vec<shared::Project>>> {
    Ok(Json(shared::list_projects(&app, &ctx).await?))
}

async fn create_project(
    State(AppState(app)): State<AppState>,
    ctx: OrgContext,
    Json(new): Json<shared::NewProject>,
) -> Result<(StatusCode, Json<shared::Project>)> {
    let project = shared::create_project(&app, &ctx, new).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

async fn get_project(
    State(AppState(app)): State<AppState>,
    ctx: OrgContext,
    Path(id): Path<String>,
) -> Result<Json<shared::Project>> {
    Ok(Json(shared::get_project(&app, &ctx, &id).await?))
}

async fn delete_project(
    State(AppState(app)): State<AppState>,
    ctx: RequireRole<Admin>,
    Path(id): Path<String>,
) -> Result<Json<shared::Deleted>> {
    Ok(Json(shared::delete_project(&app, &ctx, &id).await?))
}

async fn list_invoices(
    State(AppState(app)): State<AppState>,
    ctx: OrgContext,
) -> Result<Json<Vec<shared::Invoice>>> {
    Ok(Json(shared::list_invoices(&app, &ctx).await?))
}

async fn create_invoice(
    State(AppState(app)): State<AppState>,
    ctx: RequirePermission<shared::InvoicesWrite>,
    Json(new): Json<shared::NewInvoice>,
) -> Result<(StatusCode, Json<shared::Invoice>)> {
    let invoice = shared::create_invoice(&app, &ctx, new).await?;
    Ok((StatusCode::CREATED, Json(invoice)))
}

async fn list_members(
    State(AppState(app)): State<AppState>,
    ctx: OrgContext,
) -> Result<Json<Vec<shared::Member>>> {
    Ok(Json(shared::list_members(&app, &ctx).await?))
}

async fn add_member(
    State(AppState(app)): State<AppState>,
    ctx: RequireRole<Admin>,
    Json(new): Json<shared::NewMember>,
) -> Result<(StatusCode, Json<shared::Member>)> {
    let member = shared::add_member(&app, &ctx, new).await?;
    Ok((StatusCode::CREATED, Json(member)))
}

async fn remove_member(
    State(AppState(app)): State<AppState>,
    ctx: OrgContext,
    Path(user_id): Path<String>,
) -> Result<Json<shared::Removed>> {
    Ok(Json(shared::remove_member(&app, &ctx, &user_id).await?))
}

/// The raw body (the signature covers its bytes), read up to the webhook limit.
async fn clerk_webhook(
    State(AppState(app)): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<shared::Delivery>> {
    let body = axum::body::to_bytes(body, WEBHOOK_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::payload_too_large(WEBHOOK_BODY_LIMIT))?;
    let headers = WebhookHeaders::from_header_map(&headers);
    Ok(Json(shared::clerk_webhook(&app, &headers, &body).await?))
}
