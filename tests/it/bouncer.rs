//! The suites through a real PgBouncer (the distribution's, 1.18 here) in **transaction**
//! pooling mode, in front of the test cluster: isolation, leaks, trust attacks and the load
//! with a ledger. Without `pgbouncer` installed they print `SKIPPED <test>: <reason>` on
//! stderr (seen with `cargo test -- --nocapture`) and pass, unless `TENANCY_REQUIRE_PGBOUNCER`
//! is set (`.ci/run` sets it and installs PgBouncer), when they fail. Each bouncer is stopped
//! with its test, passed or failed (`support::process`), which the last tests here check.
//!
//! The configuration under test is the one `docs/scaling.md` gives for PgBouncer before 1.21
//! (no protocol-level prepared statements across transactions): `pool_mode = transaction`,
//! `server_reset_query = DISCARD ALL` with `server_reset_query_always = 1`, and sqlx's
//! statement cache off (`statement_cache_capacity(0)`).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pg_tenancy::testing::{TestCluster, TestDatabase, check_isolation};
use pg_tenancy::{Error, OrgId, Role, TenantPool, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{Org, seed_org};
use crate::support::process::{Mark, ProcessTree};
use crate::support::skip::{skip_or_fail, skipped};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// The process-wide bouncer the whole suite's pools go through when `TENANCY_VIA_PGBOUNCER`
/// is set (`common::world_with`); `None` otherwise.
pub(crate) fn shared() -> Option<&'static Bouncer> {
    static SHARED: std::sync::OnceLock<Option<Bouncer>> = std::sync::OnceLock::new();
    std::env::var_os("TENANCY_VIA_PGBOUNCER")?;
    SHARED
        .get_or_init(|| {
            assert!(
                installed(),
                "TENANCY_VIA_PGBOUNCER is set and {PGBOUNCER} is missing: apt-get install pgbouncer"
            );
            Some(Bouncer::launch())
        })
        .as_ref()
}

/// Whether to skip a test whose premise is a database session that outlives a transaction
/// (through a transaction pooler there is none: each transaction may get another server
/// connection, reset by `DISCARD ALL`). Says so when it skips; the test runs in full in the
/// direct pass of the suite.
pub(crate) fn skip_session_test(premise: &str) -> bool {
    let skip = std::env::var_os("TENANCY_VIA_PGBOUNCER").is_some();
    if skip {
        skipped(&format!(
            "through PgBouncer in transaction mode (TENANCY_VIA_PGBOUNCER) the test cannot \
             observe {premise}; it runs in full in the direct pass"
        ));
    }
    skip
}

pub(crate) struct Bouncer {
    addr: SocketAddr,
    dir: PathBuf,
    process: ProcessTree,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed() -> bool {
    Path::new(PGBOUNCER).exists()
}

/// The unprivileged user to run PgBouncer as when this process is root (it refuses root).
fn unprivileged() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
}

impl Bouncer {
    /// Starts PgBouncer in transaction mode in front of the test cluster, or `None` (the
    /// test skips, saying so) when it is not installed.
    pub(crate) fn start() -> Option<Bouncer> {
        if !installed() {
            skip_or_fail(
                "TENANCY_REQUIRE_PGBOUNCER",
                &format!("{PGBOUNCER} is not installed (apt-get install pgbouncer)"),
            );
            return None;
        }
        Some(Bouncer::launch())
    }

