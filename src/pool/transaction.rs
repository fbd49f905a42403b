//! [`TenantTransaction`]: one unit of work on one pooled connection, and the state that decides
//! what dropping it does to the connection.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, PgConnection, Postgres, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;

use crate::error::{Result, sqlstate};
use crate::ids::OrgId;

// sqlx's transaction bookkeeping, driven directly (sqlx does not re-export the trait) so that
// the window between sending BEGIN and sqlx counting the transaction is ours to guard (see
// `State::Beginning`).
type Tm = <Postgres as sqlx::Database>::TransactionManager;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The BEGIN batch may have reached the server but sqlx has not counted the transaction:
    /// dropped in this state, the connection is closed rather than returned to the pool.
    Beginning,
    /// In a transaction sqlx knows of: dropped, sqlx queues a ROLLBACK that the release ping
    /// flushes before the connection is reused.
    Open,
    Finished,
}

/// A unit of work in progress, in a transaction the database entered with the tenant context
/// set transaction-locally (see [`TenantPool`](crate::TenantPool)).
///
/// Dereferences to [`PgConnection`], so `&mut *tx` is an executor. Ends with
/// [`commit`](Self::commit) or [`rollback`](Self::rollback); dropped, it rolls back, which is
/// how a read unit ends: a write unit must call [`commit`](Self::commit).
#[must_use = "dropping a unit of work rolls it back: call commit() to keep its writes"]
pub struct TenantTransaction {
    conn: PoolConnection<Postgres>,
    state: State,
    org: Option<OrgId>,
}

impl fmt::Debug for TenantTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTransaction")
            .field("org", &self.org)
            .field("state", &self.state)
            .finish()
    }
}

impl TenantTransaction {
    /// Sends `begin_batch` on `conn` as one simple-query message and returns the open unit.
    ///
    /// On a server error inside the batch, the aborted transaction (which sqlx does not count:
    /// its depth is still 0) is rolled back here, and the connection goes back to the pool; if
    /// that rollback fails, or the database found the session unclean (`TNC05`), the
    /// connection is closed, never reused.
    ///
    /// `begin_batch` must be built from validated values only: the one caller passes
    /// [`Units::begin_sql`](super::entry::Units)'s batch.
    pub(super) async fn begin(
        conn: PoolConnection<Postgres>,
        org: Option<OrgId>,
        begin_batch: String,
    ) -> Result<Self, sqlx::Error> {
        let mut tx = TenantTransaction {
            conn,
            state: State::Beginning,
            org,
        };
        // SAFETY (SQL): built by `Units::begin_sql` from validated values only.
        let sql = AssertSqlSafe(begin_batch).into_sql_str();
        match Tm::begin(&mut tx.conn, Some(sql)).await {
            Ok(()) => {
                tx.state = State::Open;
                Ok(tx)
            }
            Err(error) => {
                if matches!(error, sqlx::Error::Database(_))
                    && !is_dirty_session(&error)
                    && tx.conn.execute("ROLLBACK").await.is_ok()
                {
                    tx.state = State::Finished;
                }
                Err(error)
            }
        }
    }

    /// The organization this unit runs in (`None` for a user-scoped unit or a service unit in
    /// no organization).
    pub fn org_id(&self) -> Option<OrgId> {
        self.org
    }

    /// Commits. On error the transaction is rolled back.
    ///
    /// # Errors
    /// A database error; the transaction is then rolled back by the server.
    pub async fn commit(mut self) -> Result<()> {
        Tm::commit(&mut self.conn).await?;
        self.state = State::Finished;
        Ok(())
    }

    /// Rolls back now, waiting for the server (dropping does the same off your path).
    ///
    /// # Errors
    /// A database error; dropping the unit then queues another `ROLLBACK`, and a connection
    /// that cannot run it fails the pool's release ping and is closed rather than reused.
    pub async fn rollback(mut self) -> Result<()> {
        Tm::rollback(&mut self.conn).await?;
        self.state = State::Finished;
        Ok(())
    }
}

/// Whether the database refused the unit because the session is not clean (`TNC05`).
pub(super) fn is_dirty_session(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().as_deref() == Some(sqlstate::DIRTY_SESSION))
}

impl Deref for TenantTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for TenantTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for TenantTransaction {
    fn drop(&mut self) {
        match self.state {
            State::Beginning => self.conn.close_on_drop(),
            State::Open => Tm::start_rollback(&mut self.conn),
            State::Finished => {}
        }
    }
}
