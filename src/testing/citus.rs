//! A throwaway Citus cluster: a coordinator and two workers on this machine, each a
//! [`TestCluster`] of its own (its own data directory, unix socket and port, the server run as
//! the unprivileged user when this process is root, stopped when dropped and removed by the
//! watchdog however the process ends), started with `shared_preload_libraries = 'citus'`.

use std::path::{Path, PathBuf};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use super::cluster::find_bindir;
use super::{HarnessError, TestCluster, TestDatabase};

/// A coordinator and two workers. `Debug` shows no credentials.
#[derive(Debug)]
pub struct CitusCluster {
    coordinator: TestCluster,
    workers: Vec<TestCluster>,
    /// One database set-up at a time: concurrent role and node-list changes make Citus fail
    /// them ("failure on connection marked as essential").
    setting_up: tokio::sync::Mutex<()>,
}

/// The server binaries of a PostgreSQL that has Citus installed (`citus.so` in its library
/// directory): the harness's usual choice first, then every `/usr/lib/postgresql/*/bin`.
pub fn citus_bindir() -> Option<PathBuf> {
    let has_citus = |bin: &Path| {
        bin.parent()
            .is_some_and(|v| v.join("lib").join("citus.so").is_file())
    };
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    find_bindir()
        .into_iter()
        .chain(debian)
        .find(|bin| has_citus(bin) && bin.join("postgres").is_file())
}

impl CitusCluster {
    /// Starts a coordinator and two workers with Citus, creates the `citus` extension in each
    /// node's `postgres` database (so that roles created on the coordinator reach the workers),
    /// and adds the workers to the coordinator. Nodes address each other by unix socket.
    ///
    /// # Errors
    /// [`HarnessError::NoCitus`] when no PostgreSQL with `citus.so` is installed;
    /// [`HarnessError::Start`] when `DATABASE_URL` is set (the harness needs servers of its
    /// own) or a node does not start.
    pub async fn start() -> Result<CitusCluster, HarnessError> {
        if std::env::var_os("DATABASE_URL").is_some() {
            return Err(HarnessError::Start(
                "a Citus cluster needs the harness's own servers (DATABASE_URL is set)".into(),
            ));
        }
        let bindir = citus_bindir().ok_or(HarnessError::NoCitus)?;
        let settings = [
            "shared_preload_libraries=citus".to_string(),
            // A transaction writing on several workers commits in two phases.
            "max_prepared_transactions=100".to_string(),
        ];
        let coordinator = TestCluster::dedicated_at(&bindir, &settings)?;
        let workers = (0..2)
            .map(|_| TestCluster::dedicated_at(&bindir, &settings))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = CitusCluster {
            coordinator,
            workers,
            setting_up: tokio::sync::Mutex::new(()),
        };
        cluster.install_citus("postgres").await?;
        Ok(cluster)
    }

    /// The coordinator, where applications connect.
    pub fn coordinator(&self) -> &TestCluster {
        &self.coordinator
    }

    /// The workers' superuser options (administration and inspection only).
    pub fn worker_admin_options(&self) -> Vec<PgConnectOptions> {
        self.workers
            .iter()
            .map(TestCluster::admin_options)
            .collect()
    }

    /// A fresh database on every node, as [`TestDatabase::create`] makes one on the
    /// coordinator (its roles, the migrations as its owner, the grants), with the `citus`
    /// extension and the workers added in between. Then [`crate::citus::SETUP`] as the owner.
    /// Tenant tables are the caller's: create them as the owner with bare-form policies and
    /// distribute each with `SELECT tenancy_distribute('table')`.
    ///
    /// # Errors
    /// [`HarnessError`] when a node refuses a statement or the migrations fail.
    pub async fn create_database(&self) -> Result<TestDatabase, HarnessError> {
        let _one_at_a_time = self.setting_up.lock().await;
        // The roles are created on the coordinator, where Citus propagates them.
        let db = TestDatabase::create_empty_in(&self.coordinator).await?;
        for worker in &self.workers {
            let mut admin = PgConnection::connect_with(&worker.admin_options()).await?;
            // Generated names (letters, digits and '_').
            admin
                .execute(AssertSqlSafe(format!(
                    "CREATE DATABASE {} OWNER {}",
                    db.name(),
                    db.owner_role()
                )))
                .await?;
            admin.close().await?;
        }
        self.install_citus(db.name()).await?;
        db.migrate_and_grant().await?;
        let mut owner = PgConnection::connect_with(&db.owner_options()).await?;
        owner.execute(AssertSqlSafe(crate::citus::SETUP)).await?;
        owner.close().await?;
        Ok(db)
    }

    /// `CREATE EXTENSION citus` in `database` on every node, then the coordinator's host and
    /// the workers in that database's node list.
    async fn install_citus(&self, database: &str) -> Result<(), HarnessError> {
        for node in std::iter::once(&self.coordinator).chain(&self.workers) {
            let mut admin =
                PgConnection::connect_with(&node.admin_options().database(database)).await?;
            admin
                .execute("CREATE EXTENSION IF NOT EXISTS citus")
                .await?;
            admin.close().await?;
        }
        let mut admin =
            PgConnection::connect_with(&self.coordinator.admin_options().database(database))
                .await?;
        let (host, port) = socket(&self.coordinator.admin_options())?;
        sqlx::query("SELECT citus_set_coordinator_host($1, $2)")
            .bind(host)
            .bind(port)
            .execute(&mut admin)
            .await?;
        for worker in &self.workers {
            let (host, port) = socket(&worker.admin_options())?;
            sqlx::query("SELECT citus_add_node($1, $2)")
                .bind(host)
                .bind(port)
                .execute(&mut admin)
                .await?;
        }
        admin.close().await?;
        Ok(())
    }
}

/// A node's unix socket directory and port, as Citus's node list names it.
fn socket(options: &PgConnectOptions) -> Result<(String, i32), HarnessError> {
    let dir = options
        .get_socket()
        .ok_or_else(|| HarnessError::Start("a Citus node without a unix socket".into()))?;
    Ok((
        dir.to_string_lossy().into_owned(),
        i32::from(options.get_port()),
    ))
}
