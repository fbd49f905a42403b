//! The policy generator: the SQL that gives a table the shape the audit expects, and the
//! `GRANT` that lets the application role use it.

use sqlx::PgPool;

use crate::error::Result;
use crate::sql_ident::{quote_ident, quote_qualified};

/// What the generator prints besides the table's own shape.
///
/// ```
/// use pg_tenancy::audit::{PolicyOptions, policy_sql_with};
///
/// let sql = policy_sql_with("order", &PolicyOptions::default().with_grant("app"));
/// assert!(sql.ends_with("GRANT SELECT, INSERT, UPDATE, DELETE ON \"order\" TO \"app\";\n"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PolicyOptions {
    /// The tenant column (default `organization_id`).
    pub column: String,
    /// The roles granted `SELECT, INSERT, UPDATE, DELETE` on the table, in order (default:
    /// none, and the SQL ends with a comment saying which `GRANT` to run).
    pub grant_to: Vec<String>,
    /// Columns whose planner statistics are turned off (`SET STATISTICS 0`), in order: under
    /// Row-Level Security `EXPLAIN`'s row estimates reveal other organizations' frequent
    /// values of a column that has statistics (the audit's `column_statistics_visible`).
    pub hide_statistics: Vec<String>,
    /// The Citus form (default: off): the policy compares the column with the bare
    /// `tenancy_current_org_id()` (Citus refuses a subquery in a policy on a distributed
    /// table), and the SQL ends by distributing the table (`tenancy_distribute`, from
    /// [`crate::citus::SETUP`]). On one server keep the default: there the sub-select is
    /// evaluated once per statement, the bare call once per row wherever the policy is a
    /// filter rather than an index condition (docs/scaling.md has the figures).
    pub citus: bool,
    /// A permission that writing needs (default: none, every member writes): members of the
    /// organization read the table, and a unit writes it (`INSERT`, `UPDATE`, `DELETE`) only
    /// while its role grants the permission, as the database holds it at the write
    /// (`tenancy_current_org_id_with('<permission>')`: Clerk's `org:<feature>:<permission>`,
    /// or a key of your own, ..._07_tenancy_permissions.sql).
    pub write_permission: Option<String>,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            column: "organization_id".into(),
            grant_to: Vec::new(),
            hide_statistics: Vec::new(),
            citus: false,
            write_permission: None,
        }
    }
}

impl PolicyOptions {
    /// Sets the tenant column.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = column.into();
        self
    }

    /// The Citus form ([`PolicyOptions::citus`]).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn for_citus(mut self) -> Self {
        self.citus = true;
        self
    }

    /// Writing needs `permission` ([`PolicyOptions::write_permission`]).
    ///
    /// ```
    /// use pg_tenancy::audit::{PolicyOptions, policy_sql_with};
    ///
    /// let sql = policy_sql_with(
    ///     "invoices",
    ///     &PolicyOptions::default().with_write_permission("org:invoices:write"),
    /// );
    /// assert!(sql.contains(
    ///     "WITH CHECK (\"organization_id\" = (SELECT tenancy_current_org_id_with('org:invoices:write')))"
    /// ));
    /// ```
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_write_permission(mut self, permission: impl Into<String>) -> Self {
        self.write_permission = Some(permission.into());
        self
    }

    /// Adds a role (your application's) to grant the table's DML to.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_grant(mut self, role: impl Into<String>) -> Self {
        self.grant_to.push(role.into());
        self
    }

    /// Adds a column whose planner statistics are turned off (a column whose values are
    /// secrets between organizations: names, emails, free text).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_hidden_statistics(mut self, column: impl Into<String>) -> Self {
        self.hide_statistics.push(column.into());
        self
    }
}

/// The SQL that gives `table` (optionally `schema.table`, unquoted: split at the first `.`) the
/// shape of `pg-tenancy`'s own tenant tables: Row-Level Security enabled and forced, the
/// isolation policy comparing the bare `column` with `(SELECT tenancy_current_org_id())` in
/// `USING` and `WITH CHECK`, and an index leading with the column. It ends with a comment
/// saying which `GRANT` the application role needs ([`policy_sql_with`] prints the `GRANT`).
/// [`policy_sql_for`] adds the composite keys for foreign keys that cross tenants, from a live
/// catalog.
///
/// Every name is quoted, so a table called `order` or `Notes` is the table of that name.
pub fn policy_sql(table: &str, column: &str) -> String {
    policy_sql_with(table, &PolicyOptions::default().with_column(column))
}

