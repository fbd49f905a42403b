//! actix-web 4: [`Session`], [`OrgContext`], [`RequireRole`] and [`RequirePermission`] as
//! extractors, [`ApiError`] as a [`ResponseError`], and [`json_config`], a `web::Json`
//! configuration that answers a bad body with an [`ApiError`].
//!
//! The state is [`Tenancy`] in the app data, as `web::Data<Tenancy>` or `web::ThinData<Tenancy>`.
//! An app without it answers 500 `server_misconfigured`, naming the call that adds it. The
//! verified session and the context are kept in the request's extensions, so that several
//! extractors in one handler verify once (and look the role up at most once: [`RequireRole`],
//! for a token whose role is too low).
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, web};
//! use pg_tenancy::OrgContext;
//! use pg_tenancy::web::{Admin, ApiError, RequireRole, Tenancy};
//!
//! async fn projects(tenancy: web::Data<Tenancy>, ctx: OrgContext) -> Result<HttpResponse, ApiError> {
//!     let names: Vec<String> = tenancy
//!         .pool()
//!         .with_rls_read(&ctx, async |tx| {
//!             Ok::<_, pg_tenancy::Error>(sqlx::query_scalar("SELECT name FROM projects").fetch_all(tx).await?)
//!         })
//!         .await?;
//!     Ok(HttpResponse::Ok().json(names))
//! }
//!
//! async fn admin_only(ctx: RequireRole<Admin>) -> String {
//!     format!("{} may administer {}", ctx.user_id(), ctx.org_id())
//! }
//!
//! # fn app(tenancy: Tenancy) {
//! let app = App::new()
//!     .app_data(web::Data::new(tenancy))
//!     .app_data(pg_tenancy::web::actix::json_config())
//!     .route("/api/projects", web::get().to(projects))
//!     .route("/api/admin", web::get().to(admin_only));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};

use actix_web::error::{JsonPayloadError, PayloadError};

use super::error::Code;
use super::{
    ApiError, MinRole, Permission, RequirePermission, RequireRole, Session, Tenancy,
    token_from_request,
};
use crate::OrgContext;

/// The JSON body, logged first when it is a 5xx (see [`ApiError`]).
impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        self.log_if_server_error();
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

/// A [`web::JsonConfig`] whose error handler answers a body `web::Json<T>` refuses with an
/// [`ApiError`] in the same JSON shape as every other error, not with actix-web's plain text:
/// 415 `unsupported_media_type` without `Content-Type: application/json`, 400
/// `malformed_body` for text that is not JSON, 422 `invalid_body` for JSON of the wrong shape,
/// 413 `payload_too_large` above the limit (actix-web's 2 MB unless you call `.limit(bytes)`
/// on it). Add it to the app data.
///
/// ```
/// use actix_web::{App, web};
///
/// #[derive(serde::Deserialize)]
/// struct NewProject {
///     name: String,
/// }
///
/// async fn create(project: web::Json<NewProject>) -> String {
///     project.into_inner().name
/// }
///
/// let app = App::new()
///     .app_data(pg_tenancy::web::actix::json_config().limit(64 * 1024))
///     .route("/api/projects", web::post().to(create));
/// ```
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().error_handler(|error, _| body_error(error).into())
}

fn body_error(error: JsonPayloadError) -> ApiError {
    let answer = match &error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::payload_too_large(*limit),
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::coded(Code::PayloadTooLarge, "the body exceeds the limit")
        }
        JsonPayloadError::ContentType => ApiError::unsupported_media_type(),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::invalid_body(format!("invalid body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::malformed_body(format!("malformed body: {e}"))
        }
        JsonPayloadError::Payload(_) => ApiError::malformed_body("the body could not be read"),
        _ => ApiError::coded(Code::Internal, "internal error"),
    };
    answer.with_source(error)
}

fn tenancy(req: &HttpRequest) -> Result<Tenancy, ApiError> {
    if let Some(data) = req.app_data::<web::Data<Tenancy>>() {
        return Ok(data.get_ref().clone());
    }
    if let Some(thin) = req.app_data::<web::ThinData<Tenancy>>() {
        return Ok(thin.0.clone());
    }
    Err(ApiError::misconfigured(
        "pg_tenancy::web::Tenancy is not in the app data: add \
         `.app_data(web::Data::new(tenancy))` (or `web::ThinData(tenancy)`) to the App",
    ))
}

fn token(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let cookies = headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok());
    token_from_request(authorization, cookies).map(str::to_owned)
}

async fn session(req: &HttpRequest) -> Result<Session, ApiError> {
    if let Some(session) = req.extensions().get::<Session>().cloned() {
        return Ok(session);
    }
    let tenancy = tenancy(req)?;
    let session = tenancy.session(token(req).as_deref()).await?;
    req.extensions_mut().insert(session.clone());
    Ok(session)
}

async fn context(req: &HttpRequest) -> Result<OrgContext, ApiError> {
    if let Some(ctx) = req.extensions().get::<OrgContext>().cloned() {
        return Ok(ctx);
    }
    let tenancy = tenancy(req)?;
    let session = session(req).await?;
    let ctx = tenancy.org_context(&session).await?;
    req.extensions_mut().insert(ctx.clone());
    Ok(ctx)
}

type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// The verified session: 401 without a valid token. `Option<Session>` is `None` for any
/// failure (actix's rule for `Option`); use `Session` where a bad token must be a 401.
impl FromRequest for Session {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { session(&req).await })
    }
}

/// The context in the session's active organization ([`Tenancy::org_context`]: from the
/// verified token, no lookup; each unit's entry checks the membership): 401 without a valid
/// token, 403 without an active organization.
impl FromRequest for OrgContext {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { context(&req).await })
    }
}

/// The context if the session has an active organization, for pages that work without one:
/// `None` then. Still 401 without a valid token.
#[derive(Debug, Clone)]
pub struct MaybeOrgContext(pub Option<OrgContext>);

impl FromRequest for MaybeOrgContext {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if session(&req).await?.org_id.is_none() {
                return Ok(MaybeOrgContext(None));
            }
            context(&req).await.map(|c| MaybeOrgContext(Some(c)))
        })
    }
}

/// An [`OrgContext`] with at least `R`'s role ([`Tenancy::require_role`]: one lookup only
/// when the token's role is below `R`): 403 `insufficient_role` otherwise.
impl<R: MinRole> FromRequest for RequireRole<R> {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let ctx = context(&req).await?;
            let checked = tenancy(&req)?.require_role(&ctx, R::ROLE).await?;
            if checked != ctx {
                // Looked up: the other extractors of this request take the database's role too.
                req.extensions_mut().insert(checked.clone());
            }
            RequireRole::check(checked)
        })
    }
}

/// An [`OrgContext`] carrying `P` ([`Tenancy::require_permission`]: one lookup only when the
/// verified token does not state it): 403 `missing_permission` otherwise.
impl<P: Permission> FromRequest for RequirePermission<P> {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let ctx = context(&req).await?;
            let checked = tenancy(&req)?.require_permission(&ctx, P::KEY).await?;
            // Looked up or not, the other extractors of this request take this context: a
            // lookup's is the database's, for them too.
            req.extensions_mut().insert(checked.clone());
            RequirePermission::check(checked)
        })
    }
}
