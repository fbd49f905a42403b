//! axum 0.8: [`Session`], [`OrgContext`], [`RequireRole`] and [`RequirePermission`] as
//! extractors, [`ApiError`] as a response, and [`Json`], axum's JSON extractor answering a bad
//! body with an [`ApiError`].
//!
//! The state is [`Tenancy`], reached through [`FromRef`]: your state holds one (or is one),
//! so a router without it does not compile. The verified session and the context are kept in
//! the request's extensions, so that several extractors in one handler verify once (and look
//! the role up at most once: [`RequireRole`], for a token whose role is too low).
//!
//! ```no_run
//! use axum::{Router, extract::FromRef, routing::get};
//! use pg_tenancy::OrgContext;
//! use pg_tenancy::web::axum::Json;
//! use pg_tenancy::web::{Admin, ApiError, RequireRole, Tenancy};
//!
//! #[derive(Clone)]
//! struct AppState {
//!     tenancy: Tenancy,
//!     // ...your own state
//! }
//!
//! // (or `#[derive(FromRef)]` with axum's `macros` feature)
//! impl FromRef<AppState> for Tenancy {
//!     fn from_ref(state: &AppState) -> Tenancy {
//!         state.tenancy.clone()
//!     }
//! }
//!
//! async fn projects(
//!     axum::extract::State(tenancy): axum::extract::State<Tenancy>,
//!     ctx: OrgContext,
//! ) -> Result<Json<Vec<String>>, ApiError> {
//!     let names = tenancy
//!         .pool()
//!         .with_rls_read(&ctx, async |tx| {
//!             Ok::<_, pg_tenancy::Error>(sqlx::query_scalar("SELECT name FROM projects").fetch_all(tx).await?)
//!         })
//!         .await?;
//!     Ok(Json(names))
//! }
//!
//! async fn admin_only(ctx: RequireRole<Admin>) -> String {
//!     format!("{} may administer {}", ctx.user_id(), ctx.org_id())
//! }
//!
//! fn router(tenancy: Tenancy) -> Router {
//!     Router::new()
//!         .route("/api/projects", get(projects))
//!         .route("/api/admin", get(admin_only))
//!         .with_state(AppState { tenancy })
//! }
//! ```

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Code;
use super::{
    ApiError, MinRole, Permission, RequirePermission, RequireRole, Session, Tenancy,
    token_from_request,
};
use crate::OrgContext;

/// The JSON body, logged first when it is a 5xx (see [`ApiError`]).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_if_server_error();
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// axum's [`Json`](axum::Json), but a body it refuses is answered with an [`ApiError`] in
/// the same JSON shape as every other error, not with axum's plain text: 415
/// `unsupported_media_type` without `Content-Type: application/json`, 400 `malformed_body` for
/// text that is not JSON, 422 `invalid_body` for JSON of the wrong shape, 413
/// `payload_too_large` above the body limit (axum's `DefaultBodyLimit`, 2 MB unless you set
/// it). As a response it is axum's `Json`.
///
/// ```
/// use pg_tenancy::web::axum::Json;
///
/// #[derive(serde::Deserialize)]
/// struct NewProject {
///     name: String,
/// }
///
/// async fn create(Json(project): Json<NewProject>) -> Json<String> {
///     Json(project.name)
/// }
/// # let _ = axum::routing::post::<_, _, ()>(create);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(body_error(rejection)),
        }
    }
}

fn body_error(rejection: JsonRejection) -> ApiError {
    let error = match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type(),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::coded(Code::PayloadTooLarge, "the body exceeds the limit")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid_body(rejection.body_text()),
        status if status.is_client_error() => ApiError::malformed_body(rejection.body_text()),
        _ => ApiError::coded(Code::Internal, "internal error"),
    };
    error.with_source(rejection)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T> From<T> for Json<T> {
    fn from(value: T) -> Self {
        Json(value)
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

fn token(parts: &Parts) -> Option<&str> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let cookies = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    token_from_request(authorization, cookies)
}

async fn session(parts: &mut Parts, tenancy: &Tenancy) -> Result<Session, ApiError> {
    if let Some(session) = parts.extensions.get::<Session>() {
        return Ok(session.clone());
    }
    let session = tenancy.session(token(parts)).await?;
    parts.extensions.insert(session.clone());
    Ok(session)
}

async fn context(parts: &mut Parts, tenancy: &Tenancy) -> Result<OrgContext, ApiError> {
    if let Some(ctx) = parts.extensions.get::<OrgContext>() {
        return Ok(ctx.clone());
    }
    let session = session(parts, tenancy).await?;
    let ctx = tenancy.org_context(&session).await?;
    parts.extensions.insert(ctx.clone());
    Ok(ctx)
}

/// The verified session: 401 without a valid token.
impl<S> FromRequestParts<S> for Session
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        session(parts, &Tenancy::from_ref(state)).await
    }
}

/// `Option<Session>`: `None` without a token; a token that fails verification is still a 401.
impl<S> OptionalFromRequestParts<S> for Session
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        if token(parts).is_none() {
            return Ok(None);
        }
        session(parts, &Tenancy::from_ref(state)).await.map(Some)
    }
}

/// The context in the session's active organization ([`Tenancy::org_context`]: from the
/// verified token, no lookup; each unit's entry checks the membership): 401 without a valid
/// token, 403 without an active organization.
impl<S> FromRequestParts<S> for OrgContext
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        context(parts, &Tenancy::from_ref(state)).await
    }
}

/// `Option<OrgContext>`, for pages that work without an organization: `None` when the session
/// has no active organization. Still 401 without a valid token.
impl<S> OptionalFromRequestParts<S> for OrgContext
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        let tenancy = Tenancy::from_ref(state);
        if session(parts, &tenancy).await?.org_id.is_none() {
            return Ok(None);
        }
        context(parts, &tenancy).await.map(Some)
    }
}

/// An [`OrgContext`] with at least `R`'s role ([`Tenancy::require_role`]: one lookup only
/// when the token's role is below `R`): 403 `insufficient_role` otherwise.
impl<S, R> FromRequestParts<S> for RequireRole<R>
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
    R: MinRole,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let tenancy = Tenancy::from_ref(state);
        let ctx = context(parts, &tenancy).await?;
        let checked = tenancy.require_role(&ctx, R::ROLE).await?;
        if checked != ctx {
            // Looked up: the other extractors of this request take the database's role too.
            parts.extensions.insert(checked.clone());
        }
        RequireRole::check(checked)
    }
}

/// An [`OrgContext`] carrying `P` ([`Tenancy::require_permission`]: one lookup only when the
/// verified token does not state it): 403 `missing_permission` otherwise.
impl<S, P> FromRequestParts<S> for RequirePermission<P>
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
    P: Permission,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let tenancy = Tenancy::from_ref(state);
        let ctx = context(parts, &tenancy).await?;
        let checked = tenancy.require_permission(&ctx, P::KEY).await?;
        // Looked up or not, the other extractors of this request take this context: a lookup's
        // is the database's, for them too.
        parts.extensions.insert(checked.clone());
        RequirePermission::check(checked)
    }
}
