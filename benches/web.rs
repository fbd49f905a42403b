//! A request through the axum adapter, against the same request on plain sqlx.
//!
//! An axum app verifies a Clerk-shaped session token (RS256, `DevTokenIssuer`'s key) on every
//! request, over loopback HTTP with keep-alive, and answers from one point query by id:
//!
//! - `web_read_request`: `OrgContext` (from the token, no lookup), then `with_rls_read`;
//! - `web_write_request`: `OrgContext`, then `with_rls` (the same query, committed);
//! - `plain_read_tx`: the baseline, what the same app without pg-tenancy runs for it: the same
//!   route, the same token verification (`Session`), then a plain sqlx transaction as a role
//!   that bypasses RLS, filtered explicitly by the token's organization (`begin`, the query,
//!   dropped: 2 round trips, as sqlx's rollback is queued).
//!
//! Lines: `round_trips.web_write_request`, `round_trips.web_read_request` and
//! `round_trips.plain_read_tx` (counted at a proxy, inside the app: from the request's arrival
//! to its handler's return, the pool's release task being off the request's path);
//! `time.rtt1ms.<case>` and `ratio.rtt1ms.web_read_request_vs_plain_read_tx` (the database
//! behind a proxy adding 0.5 ms each way; medians of interleaved rounds, each timing a batch of
//! every case in a rotating order); `time.rtt1ms.bare_plain_read_tx`, the baseline's
//! transaction alone, without HTTP or token, for scale; and the same `loopback` lines without
//! the proxy (what the request costs in CPU, the database's and the app's).
//!
//! `TENANCY_BENCH_FAST=1`: fewer rounds.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn};
use axum::routing::get;
use pg_tenancy::testing::{DevTokenIssuer, TcpProxy, TestCluster, TestDatabase};
use pg_tenancy::web::{ApiError, Session, Tenancy};
use pg_tenancy::{Error, OrgContext, OrgId, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

const ORG: &str = "org_web_bench";
const Q_RLS: &str = "SELECT name FROM projects WHERE id = $1";
const Q_EXPLICIT: &str = "SELECT name FROM projects WHERE organization_id = $1 AND id = $2";
/// The tenant pool's round trips during the request (a header the app adds).
const TRIPS: &str = "x-round-trips";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    WebRead,
    WebWrite,
    PlainRead,
    BarePlainRead,
    BareReadUnit,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::WebRead => "web_read_request",
            Case::WebWrite => "web_write_request",
            Case::PlainRead => "plain_read_tx",
            Case::BarePlainRead => "bare_plain_read_tx",
            Case::BareReadUnit => "bare_read_unit",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Case::WebRead => "/read",
            Case::WebWrite => "/write",
            Case::PlainRead | Case::BarePlainRead | Case::BareReadUnit => "/plain",
        }
    }
}

/// The database: one organization of 100 projects, and a role that bypasses RLS (not a
/// superuser) with the application role's grants, for the baseline.
struct Fixture {
    db: TestDatabase,
    bypass: (String, String),
    project: Uuid,
}

async fn fixture() -> Fixture {
    let db = support::database().await;
    let pool = db.app_pool(1).await.unwrap();
    let org = OrgId::from_external_id(ORG);
    let ctx = pool
        .create_organization(org, "Web bench", None, &UserId::new("user_web").unwrap())
        .await
        .unwrap();
    let ids: Vec<Uuid> = pool
        .with_rls(&ctx, async |tx| {
            let mut ids = Vec::new();
            for p in 0..100 {
                ids.push(
                    sqlx::query_scalar(
                        "INSERT INTO projects (organization_id, name) VALUES ($1, $2) RETURNING id",
                    )
                    .bind(org)
                    .bind(format!("project {p}"))
                    .fetch_one(&mut *tx)
                    .await?,
                );
            }
            Ok::<_, Error>(ids)
        })
        .await
        .unwrap();
    let admin = TestCluster::global()
        .unwrap()
        .admin_options()
        .database(db.name());
    let mut admin = PgConnection::connect_with(&admin).await.unwrap();
    let name = format!("{}_web_bypass", db.name());
    let password = Uuid::new_v4().simple().to_string();
    // The name is generated from letters, digits and '_'; the password is hex.
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN BYPASSRLS PASSWORD '{password}'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}; \
             ANALYZE"
        )))
        .await
        .unwrap();
    admin.close().await.unwrap();
    Fixture {
        db,
        bypass: (name, password),
        project: ids[42],
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    tenancy: Tenancy,
    bypass: PgPool,
}

