//! The throwaway cluster: finding the server binaries, `initdb`, the server process, and the
//! watchdog that stops it when the test process exits.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::HarnessError;

/// A running throwaway cluster (or the server behind `DATABASE_URL`). `Debug` shows no
/// credentials.
pub struct TestCluster {
    admin: PgConnectOptions,
    /// Loopback TCP address `(host, port)` when the harness started the server itself.
    tcp: Option<SocketAddr>,
    _server: Option<ServerProcess>,
}

struct ServerProcess {
    postgres: Mutex<Child>,
    /// Starts the server again on the same data directory and port (for `restart`).
    respawn: Box<dyn Fn() -> std::io::Result<Child> + Send + Sync>,
    data: PathBuf,
    dir: PathBuf,
    /// Holding the write end open keeps the watchdog waiting; when this process exits the pipe
    /// closes and the watchdog stops the server and removes the directory.
    _watchdog_stdin: Mutex<ChildStdin>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only dedicated clusters are ever dropped (the global one lives as long as the
        // process): stop the server now; the watchdog removes the directory at exit.
        if let Ok(child) = self.postgres.get_mut() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

impl TestCluster {
    /// The process-wide cluster, started on first use.
    ///
    /// # Errors
    /// [`HarnessError`] when no PostgreSQL binaries are found, `initdb` or the server fails, or
    /// `DATABASE_URL` cannot be reached.
    pub fn global() -> Result<&'static TestCluster, HarnessError> {
        CLUSTER
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| HarnessError::Start(e.clone()))
    }

    /// A cluster of its own (not the process-wide one), for a test that restarts the server
    /// ([`TestCluster::restart`]); stopped when dropped.
    ///
    /// # Errors
    /// As [`TestCluster::global`]; and [`HarnessError::Start`] with `DATABASE_URL` set (a
    /// server the harness did not start cannot be restarted by it).
    pub fn dedicated() -> Result<TestCluster, HarnessError> {
        Self::dedicated_with(&[])
    }

    /// [`TestCluster::dedicated`] with server settings of its own, each `name=value` as
    /// `postgres -c` takes it (e.g. `shared_preload_libraries=pg_stat_statements`, for a test of
    /// what a loaded extension shows).
    ///
    /// # Errors
    /// As [`TestCluster::dedicated`]; [`HarnessError::Start`] when the server does not start
    /// with them (an extension's library that is not installed).
    pub fn dedicated_with(settings: &[&str]) -> Result<TestCluster, HarnessError> {
        if std::env::var_os("DATABASE_URL").is_some() {
            return Err(HarnessError::Start(
                "a dedicated cluster needs the harness's own server (DATABASE_URL is set)".into(),
            ));
        }
        let bindir = find_bindir().ok_or(HarnessError::NoBinaries)?;
        let settings: Vec<String> = settings.iter().map(|s| (*s).to_owned()).collect();
        start_cluster(&bindir, &settings)
    }

    /// A cluster of its own started with extra server settings (`name=value`, each passed as
    /// `-c`), from the server binaries in `bindir`; stopped when dropped. For the Citus
    /// harness ([`super::CitusCluster`]), whose nodes need binaries it has checked.
    pub(super) fn dedicated_at(
        bindir: &Path,
        settings: &[String],
    ) -> Result<TestCluster, HarnessError> {
        start_cluster(bindir, settings)
    }

    /// Stops the server (fast shutdown: open transactions are aborted, sessions closed),
    /// keeps it down for `down_for`, and starts it again on the same port and data.
    ///
    /// # Errors
    /// [`HarnessError::Start`] when this cluster is not the harness's own, or the server does
    /// not come back.
    pub fn restart(&self, down_for: Duration) -> Result<(), HarnessError> {
        let server = self._server.as_ref().ok_or_else(|| {
            HarnessError::Start("the server behind DATABASE_URL cannot be restarted".into())
        })?;
        let mut child = server
            .postgres
            .lock()
            .map_err(|_| HarnessError::Start("the server handle is poisoned".into()))?;
        let fail =
            |what: &str, e: &dyn std::fmt::Display| HarnessError::Start(format!("{what}: {e}"));
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .map_err(|e| fail("stopping postgres", &e))?;
        child.wait().map_err(|e| fail("waiting for postgres", &e))?;
        std::thread::sleep(down_for);
        *child = (server.respawn)().map_err(|e| fail("starting postgres again", &e))?;
        wait_until_ready(&server.data, &server.dir)
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
        start_cluster(&bindir, &[])
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

pub(super) fn find_bindir() -> Option<PathBuf> {
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

// Over 80 lines on purpose: one linear start-up (initdb, configuration, server, watchdog) read
// top to bottom, each step's failure named where it happens; split, it would only hand its
// directory, user and ports around.
fn start_cluster(bindir: &Path, settings: &[String]) -> Result<TestCluster, HarnessError> {
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
    drop(log);
    let (bin, data_dir, sock_dir) = (bindir.join("postgres"), data.clone(), dir.clone());
    let extra: Vec<String> = settings
        .iter()
        .flat_map(|s| ["-c".to_owned(), s.clone()])
        .collect();
    let respawn = move || -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(sock_dir.join("server.log"))?;
        let mut c = Command::new(&bin);
        if let Some((uid, gid)) = as_user {
            c.uid(uid).gid(gid);
        }
        c.arg("-D")
            .arg(&data_dir)
            .arg("-k")
            .arg(&sock_dir)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    };
    let postgres = respawn().map_err(|e| fail("starting postgres", &e))?;

    // The watchdog outlives nothing: it waits for this process's end (its stdin closes), then
    // stops the server (SIGINT: fast shutdown) and removes the directory.
    // The server's pid is read from its pid file at that moment: a restarted server has a
    // new one.
    let script = format!(
        "read _ignored; pid=$(head -1 '{data}/postmaster.pid' 2>/dev/null); \
         if [ -n \"$pid\" ]; then kill -INT $pid 2>/dev/null; \
         for _ in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; \
         kill -KILL $pid 2>/dev/null; fi; rm -rf '{dir}'",
        data = data.display(),
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
            postgres: Mutex::new(postgres),
            respawn: Box::new(respawn),
            data,
            dir,
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