    /// Starts PgBouncer in front of the test cluster (its unix socket, where the cluster
    /// trusts local connections).
    fn launch() -> Bouncer {
        let cluster = TestCluster::global().unwrap();
        let admin = cluster.admin_options();
        let socket = admin
            .get_socket()
            .expect("the harness's cluster has a unix socket");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::Builder::new()
            .prefix("tenancy-pgbouncer-")
            .tempdir()
            .unwrap()
            .keep();
        let config = format!(
            "[databases]\n* = host={socket} port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 6\n\
             server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            socket = socket.display(),
            server_port = admin.get_port(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        std::fs::write(dir.join("userlist.txt"), "").unwrap();
        let owner = unprivileged();
        if let Some((uid, gid)) = owner {
            for p in [
                dir.clone(),
                dir.join("pgbouncer.ini"),
                dir.join("userlist.txt"),
            ] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut command = Command::new(PGBOUNCER);
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            command.uid(uid).gid(gid);
        }
        let process = ProcessTree::spawn(&mut command).expect("start pgbouncer");
        let bouncer = Bouncer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(bouncer.addr).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    /// Lets `db`'s roles in (PgBouncer's trust mode still wants the names in its auth file),
    /// and reloads.
    pub(crate) fn allow(&self, db: &TestDatabase) {
        use std::io::Write;
        static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = WRITING.lock().unwrap();
        let path = self.dir.join("userlist.txt");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        for options in [db.app_options(), db.owner_options(), db.service_options()] {
            writeln!(file, "\"{}\" \"\"", options.get_username()).unwrap();
        }
        drop(file);
        // SIGHUP: reload the configuration and the auth file.
        let status = Command::new("kill")
            .args(["-HUP", &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(300));
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What identifies this bouncer's processes, to check that none outlives it.
    fn mark(&self) -> Mark {
        self.process.mark()
    }
}

/// A pool through PgBouncer with sqlx's statement cache off.
async fn pool_through(options: PgConnectOptions, max: u32) -> TenantPool {
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect_with(options.statement_cache_capacity(0))
        .await
        .unwrap();
    TenantPool::new(pool).await.unwrap()
}

struct Through {
    bouncer: Bouncer,
    db: TestDatabase,
    a: Org,
    b: Org,
}

async fn setup() -> Option<(Through, TenantPool, TenantPool)> {
    let bouncer = Bouncer::start()?;
    let db = crate::common::database().await;
    bouncer.allow(&db);
    let app = pool_through(db.app_options_at(bouncer.addr()), 8).await;
    let owner = pool_through(db.owner_options_at(bouncer.addr()), 4).await;
    let a = seed_org(&app, "alpha").await;
    let b = seed_org(&app, "beta").await;
    Some((Through { bouncer, db, a, b }, app, owner))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_holds_through_pgbouncer_in_transaction_mode() {
    let Some((t, app, owner)) = setup().await else {
        return;
    };
    let projects = crate::audit::projects_under_test();
    for pool in [&app, &owner] {
        let result = check_isolation(
            pool,
            &t.a.ctx(Role::Owner),
            &t.b.ctx(Role::Owner),
            &projects,
        )
        .await;
        assert_eq!(result, Ok(()));
    }
    let _ = &t.db;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_context_survives_a_unit_through_pgbouncer() {
    let Some((t, app, _owner)) = setup().await else {
        return;
    };
    // Units that commit, fail and panic, many times, over 8 client and 6 server connections;
    // then every server connection the bouncer hands out is clean.
    for round in 0..20 {
        let ctx = if round % 2 == 0 { &t.a } else { &t.b }.ctx(Role::Member);
        app.with_rls(&ctx, async |tx| {
            sqlx::query("SELECT set_config('app.current_org_id', $1, false)")
                .bind(t.b.id.to_string())
                .execute(tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        let _ = app
            .with_rls(&ctx, async |tx| {
                sqlx::query("SELECT 1/0").execute(tx).await?;
                Ok::<_, Error>(())
            })
            .await;
    }
    for _ in 0..24 {
        let (setting, visible): (Option<String>, i64) = app
            .with_rls_read(&t.a.ctx(Role::Member), async |tx| {
                // Inside A's unit: the session-level value planted above is shadowed...
                let seen: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM projects WHERE organization_id <> $1")
                        .bind(t.a.id)
                        .fetch_one(&mut *tx)
                        .await?;
                Ok::<_, Error>((None, seen))
            })
            .await
            .unwrap();
        assert_eq!((setting, visible), (None, 0));
    }
    // ...and outside any unit, through the bouncer, nothing is visible.
    let row = sqlx::raw_sql("SELECT count(*) FROM projects")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let bare: i64 = sqlx::Row::try_get(&row, 0).unwrap();
    assert_eq!(bare, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_contexts_are_refused_through_pgbouncer() {
    let Some((t, app, _owner)) = setup().await else {
        return;
    };
    // A context naming an organization the user is not in, and a role above the membership.
    let forged =
        pg_tenancy::OrgContext::from_verified_session(t.b.id, t.a.member.clone(), Role::Member);
    assert!(matches!(app.begin(&forged).await, Err(Error::NotAMember)));
    let inflated =
        pg_tenancy::OrgContext::from_verified_session(t.a.id, t.a.member.clone(), Role::Owner);
    assert!(matches!(
        app.begin(&inflated).await,
        Err(Error::InsufficientRole { .. })
    ));
    // Positive control, and authorize (simple protocol) through the bouncer.
    let ctx = app.authorize(&t.a.member, t.a.id).await.unwrap();
    assert_eq!(ctx.role(), Role::Member);
    let stranger = UserId::new("user_stranger").unwrap();
    assert!(matches!(
        app.authorize(&stranger, t.a.id).await,
        Err(Error::NotAMember)
    ));
    let memberships = app.memberships(&t.a.owner).await.unwrap();
    assert_eq!(memberships.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_with_a_ledger_holds_through_pgbouncer() {
    let Some((t, app, _owner)) = setup().await else {
        return;
    };
    let mut orgs = vec![t.a.clone(), t.b.clone()];
    for slug in ["gamma", "delta"] {
        orgs.push(seed_org(&app, slug).await);
    }
    crate::load::mixed_load(&app, orgs, "through PgBouncer 1.18, transaction mode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_statement_cache_through_pgbouncer_fails_loudly_and_never_crosses() {
    let Some((t, app, _owner)) = setup().await else {
        return;
    };
    // The unsafe configuration: sqlx's statement cache on (its default) behind PgBouncer 1.18
    // in transaction mode. Cached statement names outlive the server connection they were
    // prepared on.
    let cached = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(t.db.app_options_at(t.bouncer.addr()))
        .await
        .unwrap();
    let cached = TenantPool::new(cached).await.unwrap();
    let mut failures = 0;
    for round in 0..10 {
        let org = if round % 2 == 0 { &t.a } else { &t.b };
        let result = cached
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_as::<_, (OrgId,)>("SELECT organization_id FROM projects")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await;
        match result {
            // Whatever runs, runs in its own unit: only its organization's rows.
            Ok(rows) => assert!(rows.iter().all(|(o,)| *o == org.id), "{rows:?}"),
            // The loud failure: the cached statement does not exist on this server connection.
            Err(e) => {
                assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("26000"), "{e}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "the unsafe configuration was not noticed");
    // The safe configuration on the same bouncer (positive control) never fails.
    for _ in 0..10 {
        let rows = app
            .with_rls_read(&t.a.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_as::<_, (OrgId,)>("SELECT organization_id FROM projects")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![(t.a.id,)]);
    }
}

#[test]
fn no_bouncer_process_outlives_its_test_passed_or_failed() {
    let Some(bouncer) = Bouncer::start() else {
        return;
    };
    // Positive control: while it runs, the scan finds the bouncer by its group and mark.
    let mark = bouncer.mark();
    let running = mark.survivors();
    assert!(running.iter().any(|p| p.contains(PGBOUNCER)), "{running:?}");
    drop(bouncer);
    assert_eq!(
        mark.survivors(),
        Vec::<String>::new(),
        "after a passing test"
    );

    // A failing test: its bouncer is stopped while the panic unwinds.
    let (sender, marks) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let bouncer = Bouncer::launch();
        sender.send(bouncer.mark()).unwrap();
        panic!("a forced failure while a bouncer runs");
    })
    .join();
    assert!(failed.is_err());
    let mark = marks.recv().unwrap();
    assert_eq!(
        mark.survivors(),
        Vec::<String>::new(),
        "after a failing test"
    );
}
