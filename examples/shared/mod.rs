//! What `axum_app` and `actix_app` share: the API's business logic, free of either framework
//! and of HTTP. Each operation takes the verified session or context and typed input, and
//! returns typed output or an `ApiError`; each app's `app.rs` maps routes and extractors onto
//! it. Start-up is in `setup.rs`. The end-to-end tests (`tests/web`) include both apps.

#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // Each includer uses a different part; pub for the tests.

mod setup;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use pg_tenancy::clerk::ClerkSync;
use pg_tenancy::testing::DevTokenIssuer;
use pg_tenancy::web::{Admin, ApiError, RequirePermission, RequireRole, Session, Tenancy};
use pg_tenancy::webhook::WebhookHeaders;
use pg_tenancy::{Error, OrgContext, OrgId, Role, ServicePool, UserId};

pub use setup::{Options, start};

/// The webhook body limit: larger deliveries get 413.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;
/// The page `/` (axum app).
pub const INDEX_HTML: &str = include_str!("index.html");

/// The running app's parts.
pub struct App {
    /// The request state for the adapters.
    pub tenancy: Tenancy,
    /// The webhook sync, when a secret and a service pool are configured.
    pub sync: Option<ClerkSync>,
    /// The service path, when configured: what writes the identity provider's columns.
    pub service: Option<ServicePool>,
    /// The local token issuer in `--dev`.
    pub dev: Option<DevTokenIssuer>,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn project_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("the project id is not a UUID"))
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::new(raw).map_err(ApiError::from)
}

/// `GET /health`.
#[derive(Serialize)]
pub struct Health {
    status: &'static str,
}

pub fn health() -> Health {
    Health { status: "ok" }
}

/// One entry of the organization switcher.
#[derive(Serialize)]
pub struct MyOrganization {
    org_id: OrgId,
    external_id: Option<String>,
    name: String,
    slug: Option<String>,
    role: Role,
    active: bool,
}

/// `GET /api/me/organizations`.
#[derive(Serialize)]
pub struct MyOrganizations {
    user_id: UserId,
    active_org_id: Option<OrgId>,
    organizations: Vec<MyOrganization>,
}

/// `GET /api/me/organizations`: the switcher; works without an active organization.
pub async fn my_organizations(app: &App, session: &Session) -> Result<MyOrganizations, ApiError> {
    let memberships = app.tenancy.pool().memberships(&session.user_id).await?;
    let organizations = memberships
        .into_iter()
        .map(|m| MyOrganization {
            active: Some(m.org_id) == session.org_id,
            org_id: m.org_id,
            external_id: m.external_id,
            name: m.name,
            slug: m.slug,
            role: m.role,
        })
        .collect();
    Ok(MyOrganizations {
        user_id: session.user_id.clone(),
        active_org_id: session.org_id,
        organizations,
    })
}

/// `POST /api/organizations` body.
#[derive(Deserialize)]
pub struct NewOrganization {
    name: String,
    slug: Option<String>,
}

/// An organization just created.
#[derive(Serialize)]
pub struct Organization {
    org_id: OrgId,
    external_id: String,
    name: String,
    slug: Option<String>,
    role: Role,
}

/// `POST /api/organizations`: onboarding; the creator becomes the owner.
pub async fn create_organization(
    app: &App,
    session: &Session,
    new: NewOrganization,
) -> Result<Organization, ApiError> {
    let NewOrganization { name, slug } = new;
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name: 1 to 100 characters"));
    }
    if let Some(slug) = &slug {
        let ok = (1..=48).contains(&slug.len())
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ApiError::bad_request("slug: 1 to 48 of a-z, 0-9 and -"));
        }
    }
    // Named as the identity provider would name it, so that a token can make it active.
    let external_id = format!("org_{}", Uuid::new_v4().simple());
    let org = OrgId::from_external_id(&external_id);
    let pool = app.tenancy.pool();
    pool.create_organization(org, &name, slug.as_deref(), &session.user_id)
        .await?;
    // The organization's identity-provider id is the provider's column: only the service
    // path writes it (request code gets TNC11). Here the app stands in for the provider, so it
    // records the id it made up through its service pool; without one the organization is
    // still usable by that id (the row's id derives from it), but the switcher cannot show it.
    if let Some(service) = &app.service {
        service
            .with_org(org, async |tx| {
                sqlx::query("UPDATE organizations SET external_id = $1 WHERE id = $2")
                    .bind(&external_id)
                    .bind(org)
                    .execute(tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await?;
    }
    Ok(Organization {
        org_id: org,
        external_id,
        name,
        slug,
        role: Role::Owner,
    })
}

/// A project.
#[derive(Serialize, sqlx::FromRow)]
pub struct Project {
    id: Uuid,
    name: String,
}

/// `GET /api/projects`. No `WHERE`: Row-Level Security keeps it to the organization.
pub async fn list_projects(app: &App, ctx: &OrgContext) -> Result<Vec<Project>, ApiError> {
    let projects = app
        .tenancy
        .pool()
        .with_rls_read(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_as("SELECT id, name FROM projects ORDER BY created_at, name")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await?;
    Ok(projects)
}

/// `POST /api/projects` body.
#[derive(Deserialize)]
pub struct NewProject {
    name: String,
}

/// `POST /api/projects`: into the context's organization, whatever else the body says.
pub async fn create_project(
    app: &App,
    ctx: &OrgContext,
    new: NewProject,
) -> Result<Project, ApiError> {
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::bad_request("name: 1 to 200 characters"));
    }
    let id: Uuid = app
        .tenancy
        .pool()
        .with_rls(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar(
                    "INSERT INTO projects (organization_id, name) VALUES ($1, $2) RETURNING id",
                )
                .bind(ctx.org_id())
                .bind(&name)
                .fetch_one(tx)
                .await?,
            )
        })
        .await?;
    Ok(Project { id, name })
}

