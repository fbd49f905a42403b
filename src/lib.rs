//! Organization-based multi-tenancy for PostgreSQL, enforced twice.
//!
//! - **In the application**: an [`OrgContext`] (organization, user, [`Role`]) that only a
//!   database-checked path ([`TenantPool::authorize`]) or a verified session
//!   ([`OrgContext::from_verified_session`]) can produce, with [`OrgContext::require_role`]
//!   guarding actions.
//! - **In the database**: [`TenantPool::with_rls`] runs each unit of work in a transaction whose
//!   transaction-local `app.current_org_id` drives Row-Level Security policies (see
//!   [`migrations`]). A query that forgot its `WHERE` still sees one organization; a write into
//!   another organization fails; no context sees nothing.
//!
//! ```no_run
//! use pg_tenancy::{OrgContext, OrgId, Role, TenantPool, UserId};
//!
//! # async fn demo() -> pg_tenancy::Result<()> {
//! let pool = TenantPool::connect("postgres://app@localhost/app").await?;
//! // From your verified session, never from the request body:
//! let user = UserId::new("user_2abc")?;
//! let org = OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
//! let ctx = pool.authorize(&user, org).await?;
//! ctx.require_role(Role::Member)?;
//!
//! let projects: Vec<String> = pool
//!     .with_rls_read(&ctx, async |tx| {
//!         Ok::<_, pg_tenancy::Error>(sqlx::query_scalar("SELECT name FROM projects ORDER BY name")
//!             .fetch_all(tx)
//!             .await?)
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `runtime-tokio` | yes | sqlx's tokio runtime |
//! | `webhook` | yes | [`webhook`]: Standard Webhooks / Svix signature verification |
//! | `clerk` | yes | [`clerk`]: the Clerk webhook sync and session claims |
//! | `clerk-jwt` | | `clerk::SessionTokenVerifier`: Clerk session tokens verified (RS256, JWKS) |
//! | `web` | | `web`: the request layer the adapters share (`Tenancy`, `ApiError`, `RequireRole`); 5xx answers logged through `tracing` |
//! | `axum` | | `web::axum`: axum 0.8 extractors and responses (turns on `web`) |
//! | `actix-web` | | `web::actix`: actix-web 4 extractors and responses (turns on `web`) |
//! | `http` | | `webhook::WebhookHeaders::from_header_map` |
//! | `tracing` | | `tenancy.unit` and `tenancy.webhook` spans |
//! | `testing` | | `testing`: a throwaway PostgreSQL and test databases (Unix); with `clerk-jwt`, `testing::DevTokenIssuer` |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod citus;
#[cfg(feature = "web")]
mod claims;
#[cfg(feature = "clerk")]
#[cfg_attr(docsrs, doc(cfg(feature = "clerk")))]
pub mod clerk;
mod context;
mod error;
mod hardened;
mod ids;
pub mod migrations;
mod pool;
mod role;
mod service;
mod sql_ident;
mod sql_types;
#[cfg(all(feature = "testing", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "testing", unix))))]
pub mod testing;
mod trace;
mod util;
#[cfg(feature = "web")]
#[cfg_attr(docsrs, doc(cfg(feature = "web")))]
pub mod web;
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub mod webhook;

/// The sqlx this crate is built on (pinned exactly), so that a program naming only
/// `pg-tenancy` and `tokio` can write `pg_tenancy::sqlx::query(...)` against a unit's
/// transaction. sqlx's macros (`query!`, `migrate!`) expand to `::sqlx` paths and need sqlx as
/// a dependency of your own: `sqlx = { version = "=0.9.0", default-features = false,
/// features = ["postgres", "macros", "migrate"] }` (the same version, so one copy is built).
pub use sqlx;

pub use context::OrgContext;
pub use error::{Error, ErrorKind, Result};
pub use hardened::ContextKey;
pub use ids::{OrgId, UserId};
pub use pool::{Membership, TenantPool, TenantTransaction};
pub use role::Role;
pub use service::ServicePool;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
