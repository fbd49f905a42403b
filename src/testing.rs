//! A throwaway PostgreSQL for tests and examples (feature `testing`).
//!
//! [`TestDatabase::create`] gives each test a fresh database, migrated, with three login roles:
//! the database **owner** (ran the migrations; subject to the policies only because every table
//! is `FORCE ROW LEVEL SECURITY`), an **application** role (neither superuser nor `BYPASSRLS`),
//! and a **service** role (a member of the cluster-wide NOLOGIN role `tenancy_service`, which
//! the harness creates when missing). `TEMP` is revoked from `PUBLIC`, as in production. Test
//! your own isolation through the owner and the application role.
//!
//! Where the server comes from:
//! - `DATABASE_URL`, if set: a role that may create databases and roles (`CREATEDB`,
//!   `CREATEROLE`). The suite's BYPASSRLS-refusal test and the benches' baselines also create
//!   a `BYPASSRLS` role, which needs a superuser. Databases and roles created there are left
//!   in place (their names start with `tenancy_<pid>_`).
//! - Otherwise one cluster per process, started on first use: the server binaries are found
//!   through `TENANCY_PG_BINDIR`, `PATH`, `pg_config --bindir`, or `/usr/lib/postgresql/*/bin`;
//!   `initdb` runs in a temporary directory, the server listens on a unix socket in it (and on a
//!   free loopback port, password-protected), and when the process runs as root the server runs
//!   as the unprivileged `postgres` user (or `TENANCY_PG_USER`). A watchdog process stops the
//!   server and deletes the directory when the test process exits, however it exits.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};

use crate::migrations::{APP_TABLES, MIGRATOR, SERVICE_TABLES};
use crate::{ContextKey, ServicePool, TenantPool};

/// Why a test database could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found: install them \
         (Debian/Ubuntu: `apt-get install postgresql`), set TENANCY_PG_BINDIR to their directory, \
         or set DATABASE_URL to a server whose role may create databases and roles"
    )]
    NoBinaries,
    /// Starting the throwaway cluster failed.
    #[error("could not start the throwaway PostgreSQL: {0}")]
    Start(String),
    /// A database statement failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `tenancy` refused the pool.
    #[error(transparent)]
    Tenancy(#[from] crate::Error),
}

/// A running throwaway cluster (or the server behind `DATABASE_URL`). `Debug` shows no
/// credentials.
pub struct TestCluster {
    admin: PgConnectOptions,
    /// Loopback TCP address `(host, port)` when the harness started the server itself.
    tcp: Option<SocketAddr>,
    _server: Option<ServerProcess>,
}

struct ServerProcess {
    _postgres: Child,
    /// Holding the write end open keeps the watchdog waiting; when this process exits the pipe
    /// closes and the watchdog stops the server and removes the directory.
    _watchdog_stdin: Mutex<ChildStdin>,
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

impl TestCluster {
    /// The process-wide cluster, started on first use.
    pub fn global() -> Result<&'static TestCluster, HarnessError> {
        CLUSTER
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| HarnessError::Start(e.clone()))
    }

    fn start() -> Result<TestCluster, HarnessError> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin: PgConnectOptions = url
                .parse()
                .map_err(|e| HarnessError::Start(format!("DATABASE_URL: {e}")))?;
            return Ok(TestCluster {
                admin,
                tcp: None,
                _server: None,
            });
        }
        let bindir = find_bindir().ok_or(HarnessError::NoBinaries)?;
        start_cluster(&bindir)
    }

    /// Options for the cluster's superuser (administration only: never for isolation tests).
    pub fn admin_options(&self) -> PgConnectOptions {
        self.admin.clone()
    }

    /// The server's TCP address: the harness's loopback listener, or the host and port of
    /// `DATABASE_URL` when that names a TCP host (`None` for a unix socket).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.tcp.or_else(|| {
            let host = self.admin.get_host();
            if host.starts_with('/') {
                return None;
            }
            (host, self.admin.get_port()).to_socket_addrs().ok()?.next()
        })
    }
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