pg_tenancy::permission! {
    /// Writing invoices (`POST /api/invoices`): the application checks the token's
    /// permissions first, and the table's policy checks the role's, as the database holds
    /// them, at the write.
    pub InvoicesWrite = "org:invoices:write";
}

#[derive(Serialize, sqlx::FromRow)]
pub struct Invoice {
    id: Uuid,
    number: String,
    amount_cents: i64,
}

/// `GET /api/invoices`: every member reads.
pub async fn list_invoices(app: &App, ctx: &OrgContext) -> Result<Vec<Invoice>, ApiError> {
    let invoices = app
        .tenancy
        .pool()
        .with_rls_read(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_as(
                    "SELECT id, number, amount_cents FROM invoices ORDER BY created_at, number",
                )
                .fetch_all(tx)
                .await?,
            )
        })
        .await?;
    Ok(invoices)
}

/// `POST /api/invoices` body.
#[derive(Deserialize)]
pub struct NewInvoice {
    number: String,
    amount_cents: i64,
}

/// `POST /api/invoices`: needs `org:invoices:write` (the extractor checks the token's, the
/// policy the role's: a role that lost it since the token was issued is refused 403).
pub async fn create_invoice(
    app: &App,
    ctx: &RequirePermission<InvoicesWrite>,
    new: NewInvoice,
) -> Result<Invoice, ApiError> {
    let number = new.number.trim().to_owned();
    if number.is_empty() || number.chars().count() > 64 || new.amount_cents < 0 {
        return Err(ApiError::bad_request(
            "number: 1 to 64 characters; amount_cents: 0 or more",
        ));
    }
    let id: Uuid = app
        .tenancy
        .pool()
        .with_rls(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar(
                    "INSERT INTO invoices (organization_id, number, amount_cents) \
                     VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(ctx.org_id())
                .bind(&number)
                .bind(new.amount_cents)
                .fetch_one(tx)
                .await?,
            )
        })
        .await?;
    Ok(Invoice {
        id,
        number,
        amount_cents: new.amount_cents,
    })
}

/// `GET /api/projects/{id}`: 404 for another organization's project (RLS hides it).
pub async fn get_project(app: &App, ctx: &OrgContext, id: &str) -> Result<Project, ApiError> {
    let id = project_id(id)?;
    let project: Option<Project> = app
        .tenancy
        .pool()
        .with_rls_read(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_as("SELECT id, name FROM projects WHERE id = $1")
                    .bind(id)
                    .fetch_optional(tx)
                    .await?,
            )
        })
        .await?;
    project.ok_or_else(ApiError::not_found)
}

/// `DELETE /api/projects/{id}` answer.
#[derive(Serialize)]
pub struct Deleted {
    deleted: Uuid,
}

/// `DELETE /api/projects/{id}` (admin).
pub async fn delete_project(
    app: &App,
    ctx: &RequireRole<Admin>,
    id: &str,
) -> Result<Deleted, ApiError> {
    let id = project_id(id)?;
    let deleted = app
        .tenancy
        .pool()
        .with_rls(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query("DELETE FROM projects WHERE id = $1")
                    .bind(id)
                    .execute(tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await?;
    if deleted == 0 {
        return Err(ApiError::not_found());
    }
    Ok(Deleted { deleted: id })
}

/// A member.
#[derive(Serialize, sqlx::FromRow)]
pub struct Member {
    user_id: String,
    role: Role,
}

/// `GET /api/members`.
pub async fn list_members(app: &App, ctx: &OrgContext) -> Result<Vec<Member>, ApiError> {
    let members = app
        .tenancy
        .pool()
        .with_rls_read(ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_as(
                    "SELECT user_id, role FROM organization_members ORDER BY created_at, user_id",
                )
                .fetch_all(tx)
                .await?,
            )
        })
        .await?;
    Ok(members)
}

