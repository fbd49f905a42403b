//! What `axum_app` and `actix_app` share: start-up, the `--dev` token issuer, and the API's
//! logic, free of either framework. Each app's `app.rs` is a thin layer of routes and
//! extractors over this; the end-to-end tests (`tests/web`) include both.

#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // Each includer uses a different part; pub for the tests.

use std::error::Error as StdError;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use pg_tenancy::clerk::{ClerkSync, SessionTokenVerifier};
use pg_tenancy::testing::TestDatabase;
use pg_tenancy::web::{Admin, ApiError, RequireRole, Session, Tenancy};
use pg_tenancy::webhook::{Verifier, WebhookHeaders};
use pg_tenancy::{Error, OrgContext, OrgId, Role, ServicePool, TenantPool, UserId};

/// The webhook body limit: larger deliveries get 413.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;
/// The page `/` (axum app).
pub const INDEX_HTML: &str = include_str!("index.html");

/// How to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--dev`: a local signing key, its JWKS at `/.well-known/jwks.json`, `POST /dev/token`.
    pub dev: bool,
    /// Where to listen (`127.0.0.1:0` for any free port).
    pub bind: SocketAddr,
    /// The webhook signing secret (`whsec_...`); else `CLERK_WEBHOOK_SECRET`.
    pub webhook_secret: Option<String>,
    /// Print what a person needs (URL, routes); off in tests.
    pub announce: bool,
}

impl Options {
    /// From the command line: `--dev`, `--port N`.
    pub fn from_args() -> Result<Options, String> {
        let mut options = Options {
            dev: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            webhook_secret: None,
            announce: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--dev" => options.dev = true,
                "--port" => {
                    let port = args.next().and_then(|p| p.parse().ok());
                    let port = port.ok_or("--port needs a number")?;
                    options.bind.set_port(port);
                }
                other => return Err(format!("unknown argument {other:?} (try --dev, --port N)")),
            }
        }
        Ok(options)
    }
}

/// The running app's parts.
pub struct App {
    /// The request state for the adapters.
    pub tenancy: Tenancy,
    /// The webhook sync, when a secret and a service pool are configured.
    pub sync: Option<ClerkSync>,
    /// The local issuer in `--dev`.
    pub dev: Option<DevIssuer>,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
}

/// An app ready to serve: its listener (bound) and the throwaway database it runs on, if any
/// (dropped last).
pub struct Started {
    /// The app.
    pub app: Arc<App>,
    /// The bound listener (non-blocking).
    pub listener: TcpListener,
    /// The throwaway database, kept alive while the app runs.
    pub database: Option<TestDatabase>,
}

/// Binds, connects (throwaway PostgreSQL without `DATABASE_URL`), and builds the app.
pub async fn start(options: Options) -> Result<Started, Box<dyn StdError>> {
    let listener = TcpListener::bind(options.bind)?;
    listener.set_nonblocking(true)?;
    let base_url = format!("http://{}", listener.local_addr()?);

    let (verifier, dev) = if options.dev {
        let dev = DevIssuer::generate(&base_url)?;
        let verifier = SessionTokenVerifier::from_jwks_url(
            &format!("{base_url}/.well-known/jwks.json"),
            &base_url,
        )?
        .with_authorized_parties([base_url.clone()]);
        (verifier, Some(dev))
    } else {
        let issuer = std::env::var("CLERK_ISSUER").map_err(|_| {
            "set CLERK_ISSUER (your Clerk Frontend API URL), or run with --dev for local tokens"
        })?;
        let jwks = std::env::var("CLERK_JWKS_URL")
            .unwrap_or_else(|_| format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')));
        let parties: Vec<String> = std::env::var("CLERK_AUTHORIZED_PARTIES")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let verifier =
            SessionTokenVerifier::from_jwks_url(&jwks, &issuer)?.with_authorized_parties(parties);
        (verifier, None)
    };

    let (pool, service, database) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let pool = TenantPool::connect(&url).await?;
            let service = match std::env::var("SERVICE_DATABASE_URL") {
                Ok(url) => Some(ServicePool::connect(&url).await?),
                Err(_) => None,
            };
            if options.announce {
                println!("Database: DATABASE_URL (SERVICE_DATABASE_URL for webhooks and claims)");
            }
            (pool, service, None)
        }
        Err(_) => {
            let db = TestDatabase::create().await?;
            // The app's own table, from its own migrations, granted to both roles.
            db.migrate(&sqlx::migrate!("./examples/migrations")).await?;
            db.grant_app(&["projects"]).await?;
            db.grant_service(&["projects"]).await?;
            if options.announce {
                println!(
                    "Database: a throwaway PostgreSQL at {} (password withheld: secrets are \
                     never printed; set DATABASE_URL to use your own)",
                    redacted(&db.app_url())
                );
            }
            (
                db.app_pool(8).await?,
                Some(db.service_pool(4).await?),
                Some(db),
            )
        }
    };

    let mut tenancy = Tenancy::new(pool, verifier);
    let secret = options
        .webhook_secret
        .clone()
        .or_else(|| std::env::var("CLERK_WEBHOOK_SECRET").ok());
    let mut sync = None;
    if let Some(service) = service {
        tenancy = tenancy.with_token_memberships(service.clone());
        if let Some(secret) = secret {
            sync = Some(ClerkSync::new(service, Verifier::new(&secret)?));
        }
    }
    if options.announce {
        announce(&base_url, dev.is_some(), sync.is_some());
    }
    Ok(Started {
        app: Arc::new(App {
            tenancy,
            sync,
            dev,
            base_url,
        }),
        listener,
        database,
    })
}