impl axum::extract::FromRef<AppState> for Tenancy {
    fn from_ref(state: &AppState) -> Tenancy {
        state.tenancy.clone()
    }
}

async fn point(tx: &mut PgConnection, id: Uuid) -> Result<String, Error> {
    Ok(sqlx::query_scalar(Q_RLS).bind(id).fetch_one(tx).await?)
}

async fn read(
    State(state): State<AppState>,
    ctx: OrgContext,
    Path(id): Path<Uuid>,
) -> Result<String, ApiError> {
    Ok(state
        .tenancy
        .pool()
        .with_rls_read(&ctx, async |tx| point(tx, id).await)
        .await?)
}

async fn write(
    State(state): State<AppState>,
    ctx: OrgContext,
    Path(id): Path<Uuid>,
) -> Result<String, ApiError> {
    Ok(state
        .tenancy
        .pool()
        .with_rls(&ctx, async |tx| point(tx, id).await)
        .await?)
}

/// The baseline's transaction: `begin`, the explicitly filtered query, dropped.
async fn plain_read_tx(pool: &PgPool, org: OrgId, id: Uuid) -> String {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query_scalar(Q_EXPLICIT)
        .bind(org)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

async fn plain(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> Result<String, ApiError> {
    // The organization from the verified token, as the adapters take it.
    let org = session
        .org_id
        .ok_or_else(ApiError::no_active_organization)?;
    Ok(plain_read_tx(&state.bypass, org, id).await)
}

async fn pool(options: PgConnectOptions, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(max)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap()
}

/// Serves the app with its pools at `db_addr` (`max` connections each); its base URL, and the
/// baseline's pool for the bare transaction.
async fn serve(
    f: &Fixture,
    issuer: &DevTokenIssuer,
    db_addr: SocketAddr,
    max: u32,
    counter: Option<Arc<TcpProxy>>,
) -> (String, PgPool, Tenancy) {
    let tenant = pg_tenancy::TenantPool::new(pool(f.db.app_options_at(db_addr), max).await)
        .await
        .unwrap();
    let bypass = pool(
        f.db.app_options_at(db_addr)
            .username(&f.bypass.0)
            .password(&f.bypass.1),
        max,
    )
    .await;
    let state = AppState {
        tenancy: Tenancy::new(tenant, issuer.verifier()),
        bypass: bypass.clone(),
    };
    let mut router = Router::new()
        .route("/read/{id}", get(read))
        .route("/write/{id}", get(write))
        .route("/plain/{id}", get(plain));
    if let Some(proxy) = counter {
        router = router.layer(from_fn(move |request: Request, next: Next| {
            let proxy = proxy.clone();
            async move {
                let before = proxy.stats().round_trips();
                let mut response = next.run(request).await;
                let trips = proxy.stats().round_trips() - before;
                response.headers_mut().insert(TRIPS, trips.into());
                response
            }
        }));
    }
    let tenancy = state.tenancy.clone();
    let router = router.with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, bypass, tenancy)
}

struct Client {
    http: reqwest::Client,
    /// The app's state, for the bare unit.
    tenancy: Tenancy,
    base: String,
    token: String,
    project: Uuid,
}

impl Client {
    async fn request(&self, case: Case) -> reqwest::Response {
        let response = self
            .http
            .get(format!("{}{}/{}", self.base, case.path(), self.project))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}: {}",
            case.name(),
            response.status()
        );
        response
    }
}