/// `POST /api/members` body. Text, so that a bad id or role is a 400 naming it.
#[derive(Deserialize)]
pub struct NewMember {
    user_id: String,
    role: String,
}

/// `POST /api/members` (admin; owner to add an owner).
pub async fn add_member(
    app: &App,
    ctx: &RequireRole<Admin>,
    new: NewMember,
) -> Result<Member, ApiError> {
    let user = user_id(&new.user_id)?;
    let role: Role = new.role.parse().map_err(ApiError::from)?;
    app.tenancy.pool().add_member(ctx, &user, role).await?;
    Ok(Member {
        user_id: user.as_str().to_owned(),
        role,
    })
}

/// `DELETE /api/members/{user_id}` answer.
#[derive(Serialize)]
pub struct Removed {
    removed: UserId,
}

/// `DELETE /api/members/{user_id}`: an admin removes a member (an owner removes an owner);
/// anyone may remove themselves (leave).
pub async fn remove_member(app: &App, ctx: &OrgContext, user: &str) -> Result<Removed, ApiError> {
    let user = user_id(user)?;
    // An admin's action: the token's role, or the database's when the token's is lower (one
    // lookup, for a user promoted since the token was issued).
    let ctx = if &user != ctx.user_id() {
        app.tenancy.require_role(ctx, Role::Admin).await?
    } else {
        ctx.clone()
    };
    let removed = app
        .tenancy
        .pool()
        .with_rls(&ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query("DELETE FROM organization_members WHERE user_id = $1")
                    .bind(&user)
                    .execute(tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await?;
    if removed == 0 {
        // Not a member, or an owner that an admin may not remove: the policy hides which.
        return Err(ApiError::not_found());
    }
    Ok(Removed { removed: user })
}

/// `POST /webhooks/clerk` answer.
#[derive(Serialize)]
pub struct Delivery {
    outcome: String,
}

/// `POST /webhooks/clerk`: verify and sync one delivery.
pub async fn clerk_webhook(
    app: &App,
    headers: &WebhookHeaders<'_>,
    body: &[u8],
) -> Result<Delivery, ApiError> {
    let Some(sync) = &app.sync else {
        return Err(ApiError::misconfigured(
            "webhooks are off: set CLERK_WEBHOOK_SECRET (and SERVICE_DATABASE_URL with DATABASE_URL)",
        ));
    };
    match sync.handle(headers, body).await {
        Ok(outcome) => Ok(Delivery {
            outcome: format!("{outcome:?}"),
        }),
        // A bad delivery says why; a database failure stays in the server's logs.
        Err(e) if e.kind().http_status() == 400 => {
            Err(ApiError::new(e.kind(), "invalid_webhook", e.to_string()))
        }
        Err(e) => Err(ApiError::new(e.kind(), "internal", "internal error").with_source(e)),
    }
}

/// `POST /dev/token` body.
#[derive(Deserialize)]
pub struct TokenRequest {
    user_id: String,
    org_id: Option<String>,
}

/// A development token.
#[derive(Serialize)]
pub struct DevToken {
    token: String,
    expires_in: i64,
}

/// `POST /dev/token` (`--dev` only; 404 otherwise): a Clerk-v2-shaped session token. Like
/// Clerk, it makes an organization active only for a member, with the role the membership
/// holds; 403 `not_a_member` otherwise.
pub async fn dev_token(app: &App, request: TokenRequest) -> Result<DevToken, ApiError> {
    let Some(dev) = &app.dev else {
        return Err(ApiError::not_found());
    };
    let user = user_id(&request.user_id)?;
    let org = match request.org_id.as_deref().filter(|o| !o.is_empty()) {
        None => None,
        Some(external) => {
            let ctx = app
                .tenancy
                .pool()
                .authorize(&user, OrgId::from_external_id(external))
                .await?;
            let role = match ctx.role() {
                // Clerk has no owner role: the creator is `admin` there (see RoleMapping).
                Role::Owner | Role::Admin => "admin",
                Role::Member => "member",
            };
            Some((external, role, None))
        }
    };
    let lifetime = 3600;
    let token = dev.sign(&dev.claims(user.as_str(), org, lifetime));
    Ok(DevToken {
        token,
        expires_in: lifetime,
    })
}