/// [`policy_sql`] with [`PolicyOptions`]: the `GRANT` to the roles named there.
pub fn policy_sql_with(table: &str, options: &PolicyOptions) -> String {
    let mut sql = shape(table, options);
    sql.push_str(&hidden_statistics(table, options));
    sql.push_str(&grants(table, options));
    sql
}

/// The table's shape: RLS, the policies and the index (and on Citus, the distribution).
fn shape(table: &str, options: &PolicyOptions) -> String {
    let column = options.column.as_str();
    // The index name is the bare table name's (the schema is the table's anyway).
    let bare = table.split_once('.').map_or(table, |(_, name)| name);
    let (t, c) = (quote_qualified(table), quote_ident(column));
    let index = quote_ident(&format!("{bare}_{column}_idx"));
    // Per statement on one server, per row on Citus (which refuses the sub-select).
    let current = |call: String| {
        if options.citus {
            call
        } else {
            format!("(SELECT {call})")
        }
    };
    let org = current("tenancy_current_org_id()".to_owned());
    let policies = match &options.write_permission {
        None if options.citus => format!(
            "-- Citus: the bare call (Citus refuses a subquery in a distributed table's policy).\n{}",
            isolation_policy(&t, &c, &org)
        ),
        None => isolation_policy(&t, &c, &org),
        Some(permission) => {
            let write = current(format!(
                "tenancy_current_org_id_with('{}')",
                permission.replace('\'', "''")
            ));
            format!(
                "-- The organization's members read; writing needs the permission the policies name (a\n\
                 -- role grants it: the Clerk sync, or ServicePool::set_role_permissions).\n\
                 CREATE POLICY tenant_read ON {t} FOR SELECT\n    \
                 USING      ({c} = {org});\n\
                 CREATE POLICY permitted_insert ON {t} FOR INSERT\n    \
                 WITH CHECK ({c} = {write});\n\
                 CREATE POLICY permitted_update ON {t} FOR UPDATE\n    \
                 USING      ({c} = {write})\n    \
                 WITH CHECK ({c} = {write});\n\
                 CREATE POLICY permitted_delete ON {t} FOR DELETE\n    \
                 USING      ({c} = {write});\n"
            )
        }
    };
    let mut sql = table_statements(&t, &c, &index, &policies);
    if options.citus {
        sql.push_str(&format!(
            "-- Distributed by {c}, colocated with the other tenant tables (src/citus.sql).\n\
             SELECT tenancy_distribute('{}', '{}');\n",
            t.replace('\'', "''"),
            column.replace('\'', "''")
        ));
    }
    sql
}

/// The one isolation policy, comparing the quoted column `c` with `org`.
fn isolation_policy(t: &str, c: &str, org: &str) -> String {
    format!(
        "CREATE POLICY tenant_isolation ON {t}\n    \
         USING      ({c} = {org})\n    \
         WITH CHECK ({c} = {org});\n"
    )
}

/// RLS enabled and forced on the quoted table `t`, `policies`, and the index on `c`.
fn table_statements(t: &str, c: &str, index: &str, policies: &str) -> String {
    format!(
        "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE {t} FORCE ROW LEVEL SECURITY;\n\
         {policies}\
         -- Skip if the primary key already leads with {c}.\n\
         CREATE INDEX IF NOT EXISTS {index} ON {t} ({c});\n"
    )
}

/// The statements for the quoted, qualified table `t`, with the quoted tenant column `c` and
/// index name `index` (the audit's `no_policy` fix prints them too, with the catalog's names).
pub(super) fn policy_statements(t: &str, c: &str, index: &str) -> String {
    table_statements(
        t,
        c,
        index,
        &isolation_policy(t, c, "(SELECT tenancy_current_org_id())"),
    )
}