/// A fresh, migrated database with an owner role, an application role and a service role.
/// `Debug` shows no credentials.
#[derive(Clone)]
pub struct TestDatabase {
    name: String,
    /// The cluster's connect options, pointed at this database.
    base: PgConnectOptions,
    owner: Login,
    app: Login,
    service: Login,
}

/// A login role and its password.
#[derive(Clone)]
struct Login {
    role: String,
    password: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    /// Creates a database named uniquely for this process, applies the migrations as its
    /// (non-superuser) owner, and grants as the README's set-up does: the application role DML
    /// on [`APP_TABLES`], the service role DML on [`SERVICE_TABLES`], and `TEMP` to nobody but
    /// the owner.
    pub async fn create() -> Result<TestDatabase, HarnessError> {
        let db = Self::create_empty().await?;
        let mut conn = PgConnection::connect_with(&db.owner_options()).await?;
        MIGRATOR.run(&mut conn).await?;
        let (app_role, service_role, name) = (&db.app.role, &db.service.role, &db.name);
        // Names are generated by `create_empty` from letters, digits and '_'.
        for sql in [
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {app_role}",
                APP_TABLES.join(", ")
            ),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {service_role}",
                SERVICE_TABLES.join(", ")
            ),
            format!("REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC"),
        ] {
            conn.execute(AssertSqlSafe(sql)).await?;
        }
        conn.close().await?;
        Ok(db)
    }

    /// Like [`TestDatabase::create`], without migrations or grants: an empty database owned by
    /// a non-superuser role.
    pub async fn create_empty() -> Result<TestDatabase, HarnessError> {
        let cluster = TestCluster::global()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("tenancy_{}_{}", std::process::id(), n);
        let owner_role = format!("{name}_owner");
        let app_role = format!("{name}_app");
        let owner_pw = uuid::Uuid::new_v4().simple().to_string();
        let app_pw = uuid::Uuid::new_v4().simple().to_string();
        let service_role = format!("{name}_service");
        let service_pw = uuid::Uuid::new_v4().simple().to_string();

        let mut admin = PgConnection::connect_with(&cluster.admin).await?;
        ensure_service_group(&mut admin).await?;
        // Names and passwords are generated above from digits, letters and '_': safe literals.
        for sql in [
            format!("CREATE ROLE {owner_role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{owner_pw}'"),
            format!("CREATE ROLE {app_role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{app_pw}'"),
            format!(
                "CREATE ROLE {service_role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{service_pw}' \
                 IN ROLE tenancy_service"
            ),
            // A non-superuser with CREATEROLE must be a member of a role to make it an owner.
            format!("GRANT {owner_role} TO CURRENT_USER"),
            format!("CREATE DATABASE {name} OWNER {owner_role}"),
        ] {
            admin.execute(AssertSqlSafe(sql)).await?;
        }
        admin.close().await?;

        Ok(TestDatabase {
            base: cluster.admin.clone().database(&name),
            name,
            owner: Login {
                role: owner_role,
                password: owner_pw,
            },
            app: Login {
                role: app_role,
                password: app_pw,
            },
            service: Login {
                role: service_role,
                password: service_pw,
            },
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connect options for the owner role (owns the tables; not superuser, not `BYPASSRLS`).
    pub fn owner_options(&self) -> PgConnectOptions {
        self.login(&self.owner, self.base.clone())
    }

    /// Connect options for the application role (neither owner, superuser nor `BYPASSRLS`).
    pub fn app_options(&self) -> PgConnectOptions {
        self.login(&self.app, self.base.clone())
    }

    /// Connect options for the service role (a member of `tenancy_service`; neither owner,
    /// superuser nor `BYPASSRLS`).
    pub fn service_options(&self) -> PgConnectOptions {
        self.login(&self.service, self.base.clone())
    }

    /// A connection URL for the application role, password included: for handing to another
    /// process (a program under test). Never print it.
    pub fn app_url(&self) -> String {
        let (role, password, name) = (&self.app.role, &self.app.password, &self.name);
        let host = self.base.get_host();
        let port = self.base.get_port();
        // Role, password and database name are generated from letters, digits and '_'.
        if host.starts_with('/') {
            format!("postgres://{role}:{password}@localhost/{name}?host={host}&port={port}")
        } else {
            format!("postgres://{role}:{password}@{host}:{port}/{name}")
        }
    }

    /// Options for the application role over TCP at `addr` (the cluster's
    /// [`tcp_address`](TestCluster::tcp_address), or a proxy in front of it).
    pub fn app_options_at(&self, addr: SocketAddr) -> PgConnectOptions {
        self.login(&self.app, tcp(addr))
    }

    /// Options for the owner role over TCP at `addr`.
    pub fn owner_options_at(&self, addr: SocketAddr) -> PgConnectOptions {
        self.login(&self.owner, tcp(addr))
    }

    fn login(&self, login: &Login, options: PgConnectOptions) -> PgConnectOptions {
        options
            .database(&self.name)
            .username(&login.role)
            .password(&login.password)
    }

    /// A [`TenantPool`] of at most `max` connections as the application role.
    pub async fn app_pool(&self, max: u32) -> Result<TenantPool, HarnessError> {
        Ok(TenantPool::new(pool(self.app_options(), max).await?).await?)
    }

    /// Puts the database in hardened mode with `key`, as a production set-up does: the owner
    /// runs [`ContextKey::enable_sql`], and a superuser turns `track_activities` off for the
    /// application role. Then returns a hardened [`TenantPool`] of at most `max` connections.
    pub async fn harden(&self, key: &ContextKey, max: u32) -> Result<TenantPool, HarnessError> {
        let mut owner = PgConnection::connect_with(&self.owner_options()).await?;
        owner.execute(AssertSqlSafe(key.enable_sql())).await?;
        owner.close().await?;
        let mut admin = PgConnection::connect_with(&TestCluster::global()?.admin).await?;
        // The role name is generated by `create_empty` from letters, digits and '_'.
        admin
            .execute(AssertSqlSafe(format!(
                "ALTER ROLE {} SET track_activities = off",
                self.app.role
            )))
            .await?;
        admin.close().await?;
        Ok(TenantPool::hardened(pool(self.app_options(), max).await?, key.clone()).await?)
    }

    /// A [`ServicePool`] of at most `max` connections as the service role.
    pub async fn service_pool(&self, max: u32) -> Result<ServicePool, HarnessError> {
        Ok(ServicePool::new(pool(self.service_options(), max).await?).await?)
    }

    /// A [`TenantPool`] of at most `max` connections as the owner role.
    pub async fn owner_pool(&self, max: u32) -> Result<TenantPool, HarnessError> {
        Ok(TenantPool::new(pool(self.owner_options(), max).await?).await?)
    }
}

/// Creates the cluster-wide NOLOGIN role `tenancy_service` unless it exists. Concurrent test
/// processes may race: a duplicate is fine.
async fn ensure_service_group(admin: &mut PgConnection) -> Result<(), HarnessError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_service')",
    )
    .fetch_one(&mut *admin)
    .await?;
    if !exists {
        match admin
            .execute("CREATE ROLE tenancy_service NOLOGIN NOSUPERUSER NOBYPASSRLS")
            .await
        {
            Ok(_) => {}
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42710") | Some("23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Plain TCP to `addr`, without TLS and without reading `~/.pgpass`.
fn tcp(addr: SocketAddr) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

async fn pool(options: PgConnectOptions, max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
        .connect_with(options)
        .await
}

fn find_bindir() -> Option<PathBuf> {
    find_bindir_with(
        |name| std::env::var_os(name),
        Path::new("/usr/lib/postgresql"),
    )
}

/// [`find_bindir`] with the environment and the Debian directory passed in (testable).
fn find_bindir_with(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    debian_root: &Path,
) -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = env("TENANCY_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return has_server(&dir).then_some(dir);
    }
    let path_dirs: Vec<PathBuf> = env("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // pg_config, found on the same PATH (Debian keeps the server binaries off PATH).
    let from_pg_config = path_dirs
        .iter()
        .map(|d| d.join("pg_config"))
        .find(|p| p.is_file())
        .and_then(|pg_config| Command::new(pg_config).arg("--bindir").output().ok())
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    // Highest major version first.
    debian.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    path_dirs
        .into_iter()
        .chain(from_pg_config)
        .chain(debian)
        .find(|d| has_server(d))
        .map(|d| d.canonicalize().unwrap_or(d))
}

/// The uid/gid to run the server as when this process is root.
fn server_user() -> Result<Option<(u32, u32)>, HarnessError> {
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| HarnessError::Start(format!("reading /proc/self: {e}")))?
        .uid();
    if me != 0 {
        return Ok(None);
    }
    let wanted = std::env::var("TENANCY_PG_USER").unwrap_or_else(|_| "postgres".into());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == wanted)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            HarnessError::Start(format!(
                "running as root, and initdb refuses root: create the user {wanted:?} \
                 (or set TENANCY_PG_USER to an unprivileged user)"
            ))
        })
}

