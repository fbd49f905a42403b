//! The isolation kit: the checks `tenancy`'s suite runs on its own tables, for yours.

use sqlx::{AssertSqlSafe, PgConnection};

use crate::audit::quote_ident;
use crate::{Error, OrgContext, TenantPool};

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
        let table = match table.split_once('.') {
            Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
            None => quote_ident(table),
        };
        TableUnderTest {
            table,
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
    let mut failures = Vec::new();
    let (t, c) = (&table.table, &table.column);
    let (org_a, org_b) = (*a.org_id().as_uuid(), *b.org_id().as_uuid());
    if org_a == org_b {
        return Err(vec!["the two contexts are in the same organization".into()]);
    }

    // 1. Positive controls: a kit that refused everything would pass every other check.
    for (ctx, org) in [(a, org_a), (b, org_b)] {
        let inserted = run(pool, ctx, &table.insert, &[org]).await;
        if let Err(e) = inserted {
            failures.push(format!(
                "positive control: {} could not insert its own row: {e}",
                ctx.org_id()
            ));
        }
        let own = count(
            pool,
            ctx,
            &format!("SELECT count(*) FROM {t} WHERE {c} = $1"),
            org,
        )
        .await;
        if !matches!(own, Ok(n) if n > 0) {
            failures.push(format!(
                "positive control: {} does not see its own rows ({own:?})",
                ctx.org_id()
            ));
        }
    }
    if !failures.is_empty() {
        return Err(failures);
    }

    // 2. Cross-tenant read.
    let asked = count(
        pool,
        b,
        &format!("SELECT count(*) FROM {t} WHERE {c} = $1"),
        org_a,
    )
    .await;
    if !matches!(asked, Ok(0)) {
        failures.push(format!(
            "cross-tenant read: b sees a's rows by asking for them ({asked:?})"
        ));
    }
    let foreign = count(
        pool,
        b,
        &format!("SELECT count(*) FROM {t} WHERE {c} <> $1"),
        org_b,
    )
    .await;
    if !matches!(foreign, Ok(0)) {
        failures.push(format!(
            "cross-tenant read: b's unfiltered query sees other organizations' rows ({foreign:?})"
        ));
    }

    // 3. Cross-tenant insert.
    if run(pool, b, &table.insert, &[org_a]).await.is_ok() {
        failures.push("cross-tenant insert: b inserted a row into a's organization".into());
    }

    // 4. Moving a row into another organization.
    let moved = run(
        pool,
        a,
        &format!("UPDATE {t} SET {c} = $2 WHERE {c} = $1"),
        &[org_a, org_b],
    )
    .await;
    if matches!(moved, Ok(n) if n > 0) {
        failures.push(format!(
            "moving a row: a moved {} row(s) into b's organization",
            moved.unwrap_or(0)
        ));
    }

    // 5. Cross-tenant update and delete.
    let before = count(
        pool,
        a,
        &format!("SELECT count(*) FROM {t} WHERE {c} = $1"),
        org_a,
    )
    .await;
    let updated = run(
        pool,
        b,
        &format!("UPDATE {t} SET {c} = {c} WHERE {c} = $1"),
        &[org_a],
    )
    .await;
    if matches!(updated, Ok(n) if n > 0) {
        failures.push("cross-tenant update: b updated a's rows".into());
    }
    let deleted = run(
        pool,
        b,
        &format!("DELETE FROM {t} WHERE {c} = $1"),
        &[org_a],
    )
    .await;
    if matches!(deleted, Ok(n) if n > 0) {
        failures.push("cross-tenant delete: b deleted a's rows".into());
    }
    let after = count(
        pool,
        a,
        &format!("SELECT count(*) FROM {t} WHERE {c} = $1"),
        org_a,
    )
    .await;
    if before.as_ref().ok() != after.as_ref().ok() || after.is_err() {
        failures.push(format!(
            "a's rows changed under b's units ({before:?} -> {after:?})"
        ));
    }

    // 6. No context.
    let bare: Result<i64, sqlx::Error> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(pool.pool())
            .await;
    if matches!(bare, Ok(n) if n > 0) {
        failures.push(format!(
            "no context: a query without a context sees {} row(s)",
            bare.unwrap_or(0)
        ));
    }
    let mut conn = match pool.pool().acquire().await {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("no context: could not connect: {e}"));
            return Err(failures);
        }
    };
    if execute(&mut conn, &table.insert, &[org_a]).await.is_ok() {
        failures.push("no context: an insert without a context succeeded".into());
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

async fn run(
    pool: &TenantPool,
    ctx: &OrgContext,
    sql: &str,
    args: &[uuid::Uuid],
) -> Result<u64, Error> {
    pool.with_rls(ctx, async |tx| Ok(execute(tx, sql, args).await?))
        .await
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

async fn count(
    pool: &TenantPool,
    ctx: &OrgContext,
    sql: &str,
    org: uuid::Uuid,
) -> Result<i64, Error> {
    pool.with_rls_read(ctx, async |tx| {
        Ok(sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .bind(org)
            .fetch_one(tx)
            .await?)
    })
    .await
}