/// `SET STATISTICS 0` on the columns of `options.hide_statistics`, in one statement.
fn hidden_statistics(table: &str, options: &PolicyOptions) -> String {
    if options.hide_statistics.is_empty() {
        return String::new();
    }
    let columns: Vec<String> = options
        .hide_statistics
        .iter()
        .map(|c| format!("ALTER COLUMN {} SET STATISTICS 0", quote_ident(c)))
        .collect();
    format!(
        "-- No planner statistics (EXPLAIN's estimates would show other organizations' values);\n\
         -- on a table already analyzed, also ALTER COLUMN ... TYPE <its type> to drop the old ones.\n\
         ALTER TABLE {} {};\n",
        quote_qualified(table),
        columns.join(", ")
    )
}

/// The `GRANT` to each role of `options`, or a comment saying which one to run.
fn grants(table: &str, options: &PolicyOptions) -> String {
    let t = quote_qualified(table);
    if options.grant_to.is_empty() {
        return format!(
            "-- The application role needs this GRANT (--grant ROLE or PolicyOptions::with_grant prints it):\n\
             -- GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO <application role>;\n"
        );
    }
    options
        .grant_to
        .iter()
        .map(|role| {
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {};\n",
                quote_ident(role)
            )
        })
        .collect()
}

/// [`policy_sql`], plus, for every foreign key from `table` to another tenant table that does
/// not include the tenant column, the composite unique key on the referenced table and the
/// composite foreign key that replaces it (so that a row of one organization cannot point at
/// another's). Those statements name the catalog's objects as the server quotes them.
///
/// # Errors
/// A database error reading the catalog.
pub async fn policy_sql_for(pool: &PgPool, table: &str, column: &str) -> Result<String> {
    policy_sql_for_with(pool, table, &PolicyOptions::default().with_column(column)).await
}

/// [`policy_sql_for`] with [`PolicyOptions`]: the `GRANT` to the roles named there.
///
/// # Errors
/// A database error reading the catalog.
pub async fn policy_sql_for_with(
    pool: &PgPool,
    table: &str,
    options: &PolicyOptions,
) -> Result<String> {
    let mut sql = shape(table, options);
    sql.push_str(&composite_foreign_keys(pool, table, &options.column).await?);
    sql.push_str(&hidden_statistics(table, options));
    sql.push_str(&grants(table, options));
    Ok(sql)
}