fn start_cluster(bindir: &Path) -> Result<TestCluster, HarnessError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| HarnessError::Start(format!("{what}: {e}"));
    let as_user = server_user()?;
    let dir = tempfile::Builder::new()
        .prefix("tenancy-pg-")
        .tempdir()
        .map_err(|e| fail("creating a temporary directory", &e))?
        .keep();
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    let superuser_pw = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&pwfile, &superuser_pw).map_err(|e| fail("writing the password file", &e))?;
    if let Some((uid, gid)) = as_user {
        for p in [&dir, &pwfile] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| fail("chown", &e))?;
        }
    }
    let command = |program: &str| {
        let mut c = Command::new(bindir.join(program));
        if let Some((uid, gid)) = as_user {
            c.uid(uid).gid(gid);
        }
        c
    };

    let out = command("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .map_err(|e| fail("running initdb", &e))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(HarnessError::Start(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| fail("finding a free port", &e))?
        .port();
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| fail("log file", &e))?;
    if let Some((uid, gid)) = as_user {
        let _ = std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid));
    }
    let postgres = command("postgres")
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&dir)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| fail("log file", &e))?)
        .stderr(log)
        .spawn()
        .map_err(|e| fail("starting postgres", &e))?;

    // The watchdog outlives nothing: it waits for this process's end (its stdin closes), then
    // stops the server (SIGINT: fast shutdown) and removes the directory.
    let script = format!(
        "read _ignored; kill -INT {pid} 2>/dev/null; \
         for _ in $(seq 1 100); do kill -0 {pid} 2>/dev/null || break; sleep 0.1; done; \
         kill -KILL {pid} 2>/dev/null; rm -rf '{dir}'",
        pid = postgres.id(),
        dir = dir.display()
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| fail("starting the cleanup watchdog", &e))?;
    let stdin = watchdog.stdin.take().expect("piped stdin");

    wait_until_ready(&data, &dir)?;
    let admin = PgConnectOptions::new()
        .socket(&dir)
        .port(port)
        .username("postgres")
        .password(&superuser_pw)
        .database("postgres");
    Ok(TestCluster {
        admin,
        tcp: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        _server: Some(ServerProcess {
            _postgres: postgres,
            _watchdog_stdin: Mutex::new(stdin),
        }),
    })
}

