//! The actix-web routes over `shared`: extractors from `pg_tenancy::web::actix`, JSON errors from
//! `ApiError`. The same API as `axum_app`.

// pub for the end-to-end tests, which include this file.
#![allow(unreachable_pub, missing_debug_implementations)]

use std::sync::Arc;

use actix_web::web::{self, Bytes, Data, Path, ThinData};
use actix_web::{HttpRequest, HttpResponse};

use pg_tenancy::OrgContext;
use pg_tenancy::web::{Admin, ApiError, RequireRole, Session};

use crate::shared::{self, App, WEBHOOK_BODY_LIMIT};

type Answer = Result<HttpResponse, ApiError>;

fn ok(v: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok().json(v)
}

fn created(v: serde_json::Value) -> HttpResponse {
    HttpResponse::Created().json(v)
}

/// Registers the app data (`Tenancy` as `ThinData`, the app as `Data`) and every route.
pub fn configure(app: Arc<App>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(ThinData(app.tenancy.clone()))
            .app_data(Data::from(app))
            .route("/health", web::get().to(|| async { ok(shared::health()) }))
            .route("/.well-known/jwks.json", web::get().to(jwks))
            .route("/dev/token", web::post().to(dev_token))
            .route("/api/me/organizations", web::get().to(my_organizations))
            .route("/api/organizations", web::post().to(create_organization))
            .route("/api/projects", web::get().to(list_projects))
            .route("/api/projects", web::post().to(create_project))
            .route("/api/projects/{id}", web::get().to(get_project))
            .route("/api/projects/{id}", web::delete().to(delete_project))
            .route("/api/members", web::get().to(list_members))
            .route("/api/members", web::post().to(add_member))
            .route("/api/members/{user_id}", web::delete().to(remove_member))
            .route("/webhooks/clerk", web::post().to(clerk_webhook))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::not_found())
            }));
    }
}

async fn jwks(app: Data<App>) -> Answer {
    let dev = app.dev.as_ref().ok_or_else(ApiError::not_found)?;
    Ok(ok(dev.jwks().clone()))
}

async fn dev_token(app: Data<App>, body: Bytes) -> Answer {
    shared::dev_token(&app, &body).await.map(ok)
}

async fn my_organizations(app: Data<App>, session: Session) -> Answer {
    shared::my_organizations(&app, &session).await.map(ok)
}

async fn create_organization(app: Data<App>, session: Session, body: Bytes) -> Answer {
    shared::create_organization(&app, &session, &body)
        .await
        .map(created)
}

async fn list_projects(app: Data<App>, ctx: OrgContext) -> Answer {
    shared::list_projects(&app, &ctx).await.map(ok)
}

async fn create_project(app: Data<App>, ctx: OrgContext, body: Bytes) -> Answer {
    shared::create_project(&app, &ctx, &body).await.map(created)
}

async fn get_project(app: Data<App>, ctx: OrgContext, id: Path<String>) -> Answer {
    shared::get_project(&app, &ctx, &id).await.map(ok)
}

async fn delete_project(app: Data<App>, ctx: RequireRole<Admin>, id: Path<String>) -> Answer {
    shared::delete_project(&app, &ctx, &id).await.map(ok)
}

async fn list_members(app: Data<App>, ctx: OrgContext) -> Answer {
    shared::list_members(&app, &ctx).await.map(ok)
}

async fn add_member(app: Data<App>, ctx: RequireRole<Admin>, body: Bytes) -> Answer {
    shared::add_member(&app, &ctx, &body).await.map(created)
}

async fn remove_member(app: Data<App>, ctx: OrgContext, user_id: Path<String>) -> Answer {
    shared::remove_member(&app, &ctx, &user_id).await.map(ok)
}

async fn clerk_webhook(app: Data<App>, req: HttpRequest, payload: web::Payload) -> Answer {
    let body = match payload.to_bytes_limited(WEBHOOK_BODY_LIMIT).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return Err(ApiError::bad_request("unreadable body")),
        Err(_) => return Err(ApiError::payload_too_large(WEBHOOK_BODY_LIMIT)),
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    shared::clerk_webhook(&app, header, &body).await.map(ok)
}
