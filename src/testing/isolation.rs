//! The isolation kit: the checks `pg-tenancy`'s suite runs on its own tables, for yours.

use sqlx::{AssertSqlSafe, PgConnection};

use crate::sql_ident::{quote_ident, quote_qualified};
use crate::{Error, OrgContext, OrgId, ServicePool, TenantPool};

/// A tenant table and how to make one of its rows.
#[derive(Debug, Clone)]
pub struct TableUnderTest {
    table: String,
    column: String,
    insert: String,
}

impl TableUnderTest {
    /// `table` (optionally `schema.table`, unquoted) with the tenant column `column`, and an
    /// `INSERT` that makes one row with `$1` (a uuid) as the organization, e.g.
    /// `INSERT INTO notes (organization_id, body) VALUES ($1, 'x')`.
    pub fn new(table: &str, column: &str, insert: &str) -> Self {
        TableUnderTest {
            table: quote_qualified(table),
            column: quote_ident(column),
            insert: insert.to_owned(),
        }
    }
}

/// Runs the isolation checks on `table` through `pool`, with two contexts of **different**
/// organizations whose roles may write the table:
///
/// 1. positive controls: `a` and `b` each insert a row and read it back;
/// 2. cross-tenant read: `b` sees none of `a`'s rows, even asking for them by organization;
/// 3. cross-tenant insert: `b` cannot insert a row for `a`'s organization;
/// 4. moving a row: `a` cannot update its row into `b`'s organization;
/// 5. cross-tenant update and delete: `b` changes and deletes none of `a`'s rows;
/// 6. no context: a query on the bare pool sees no rows and cannot insert.
///
/// Run it through a pool of your application role and one of the tables' owner (see the
/// README). Returns every failed check, described.
///
/// # Errors
/// The list of failed checks (empty means none failed, and is never returned as an error).
pub async fn check_isolation(
    pool: &TenantPool,
    a: &OrgContext,
    b: &OrgContext,
    table: &TableUnderTest,
) -> Result<(), Vec<String>> {
    check(&Runner::Member { pool, a, b }, table).await
}

/// [`check_isolation`] through **service units** ([`ServicePool::with_org`]) in organizations
/// `a` and `b`: for tables only service units write (the webhook bookkeeping), or to check a
/// service path's isolation.
///
/// # Errors
/// The list of failed checks.
pub async fn check_service_isolation(
    service: &ServicePool,
    a: OrgId,
    b: OrgId,
    table: &TableUnderTest,
) -> Result<(), Vec<String>> {
    check(
        &Runner::Service {
            pool: service,
            a,
            b,
        },
        table,
    )
    .await
}

#[derive(Clone, Copy)]
enum Side {
    A,
    B,
}

enum Runner<'a> {
    Member {
        pool: &'a TenantPool,
        a: &'a OrgContext,
        b: &'a OrgContext,
    },
    Service {
        pool: &'a ServicePool,
        a: OrgId,
        b: OrgId,
    },
}

impl Runner<'_> {
    fn org(&self, side: Side) -> uuid::Uuid {
        let org = match (self, side) {
            (Runner::Member { a, .. }, Side::A) => a.org_id(),
            (Runner::Member { b, .. }, Side::B) => b.org_id(),
            (Runner::Service { a, .. }, Side::A) => *a,
            (Runner::Service { b, .. }, Side::B) => *b,
        };
        *org.as_uuid()
    }

    fn bare(&self) -> &sqlx::PgPool {
        match self {
            Runner::Member { pool, .. } => pool.pool(),
            Runner::Service { pool, .. } => pool.pool(),
        }
    }

    /// Runs `sql` with `args` in a unit of `side`; rows affected.
    async fn run(&self, side: Side, sql: &str, args: &[uuid::Uuid]) -> Result<u64, Error> {
        let statement = async |tx: &mut PgConnection| -> Result<u64, Error> {
            Ok(execute(tx, sql, args).await?)
        };
        match (self, side) {
            (Runner::Member { pool, a, .. }, Side::A) => pool.with_rls(a, statement).await,
            (Runner::Member { pool, b, .. }, Side::B) => pool.with_rls(b, statement).await,
            (Runner::Service { pool, .. }, side) => {
                pool.with_org(OrgId::from(self.org(side)), statement).await
            }
        }
    }

    /// The count `sql` (one `$1`: `org`) returns in a unit of `side`.
    async fn count(&self, side: Side, sql: &str, org: uuid::Uuid) -> Result<i64, Error> {
        let query = async |tx: &mut PgConnection| -> Result<i64, Error> {
            Ok(sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                .bind(org)
                .fetch_one(tx)
                .await?)
        };
        match (self, side) {
            (Runner::Member { pool, a, .. }, Side::A) => pool.with_rls_read(a, query).await,
            (Runner::Member { pool, b, .. }, Side::B) => pool.with_rls_read(b, query).await,
            (Runner::Service { pool, .. }, side) => {
                pool.with_org(OrgId::from(self.org(side)), query).await
            }
        }
    }
}