/// Waits until postmaster.pid reports "ready" (PostgreSQL 10+ writes the status line).
fn wait_until_ready(data: &Path, dir: &Path) -> Result<(), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        if pidfile.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(HarnessError::Start(format!(
                "server not ready after 60 s:\n{log}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub use proxy::{ProxyStats, TcpProxy};

mod proxy {
    //! A loopback TCP proxy that counts round trips and can add latency.

    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Counters shared by every connection through a [`TcpProxy`].
    #[derive(Debug, Default)]
    pub struct ProxyStats {
        round_trips: AtomicU64,
        connections: AtomicU64,
    }

    impl ProxyStats {
        /// Client-to-server bursts that followed server data (or opened a connection): each is
        /// one round trip the client waited for. Counted exactly, from the byte streams.
        pub fn round_trips(&self) -> u64 {
            self.round_trips.load(Ordering::SeqCst)
        }

        /// Connections accepted so far.
        pub fn connections(&self) -> u64 {
            self.connections.load(Ordering::SeqCst)
        }
    }

    /// A proxy on `127.0.0.1` in front of `upstream`, on plain OS threads (so the injected
    /// delay is as precise as `thread::sleep`, not a 1 ms timer wheel). Each chunk is delayed
    /// by `one_way` in each direction, in order. Runs until the process ends.
    #[derive(Debug)]
    pub struct TcpProxy {
        addr: SocketAddr,
        stats: Arc<ProxyStats>,
    }

    impl TcpProxy {
        /// Starts a proxy to `upstream` with `one_way` latency added in each direction.
        pub fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<TcpProxy> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let stats = Arc::new(ProxyStats::default());
            let shared = stats.clone();
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    // true while the last bytes seen went server -> client
                    let turn = Arc::new(AtomicBool::new(true));
                    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                        pump(client, s2, one_way, turn.clone(), Some(shared.clone()));
                        pump(server, c2, one_way, turn, None);
                    }
                }
            });
            Ok(TcpProxy { addr, stats })
        }

        /// The proxy's address.
        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// The shared counters.
        pub fn stats(&self) -> &ProxyStats {
            &self.stats
        }
    }

    /// Copies `from` -> `to` through a delay line. With `count`, it is the client->server
    /// direction and counts a round trip whenever it reads after server data.
    fn pump(
        mut from: TcpStream,
        mut to: TcpStream,
        delay: Duration,
        turn: Arc<AtomicBool>,
        count: Option<Arc<ProxyStats>>,
    ) {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        match &count {
                            Some(stats) => {
                                if turn.swap(false, Ordering::SeqCst) {
                                    stats.round_trips.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            None => turn.store(true, Ordering::SeqCst),
                        }
                        if tx
                            .send((Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        std::thread::spawn(move || {
            while let Ok((due, bytes)) = rx.recv() {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if to.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_by_override_path_or_debian_layout() {
        let root = tempfile::tempdir().unwrap();
        let make = |dir: &Path| {
            std::fs::create_dir_all(dir).unwrap();
            for b in ["initdb", "postgres"] {
                std::fs::write(dir.join(b), "").unwrap();
            }
        };
        let debian = root.path().join("debian");
        make(&debian.join("13/bin"));
        make(&debian.join("16/bin"));
        let on_path = root.path().join("path_bin");
        make(&on_path);
        let nothing = |_: &str| None;
        // No PATH entry and no pg_config in this fake environment: the highest Debian version.
        let found = find_bindir_with(nothing, &debian).unwrap();
        assert!(found.ends_with("16/bin"), "{found:?}");
        // PATH wins over the Debian layout.
        let path_env = |n: &str| (n == "PATH").then(|| on_path.clone().into_os_string());
        assert_eq!(
            find_bindir_with(path_env, &debian).unwrap(),
            on_path.canonicalize().unwrap()
        );
        // The override wins, and an override without binaries finds nothing (no silent fallback).
        let empty = root.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let override_env =
            |n: &str| (n == "TENANCY_PG_BINDIR").then(|| empty.clone().into_os_string());
        assert_eq!(find_bindir_with(override_env, &debian), None);
        // Nothing anywhere: None, which the harness reports with install instructions.
        assert_eq!(
            find_bindir_with(nothing, &root.path().join("missing")),
            None
        );
        let message = HarnessError::NoBinaries.to_string();
        assert!(
            message.contains("apt-get install postgresql") && message.contains("TENANCY_PG_BINDIR")
        );
        assert!(message.contains("DATABASE_URL"));
    }
}