fn redacted(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:****{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn announce(base: &str, dev: bool, webhooks: bool) {
    println!("Listening on {base}");
    if dev {
        println!("  --dev: page at {base}/ ; JWKS at {base}/.well-known/jwks.json");
        println!(
            "  token: curl -s -X POST {base}/dev/token -H 'content-type: application/json' \
             -d '{{\"user_id\":\"user_alice\"}}'"
        );
    }
    if !webhooks {
        println!("  POST /webhooks/clerk is off: set CLERK_WEBHOOK_SECRET to turn it on");
    }
}

/// A local RSA key that signs Clerk-v2-shaped session tokens, and its JWKS.
pub struct DevIssuer {
    kid: String,
    key: EncodingKey,
    private_pem: String,
    public: rsa::RsaPublicKey,
    jwks: Value,
    issuer: String,
}

impl DevIssuer {
    /// A fresh 2048-bit key, for tokens issued by (and for) `issuer`.
    pub fn generate(issuer: &str) -> Result<DevIssuer, Box<dyn StdError>> {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
        let pem = private.to_pkcs8_pem(LineEnding::LF)?;
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let kid = format!("ins_dev_{}", Uuid::new_v4().simple());
        let public = private.to_public_key();
        let private_pem = pem.to_string();
        let jwks = json!({ "keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }]});
        Ok(DevIssuer {
            kid,
            key,
            private_pem,
            public,
            jwks,
            issuer: issuer.to_owned(),
        })
    }

    /// The private key in PKCS#8 PEM (tests sign forgeries with it). Never print it.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }

    /// The public key.
    pub fn public_key(&self) -> &rsa::RsaPublicKey {
        &self.public
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The issuer (`iss`) and authorized party (`azp`) of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` (RS256, with its `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("RS256 signing")
    }

    /// The claims of a Clerk v2 session token for `user`, with `org` = (Clerk id, role key
    /// without `org:`, slug) active, issued now, valid for `lifetime` seconds.
    pub fn claims(
        &self,
        user: &str,
        org: Option<(&str, &str, Option<&str>)>,
        lifetime: i64,
    ) -> Value {
        let now = unix_now();
        let mut claims = json!({
            "azp": self.issuer, "iss": self.issuer, "sub": user,
            "sid": format!("sess_{}", Uuid::new_v4().simple()),
            "iat": now, "nbf": now - 10, "exp": now + lifetime,
            "jti": Uuid::new_v4().simple().to_string(), "v": 2, "sts": "active",
        });
        if let Some((id, rol, slg)) = org {
            claims["o"] = json!({ "id": id, "rol": rol, "slg": slg });
        }
        claims
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Parses a JSON body: 400 `bad_request` with serde's reason when it does not fit.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn project_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("the project id is not a UUID"))
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::new(raw).map_err(ApiError::from)
}

/// `GET /health`.
pub fn health() -> Value {
    json!({ "status": "ok" })
}

/// `GET /api/me/organizations`: the switcher; works without an active organization.
pub async fn my_organizations(app: &App, session: &Session) -> Result<Value, ApiError> {
    let memberships = app.tenancy.pool().memberships(&session.user_id).await?;
    let list: Vec<Value> = memberships
        .iter()
        .map(|m| {
            json!({
                "org_id": m.org_id, "external_id": m.external_id, "name": m.name,
                "slug": m.slug, "role": m.role.as_str(),
                "active": Some(m.org_id) == session.org_id,
            })
        })
        .collect();
    Ok(json!({
        "user_id": session.user_id.as_str(),
        "active_org_id": session.org_id,
        "organizations": list,
    }))
}

#[derive(Deserialize)]
struct NewOrganization {
    name: String,
    slug: Option<String>,
}

/// `POST /api/organizations`: onboarding; the creator becomes the owner.
pub async fn create_organization(
    app: &App,
    session: &Session,
    body: &[u8],
) -> Result<Value, ApiError> {
    let NewOrganization { name, slug } = parse(body)?;
    let name = name.trim();
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
    let ctx = pool
        .create_organization(org, name, slug.as_deref(), &session.user_id)
        .await?;
    pool.with_rls(&ctx, async |tx| {
        sqlx::query("UPDATE organizations SET external_id = $1 WHERE id = $2")
            .bind(&external_id)
            .bind(org)
            .execute(tx)
            .await?;
        Ok::<_, Error>(())
    })
    .await?;
    Ok(json!({
        "org_id": org, "external_id": external_id, "name": name, "slug": slug, "role": "owner",
    }))
}

/// `GET /api/projects`. No `WHERE`: Row-Level Security keeps it to the organization.
pub async fn list_projects(app: &App, ctx: &OrgContext) -> Result<Value, ApiError> {
    let rows: Vec<(Uuid, String)> = app
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
    let list: Vec<Value> = rows
        .into_iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    Ok(Value::Array(list))
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

/// `POST /api/projects` `{"name"}`: into the context's organization, whatever else the body
/// says.
pub async fn create_project(app: &App, ctx: &OrgContext, body: &[u8]) -> Result<Value, ApiError> {
    let NewProject { name } = parse(body)?;
    let name = name.trim().to_owned();
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
    Ok(json!({ "id": id, "name": name }))
}

/// `GET /api/projects/{id}`: 404 for another organization's project (RLS hides it).
pub async fn get_project(app: &App, ctx: &OrgContext, id: &str) -> Result<Value, ApiError> {
    let id = project_id(id)?;
    let row: Option<(Uuid, String)> = app
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
    let (id, name) = row.ok_or_else(ApiError::not_found)?;
    Ok(json!({ "id": id, "name": name }))
}

/// `DELETE /api/projects/{id}` (admin).
pub async fn delete_project(
    app: &App,
    ctx: &RequireRole<Admin>,
    id: &str,
) -> Result<Value, ApiError> {
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
    Ok(json!({ "deleted": id }))
}

/// `GET /api/members`.
pub async fn list_members(app: &App, ctx: &OrgContext) -> Result<Value, ApiError> {
    let rows: Vec<(String, Role)> = app
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
    let list: Vec<Value> = rows
        .into_iter()
        .map(|(user, role)| json!({ "user_id": user, "role": role.as_str() }))
        .collect();
    Ok(Value::Array(list))
}

#[derive(Deserialize)]
struct NewMember {
    user_id: String,
    role: String,
}

/// `POST /api/members` `{"user_id", "role"}` (admin; owner to add an owner).
pub async fn add_member(
    app: &App,
    ctx: &RequireRole<Admin>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let NewMember {
        user_id: user,
        role,
    } = parse(body)?;
    let user = user_id(&user)?;
    let role: Role = role.parse().map_err(ApiError::from)?;
    app.tenancy.pool().add_member(ctx, &user, role).await?;
    Ok(json!({ "user_id": user.as_str(), "role": role.as_str() }))
}

/// `DELETE /api/members/{user_id}`: an admin removes a member (an owner removes an owner);
/// anyone may remove themselves (leave).
pub async fn remove_member(app: &App, ctx: &OrgContext, user: &str) -> Result<Value, ApiError> {
    let user = user_id(user)?;
    if &user != ctx.user_id() {
        ctx.require_role(Role::Admin)?;
    }
    let removed = app
        .tenancy
        .pool()
        .with_rls(ctx, async |tx| {
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
    Ok(json!({ "removed": user.as_str() }))
}

/// `POST /webhooks/clerk`: verify and sync. `header` reads a request header.
pub async fn clerk_webhook<'h>(
    app: &App,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let Some(sync) = &app.sync else {
        return Err(ApiError::misconfigured(
            "webhooks are off: set CLERK_WEBHOOK_SECRET (and SERVICE_DATABASE_URL with DATABASE_URL)",
        ));
    };
    match sync.handle(&WebhookHeaders::from_fn(header), body).await {
        Ok(outcome) => Ok(json!({ "outcome": format!("{outcome:?}") })),
        Err(e) => {
            // A bad delivery says why; a database failure stays in the server's logs.
            let (code, message) = match e.kind().http_status() {
                400 => ("invalid_webhook", e.to_string()),
                _ => ("internal", "internal error".to_owned()),
            };
            Err(ApiError::new(e.kind(), code, message))
        }
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    user_id: String,
    org_id: Option<String>,
}

/// `POST /dev/token` `{"user_id", "org_id"?}` (`--dev` only; 404 otherwise): a Clerk-v2-shaped
/// session token. Like Clerk, it makes an organization active only for a member, with the role
/// the membership holds; 403 `not_a_member` otherwise.
pub async fn dev_token(app: &App, body: &[u8]) -> Result<Value, ApiError> {
    let Some(dev) = &app.dev else {
        return Err(ApiError::not_found());
    };
    let TokenRequest {
        user_id: user,
        org_id,
    } = parse(body)?;
    let user = user_id(&user)?;
    let org = match org_id.as_deref().filter(|o| !o.is_empty()) {
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
            Some((external.to_owned(), role))
        }
    };
    let lifetime = 3600;
    let org_ref = org.as_ref().map(|(id, role)| (id.as_str(), *role, None));
    let token = dev.sign(&dev.claims(user.as_str(), org_ref, lifetime));
    Ok(json!({ "token": token, "expires_in": lifetime }))
}
