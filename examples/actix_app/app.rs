//! The actix-web routes: extractors from `pg_tenancy::web::actix` (the context, the role),
//! `web::Json` bodies that fail in the API's JSON error shape (`json_config`), the logic in
//! `shared`. The same API as `axum_app`.

// pub for the end-to-end tests, which include this file.
#![allow(unreachable_pub, missing_debug_implementations)]

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use pg_tenancy::OrgContext;
use pg_tenancy::web::{Admin, ApiError, RequirePermission, RequireRole, Session};
use pg_tenancy::webhook::WebhookHeaders;

use crate::shared::{self, App, WEBHOOK_BODY_LIMIT};

type Result<T = HttpResponse, E = ApiError> = std::result::Result<T, E>;

/// Registers the app data (`Tenancy` as `ThinData`, the app as `Data`, the JSON error
/// handler) and every route.
pub fn configure(app: Arc<App>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::ThinData(app.tenancy.clone()))
            .app_data(web::Data::from(app))
            .app_data(pg_tenancy::web::actix::json_config())
            .route("/health", web::get().to(health))
            .route("/.well-known/jwks.json", web::get().to(jwks))
            .route("/dev/token", web::post().to(dev_token))
            .route("/api/me/organizations", web::get().to(my_organizations))
            .route("/api/organizations", web::post().to(create_organization))
            .route("/api/projects", web::get().to(list_projects))
            .route("/api/projects", web::post().to(create_project))
            .route("/api/projects/{id}", web::get().to(get_project))
            .route("/api/projects/{id}", web::delete().to(delete_project))
            .route("/api/invoices", web::get().to(list_invoices))
            .route("/api/invoices", web::post().to(create_invoice))
            .route("/api/members", web::get().to(list_members))
            .route("/api/members", web::post().to(add_member))
            .route("/api/members/{user_id}", web::delete().to(remove_member))
            .route("/webhooks/clerk", web::post().to(clerk_webhook))
            .default_service(web::to(not_found));
    }
}

async fn not_found() -> Result {
    Err(ApiError::not_found())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(shared::health())
}

async fn jwks(app: web::Data<App>) -> Result {
    let dev = app.dev.as_ref().ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(dev.jwks()))
}

async fn dev_token(app: web::Data<App>, request: web::Json<shared::TokenRequest>) -> Result {
    let token = shared::dev_token(&app, request.into_inner()).await?;
    Ok(HttpResponse::Ok().json(token))
}

async fn my_organizations(app: web::Data<App>, session: Session) -> Result {
    let mine = shared::my_organizations(&app, &session).await?;
    Ok(HttpResponse::Ok().json(mine))
}

async fn create_organization(
    app: web::Data<App>,
    session: Session,
    new: web::Json<shared::NewOrganization>,
) -> Result {
    let organization = shared::create_organization(&app, &session, new.into_inner()).await?;
    Ok(HttpResponse::Created().json(organization))
}

async fn list_projects(app: web::Data<App>, ctx: OrgContext) -> Result {
    Ok(HttpResponse::Ok().json(shared::list_projects(&app, &ctx).await?))
}

async fn create_project(
    app: web::Data<App>,
    ctx: OrgContext,
    new: web::Json<shared::NewProject>,
) -> Result {
    let project = shared::create_project(&app, &ctx, new.into_inner()).await?;
    Ok(HttpResponse::Created().json(project))
}

async fn get_project(app: web::Data<App>, ctx: OrgContext, id: web::Path<String>) -> Result {
    Ok(HttpResponse::Ok().json(shared::get_project(&app, &ctx, &id).await?))
}

async fn delete_project(
    app: web::Data<App>,
    ctx: RequireRole<Admin>,
    id: web::Path<String>,
) -> Result {
    Ok(HttpResponse::Ok().json(shared::delete_project(&app, &ctx, &id).await?))
}

async fn list_invoices(app: web::Data<App>, ctx: OrgContext) -> Result {
    Ok(HttpResponse::Ok().json(shared::list_invoices(&app, &ctx).await?))
}

async fn create_invoice(
    app: web::Data<App>,
    ctx: RequirePermission<shared::InvoicesWrite>,
    new: web::Json<shared::NewInvoice>,
) -> Result {
    let invoice = shared::create_invoice(&app, &ctx, new.into_inner()).await?;
    Ok(HttpResponse::Created().json(invoice))
}

async fn list_members(app: web::Data<App>, ctx: OrgContext) -> Result {
    Ok(HttpResponse::Ok().json(shared::list_members(&app, &ctx).await?))
}

async fn add_member(
    app: web::Data<App>,
    ctx: RequireRole<Admin>,
    new: web::Json<shared::NewMember>,
) -> Result {
    let member = shared::add_member(&app, &ctx, new.into_inner()).await?;
    Ok(HttpResponse::Created().json(member))
}

async fn remove_member(app: web::Data<App>, ctx: OrgContext, user_id: web::Path<String>) -> Result {
    Ok(HttpResponse::Ok().json(shared::remove_member(&app, &ctx, &user_id).await?))
}

/// The raw body (the signature covers its bytes), read up to the webhook limit.
async fn clerk_webhook(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result {
    let body = match payload.to_bytes_limited(WEBHOOK_BODY_LIMIT).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return Err(ApiError::malformed_body("the body could not be read")),
        Err(_) => return Err(ApiError::payload_too_large(WEBHOOK_BODY_LIMIT)),
    };
    let headers =
        WebhookHeaders::from_fn(|name| req.headers().get(name).and_then(|v| v.to_str().ok()));
    Ok(HttpResponse::Ok().json(shared::clerk_webhook(&app, &headers, &body).await?))
}
