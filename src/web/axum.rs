//! axum 0.8: [`Session`], [`OrgContext`] and [`RequireRole`] as extractors, [`ApiError`] as a
//! response.
//!
//! The state is [`Tenancy`], reached through [`FromRef`]: your state holds one (or is one),
//! so a router without it does not compile. The verified session and the context are kept in
//! the request's extensions, so that several extractors in one handler verify and look up once.
//!
//! ```no_run
//! use axum::{Json, Router, extract::FromRef, routing::get};
//! use pg_tenancy::OrgContext;
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

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, MinRole, RequireRole, Session, Tenancy, token_from_request};
use crate::OrgContext;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
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

/// The context in the session's active organization, with the role the database holds: 401
/// without a valid token, 403 without an active organization or membership.
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
/// has no active organization. Still 401 without a valid token, and 403 for an active
/// organization the user is not a member of.
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

/// An [`OrgContext`] with at least `R`'s role: 403 `insufficient_role` otherwise.
impl<S, R> FromRequestParts<S> for RequireRole<R>
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
    R: MinRole,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        RequireRole::check(context(parts, &Tenancy::from_ref(state)).await?)
    }
}
