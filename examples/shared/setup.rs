//! Start-up, the same for both apps: options, the session verifier (Clerk's, or in `--dev` a
//! local issuer whose JWKS the app serves), the database (yours, or a throwaway one), and the
//! webhook sync. Nothing here knows HTTP.

use std::error::Error as StdError;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use pg_tenancy::clerk::{ClerkSync, Retention, SessionTokenVerifier};
use pg_tenancy::testing::{DevTokenIssuer, TestDatabase};
use pg_tenancy::web::Tenancy;
use pg_tenancy::webhook::Verifier;
use pg_tenancy::{ServicePool, TenantPool};

use super::App;

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
        let dev = DevTokenIssuer::generate(&base_url)?;
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
            // The app's own tables, from its own migrations, granted to both roles.
            db.migrate(&sqlx::migrate!("./examples/migrations")).await?;
            db.grant_app(&["projects", "invoices"]).await?;
            db.grant_service(&["projects", "invoices"]).await?;
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
    if let Some(service) = &service {
        tenancy = tenancy.with_token_memberships(service.clone());
        if let Some(secret) = secret {
            sync = Some(ClerkSync::new(service.clone(), Verifier::new(&secret)?));
        }
    }
    if let Some(sync) = &sync {
        tokio::spawn(prune_hourly(sync.clone()));
    }
    if options.announce {
        announce(&base_url, dev.is_some(), sync.is_some());
    }
    Ok(Started {
        app: Arc::new(App {
            tenancy,
            sync,
            service,
            dev,
            base_url,
        }),
        listener,
        database,
    })
}

/// The webhook bookkeeping (delivery records, membership tombstones, the provider's
/// membership removals) only matters for a while (`docs/web.md`, "Bookkeeping lifetimes"):
/// prune it at start and every hour after, for as long as the app runs.
async fn prune_hourly(sync: ClerkSync) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        if let Err(e) = sync.prune(&Retention::default()).await {
            eprintln!("pruning the webhook bookkeeping failed (next try in an hour): {e}");
        }
    }
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