/// The statements that make `table`'s foreign keys to tables with `column` include it.
async fn composite_foreign_keys(pool: &PgPool, table: &str, column: &str) -> Result<String> {
    let mut tx = pool.begin_with("BEGIN READ ONLY").await?;
    // Every name quoted by the server: the child and parent tables, the constraint, the key
    // columns and the tenant column.
    type ForeignKey = (String, String, String, String, String, String);
    let rows: Vec<ForeignKey> = sqlx::query_as(
        "SELECT quote_ident(con.conname), quote_ident(cn.nspname) || '.' || quote_ident(c.relname),
                quote_ident($2),
                quote_ident(fn.nspname) || '.' || quote_ident(f.relname),
                array_to_string(array(SELECT quote_ident(a.attname)
                      FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                     ORDER BY k.i), ', '),
                array_to_string(array(SELECT quote_ident(a.attname)
                      FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
                     ORDER BY k.i), ', ')
           FROM pg_constraint con
           JOIN pg_class c ON c.oid = con.conrelid
           JOIN pg_namespace cn ON cn.oid = c.relnamespace
           JOIN pg_class f ON f.oid = con.confrelid
           JOIN pg_namespace fn ON fn.oid = f.relnamespace
          WHERE con.contype = 'f' AND con.conrelid = to_regclass($1)
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.confrelid
                         AND a.attname = $2 AND NOT a.attisdropped)
            AND NOT ($2 = ANY (array(SELECT a.attname::text FROM unnest(con.conkey) k(n)
                       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n)))",
    )
    .bind(quote_qualified(table))
    .bind(column)
    .fetch_all(&mut *tx)
    .await?;
    let mut sql = String::new();
    for (n, t, c, p, cc, pc) in rows {
        sql.push_str(&format!(
            "-- {n} points across organizations: make it include {c}.\n\
             ALTER TABLE {p} ADD UNIQUE ({c}, {pc});\n\
             ALTER TABLE {t} DROP CONSTRAINT {n};\n\
             ALTER TABLE {t} ADD CONSTRAINT {n} FOREIGN KEY ({c}, {cc}) REFERENCES {p} ({c}, {pc});\n",
        ));
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_citus_form_calls_the_function_bare_and_distributes() {
        let sql = policy_sql_with(
            "app.it's",
            &PolicyOptions::default().with_column("org").for_citus(),
        );
        assert!(
            sql.contains("USING      (\"org\" = tenancy_current_org_id())"),
            "{sql}"
        );
        assert!(
            sql.contains("WITH CHECK (\"org\" = tenancy_current_org_id())"),
            "{sql}"
        );
        assert!(!sql.contains("SELECT tenancy_current_org_id"), "{sql}");
        assert!(
            sql.contains("SELECT tenancy_distribute('\"app\".\"it''s\"', 'org');"),
            "{sql}"
        );
        // The default stays the one-server form.
        assert!(!policy_sql("t", "org").contains("tenancy_distribute"));
    }

    #[test]
    fn policy_sql_quotes_every_name_and_has_every_part() {
        let sql = policy_sql("app.Notes", "org");
        assert!(sql.contains("ALTER TABLE \"app\".\"Notes\" ENABLE ROW LEVEL SECURITY;"));
        assert!(sql.contains("ALTER TABLE \"app\".\"Notes\" FORCE ROW LEVEL SECURITY;"));
        assert!(sql.contains("USING      (\"org\" = (SELECT tenancy_current_org_id()))"));
        assert!(sql.contains("WITH CHECK (\"org\" = (SELECT tenancy_current_org_id()))"));
        assert!(sql.contains(
            "CREATE INDEX IF NOT EXISTS \"Notes_org_idx\" ON \"app\".\"Notes\" (\"org\");"
        ));
        // A keyword is a table name like any other.
        let sql = policy_sql("order", "organization_id");
        assert!(
            sql.contains("ALTER TABLE \"order\" FORCE ROW LEVEL SECURITY;"),
            "{sql}"
        );
        assert!(!sql.contains(" order "), "{sql}");
    }

    #[test]
    fn the_sql_ends_with_the_grant_or_says_which_to_run() {
        let sql = policy_sql("order", "organization_id");
        assert!(
            sql.ends_with(
                "-- GRANT SELECT, INSERT, UPDATE, DELETE ON \"order\" TO <application role>;\n"
            ),
            "{sql}"
        );
        assert!(!sql.lines().any(|l| l.starts_with("GRANT")), "{sql}");
        let options = PolicyOptions::default()
            .with_column("tenant_id")
            .with_grant("app")
            .with_grant("Report\"ing");
        let sql = policy_sql_with("s.order", &options);
        assert!(sql.contains("(\"tenant_id\" = (SELECT"), "{sql}");
        assert!(
            sql.ends_with(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON \"s\".\"order\" TO \"app\";\n\
             GRANT SELECT, INSERT, UPDATE, DELETE ON \"s\".\"order\" TO \"Report\"\"ing\";\n"
            ),
            "{sql}"
        );
        assert!(!sql.contains("<application role>"), "{sql}");
    }

    #[test]
    fn hidden_statistics_come_before_the_grant_quoted() {
        assert!(!policy_sql("notes", "organization_id").contains("STATISTICS"));
        let options = PolicyOptions::default()
            .with_hidden_statistics("body")
            .with_hidden_statistics("Title")
            .with_grant("app");
        let sql = policy_sql_with("s.notes", &options);
        assert!(
            sql.ends_with(
                "ALTER TABLE \"s\".\"notes\" ALTER COLUMN \"body\" SET STATISTICS 0, \
                 ALTER COLUMN \"Title\" SET STATISTICS 0;\n\
                 GRANT SELECT, INSERT, UPDATE, DELETE ON \"s\".\"notes\" TO \"app\";\n"
            ),
            "{sql}"
        );
    }
}