// Over 80 lines on purpose: the kit's checks in the order a reader verifies them (positive
// controls, then each cross-organization read and write), every one beside its control.
async fn check(runner: &Runner<'_>, table: &TableUnderTest) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let (t, c) = (&table.table, &table.column);
    let (org_a, org_b) = (runner.org(Side::A), runner.org(Side::B));
    if org_a == org_b {
        return Err(vec!["the two contexts are in the same organization".into()]);
    }
    let mine = format!("SELECT count(*) FROM {t} WHERE {c} = $1");

    // 1. Positive controls: a kit that refused everything would pass every other check.
    for (side, org) in [(Side::A, org_a), (Side::B, org_b)] {
        if let Err(e) = runner.run(side, &table.insert, &[org]).await {
            failures.push(format!(
                "positive control: {org} could not insert its own row: {e}"
            ));
        }
        let own = runner.count(side, &mine, org).await;
        if !matches!(own, Ok(n) if n > 0) {
            failures.push(format!(
                "positive control: {org} does not see its own rows ({own:?})"
            ));
        }
    }
    if !failures.is_empty() {
        return Err(failures);
    }

    // 2. Cross-tenant read.
    let asked = runner.count(Side::B, &mine, org_a).await;
    if !matches!(asked, Ok(0)) {
        failures.push(format!(
            "cross-tenant read: b sees a's rows by asking for them ({asked:?})"
        ));
    }
    let others = format!("SELECT count(*) FROM {t} WHERE {c} <> $1");
    let foreign = runner.count(Side::B, &others, org_b).await;
    if !matches!(foreign, Ok(0)) {
        failures.push(format!(
            "cross-tenant read: b's unfiltered query sees other organizations' rows ({foreign:?})"
        ));
    }

    // 3. Cross-tenant insert.
    if runner.run(Side::B, &table.insert, &[org_a]).await.is_ok() {
        failures.push("cross-tenant insert: b inserted a row into a's organization".into());
    }

    // 4. Moving a row into another organization.
    let moving = format!("UPDATE {t} SET {c} = $2 WHERE {c} = $1");
    if let Ok(n @ 1..) = runner.run(Side::A, &moving, &[org_a, org_b]).await {
        failures.push(format!(
            "moving a row: a moved {n} row(s) into b's organization"
        ));
    }

    // 5. Cross-tenant update and delete.
    let before = runner.count(Side::A, &mine, org_a).await;
    let touch = format!("UPDATE {t} SET {c} = {c} WHERE {c} = $1");
    if let Ok(1..) = runner.run(Side::B, &touch, &[org_a]).await {
        failures.push("cross-tenant update: b updated a's rows".into());
    }
    let delete = format!("DELETE FROM {t} WHERE {c} = $1");
    if let Ok(1..) = runner.run(Side::B, &delete, &[org_a]).await {
        failures.push("cross-tenant delete: b deleted a's rows".into());
    }
    let after = runner.count(Side::A, &mine, org_a).await;
    if before.as_ref().ok() != after.as_ref().ok() || after.is_err() {
        failures.push(format!(
            "a's rows changed under b's units ({before:?} -> {after:?})"
        ));
    }

    // 6. No context.
    let bare: Result<i64, sqlx::Error> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(runner.bare())
            .await;
    if let Ok(n @ 1..) = bare {
        failures.push(format!(
            "no context: a query without a context sees {n} row(s)"
        ));
    }
    match runner.bare().acquire().await {
        Ok(mut conn) => {
            if execute(&mut conn, &table.insert, &[org_a]).await.is_ok() {
                failures.push("no context: an insert without a context succeeded".into());
            }
        }
        Err(e) => failures.push(format!("no context: could not connect: {e}")),
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// [`check_isolation`], panicking with every failed check.
///
/// # Panics
/// When a check fails.
pub async fn assert_isolated(
    pool: &TenantPool,
    a: &OrgContext,
    b: &OrgContext,
    table: &TableUnderTest,
) {
    if let Err(failures) = check_isolation(pool, a, b, table).await {
        panic!(
            "isolation of {} failed:\n  - {}",
            table.table,
            failures.join("\n  - ")
        );
    }
}

async fn execute(
    conn: &mut PgConnection,
    sql: &str,
    args: &[uuid::Uuid],
) -> Result<u64, sqlx::Error> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for arg in args {
        query = query.bind(*arg);
    }
    Ok(query.execute(conn).await?.rows_affected())
}