/// Round trips per request, through a proxy without delay, with pools of one connection: a
/// warm-up request, then five that must agree.
async fn round_trips(f: &Fixture, issuer: &DevTokenIssuer, token: &str, server: SocketAddr) {
    let proxy = Arc::new(TcpProxy::start(server, Duration::ZERO).unwrap());
    let (base, _, tenancy) = serve(f, issuer, proxy.addr(), 1, Some(proxy.clone())).await;
    let client = Client {
        http: reqwest::Client::new(),
        tenancy,
        base,
        token: token.to_owned(),
        project: f.project,
    };
    for case in [Case::WebWrite, Case::WebRead, Case::PlainRead] {
        client.request(case).await.text().await.unwrap();
        let mut counts = Vec::new();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(50)).await; // the previous release is done
            let response = client.request(case).await;
            counts.push(
                response.headers()[TRIPS]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
            response.text().await.unwrap();
        }
        counts.dedup();
        assert_eq!(
            counts.len(),
            1,
            "{}: unstable round trips {counts:?}",
            case.name()
        );
        support::report(&format!("round_trips.{}", case.name()), counts[0]);
    }
}

/// Latency, pools of 4, interleaved rounds: `label` `rtt1ms` with the database 1 ms away
/// (round trip) through a proxy, `loopback` without one.
async fn latency(
    f: &Fixture,
    issuer: &DevTokenIssuer,
    token: &str,
    server: SocketAddr,
    label: &str,
) {
    let proxy = TcpProxy::start(server, Duration::from_micros(500)).unwrap();
    let addr = if label == "rtt1ms" {
        proxy.addr()
    } else {
        server
    };
    let (base, bypass, tenancy) = serve(f, issuer, addr, 4, None).await;
    let client = Client {
        http: reqwest::Client::new(),
        tenancy: tenancy.clone(),
        base,
        token: token.to_owned(),
        project: f.project,
    };
    let cases = [
        Case::WebRead,
        Case::PlainRead,
        Case::WebWrite,
        Case::BarePlainRead,
        Case::BareReadUnit,
    ];
    let ctx = tenancy
        .org_context(&tenancy.session(Some(token)).await.unwrap())
        .await
        .unwrap();
    for case in cases {
        for _ in 0..20 {
            run(&client, &bypass, &ctx, case).await; // warm-up: connections, statements
        }
    }
    let (rounds, batch) = if support::fast() { (5, 10) } else { (41, 20) };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let t = Instant::now();
            for _ in 0..batch {
                run(&client, &bypass, &ctx, cases[i]).await;
            }
            samples[i].push(t.elapsed().as_secs_f64() / batch as f64);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| support::median_of(s)).collect();
    for (case, median) in cases.iter().zip(&medians) {
        support::report_time(&format!("time.{label}.{}", case.name()), *median);
    }
    support::report_ratio(
        &format!("ratio.{label}.web_read_request_vs_plain_read_tx"),
        medians[0] / medians[1],
    );
}

async fn run(client: &Client, bypass: &PgPool, ctx: &OrgContext, case: Case) {
    if case == Case::BarePlainRead {
        std::hint::black_box(plain_read_tx(bypass, ctx.org_id(), client.project).await);
    } else if case == Case::BareReadUnit {
        let tenancy = &client.tenancy;
        let name = tenancy
            .pool()
            .with_rls_read(ctx, async |tx| point(tx, client.project).await)
            .await
            .unwrap();
        std::hint::black_box(name);
    } else {
        std::hint::black_box(client.request(case).await.text().await.unwrap());
    }
}

fn main() {
    // One thread: the client, the app and the pools' release tasks take turns, alike for
    // every case (and the round trips are counted as in `tests/web/requests.rs`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = TestCluster::global()
        .expect("throwaway PostgreSQL")
        .tcp_address()
        .expect("TCP listener");
    rt.block_on(async {
        let f = fixture().await;
        let issuer = DevTokenIssuer::generate("https://clerk.bench.test").unwrap();
        // An hour's token: the run outlives Clerk's 60 s.
        let token = issuer.sign(&issuer.claims("user_web", Some((ORG, "admin", None)), 3600));
        round_trips(&f, &issuer, &token, server).await;
        latency(&f, &issuer, &token, server, "rtt1ms").await;
        latency(&f, &issuer, &token, server, "loopback").await;
    });
}
