//! A catalog audit of a live database: are your tenant tables as safe as `pg-tenancy`'s own?
//!
//! [`audit`] reads the catalog (a handful of queries, whatever the number of tables) and returns
//! a [`Report`] of [`Finding`]s, each with a [`Severity`], the object, why it matters, and the
//! SQL that fixes it. It looks at:
//!
//! - **tenant tables**: every table with the tenant column (`organization_id` by default) in
//!   the audited schemas, plus the ones you name (`organizations` with `id` is included when
//!   it exists): Row-Level Security enabled and forced, at least one policy, every write-admitting
//!   policy with an explicit `WITH CHECK`, an index leading with the tenant column, unique
//!   constraints that include it, foreign keys between tenant tables that include it;
//! - **policies** that apply to the connecting role: each must compare the bare tenant column
//!   with the configured setting read once per statement (`(SELECT tenancy_current_org_id())`,
//!   or `(SELECT current_setting('<setting>', true)::uuid)`). Casts of the column, `COALESCE`
//!   or a top-level `OR`, another setting, `current_setting` without `missing_ok`, and a function
//!   called per row are findings. A policy whose comment contains `tenancy-audit: allow` is
//!   skipped (the shipped switcher and pruning policies carry one, with the reason);
//! - **the connecting role**: superuser, `BYPASSRLS`, owner of tenant tables, `TEMP`;
//! - **views** over tenant tables without `security_invoker`, materialized views over them;
//!   `SECURITY DEFINER` functions without a pinned `search_path`; functions that set the tenant
//!   setting at session level.
//!
//! Use it three ways: [`TenantPool::audited`](crate::TenantPool::audited) refuses to serve when
//! there are errors; `testing::assert_audit_clean` fails a test with the findings; and the
//! command line `pg-tenancy audit <DATABASE_URL>` (feature `cli`). [`policy_sql`] prints the SQL
//! that gives a table the shape the audit expects.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use sqlx::PgPool;

use crate::error::Result;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth fixing; not a hole by itself (slow policies, a role with more rights than needed).
    Warning,
    /// Isolation can fail: fix before serving.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One thing the audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// A stable code (`rls_not_forced`, ...).
    pub code: &'static str,
    /// The object (`public.notes`, `policy p on public.notes`, `role app`).
    pub object: String,
    /// Why it matters.
    pub why: String,
    /// SQL that fixes it (or a comment saying what to do, where no statement can).
    pub fix: String,
}

/// What the audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The tenant tables audited (`schema.table`).
    pub tables: Vec<String>,
    /// The findings, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Whether there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The codes of the findings, in order (for tests).
    pub fn codes(&self) -> Vec<&'static str> {
        self.findings.iter().map(|f| f.code).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.errors().count();
        writeln!(
            f,
            "pg-tenancy audit: {} tenant table(s), {} error(s), {} warning(s)",
            self.tables.len(),
            errors,
            self.findings.len() - errors
        )?;
        for finding in &self.findings {
            writeln!(
                f,
                "\n{} [{}] {}\n  why: {}\n  fix:\n{}",
                finding.severity,
                finding.code,
                finding.object,
                finding.why,
                indent(&finding.fix)
            )?;
        }
        Ok(())
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to audit.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditOptions {
    /// The tenant column (default `organization_id`).
    pub column: String,
    /// The setting the policies must read (default `app.current_org_id`).
    pub setting: String,
    /// Tables to audit besides those with the tenant column: `table`, `schema.table`, or
    /// either with `:column` (default: `organizations:id`).
    pub tables: Vec<String>,
    /// The schemas to look in (default: the connection's `current_schemas(false)`).
    pub schemas: Option<Vec<String>>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            column: "organization_id".into(),
            setting: "app.current_org_id".into(),
            tables: vec!["organizations:id".into()],
            schemas: None,
        }
    }
}

impl AuditOptions {
    /// Adds a table to audit (`table`, `schema.table`, `table:column`).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.tables.push(table.into());
        self
    }

    /// Sets the tenant column.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = column.into();
        self
    }

    /// Sets the schemas to audit.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_schemas<I, S>(mut self, schemas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.schemas = Some(schemas.into_iter().map(Into::into).collect());
        self
    }
}

/// A tenant table, as the catalog describes it.
struct Table {
    oid: i64,
    name: String,
    relname: String,
    column: String,
    attnum: i16,
    rls: bool,
    forced: bool,
    mine: bool,
}

/// Quotes an identifier for SQL when it needs quoting.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The SQL that gives `table` (optionally `schema.table`) the shape of `pg-tenancy`'s own tenant
/// tables: Row-Level Security enabled and forced, the isolation policy comparing the bare
/// `column` with `(SELECT tenancy_current_org_id())` in `USING` and `WITH CHECK`, and an index
/// leading with the column. [`policy_sql_for`] adds the composite keys for foreign keys that
/// cross tenants, from a live catalog.
pub fn policy_sql(table: &str, column: &str) -> String {
    let t = match table.split_once('.') {
        Some((schema, name)) => qualified(schema, name),
        None => quote_ident(table),
    };
    policy_statements(&t, table.rsplit('.').next().unwrap_or(table), column)
}

/// The statements for the quoted, qualified table `t` whose bare name is `bare`.
fn policy_statements(t: &str, bare: &str, column: &str) -> String {
    let c = quote_ident(column);
    let index = quote_ident(&format!("{bare}_{column}_idx"));
    format!(
        "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE {t} FORCE ROW LEVEL SECURITY;\n\
         CREATE POLICY tenant_isolation ON {t}\n    \
         USING      ({c} = (SELECT tenancy_current_org_id()))\n    \
         WITH CHECK ({c} = (SELECT tenancy_current_org_id()));\n\
         -- Skip if the primary key already leads with {c}.\n\
         CREATE INDEX IF NOT EXISTS {index} ON {t} ({c});\n"
    )
}

/// [`policy_sql`], plus, for every foreign key from `table` to another tenant table that does
/// not include the tenant column, the composite unique key on the referenced table and the
/// composite foreign key that replaces it (so that a row of one organization cannot point at
/// another's).
///
/// # Errors
/// A database error reading the catalog.
pub async fn policy_sql_for(pool: &PgPool, table: &str, column: &str) -> Result<String> {
    let mut sql = policy_sql(table, column);
    let mut tx = pool.begin_with("BEGIN READ ONLY").await?;
    type ForeignKey = (String, String, String, Vec<String>, Vec<String>);
    let rows: Vec<ForeignKey> = sqlx::query_as(
        "SELECT con.conname::text, fn.nspname::text, f.relname::text,
                array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
                array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
           FROM pg_constraint con
           JOIN pg_class f ON f.oid = con.confrelid
           JOIN pg_namespace fn ON fn.oid = f.relnamespace
          WHERE con.contype = 'f' AND con.conrelid = to_regclass($1)
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.confrelid
                         AND a.attname = $2 AND NOT a.attisdropped)
            AND NOT ($2 = ANY (array(SELECT a.attname::text FROM unnest(con.conkey) k(n)
                       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n)))",
    )
    .bind(table)
    .bind(column)
    .fetch_all(&mut *tx)
    .await?;
    let t = match table.split_once('.') {
        Some((schema, name)) => qualified(schema, name),
        None => quote_ident(table),
    };
    let c = quote_ident(column);
    for (name, schema, parent, cols, parent_cols) in rows {
        let p = qualified(&schema, &parent);
        let list = |v: &[String]| {
            v.iter()
                .map(|s| quote_ident(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        sql.push_str(&format!(
            "-- {name} points across organizations: make it include {c}.\n\
             ALTER TABLE {p} ADD UNIQUE ({c}, {pc});\n\
             ALTER TABLE {t} DROP CONSTRAINT {n};\n\
             ALTER TABLE {t} ADD CONSTRAINT {n} FOREIGN KEY ({c}, {cc}) REFERENCES {p} ({c}, {pc});\n",
            n = quote_ident(&name),
            pc = list(&parent_cols),
            cc = list(&cols),
        ));
    }
    Ok(sql)
}

/// Audits the database `pool` connects to, as the role it connects as.
///
/// # Errors
/// A database error reading the catalog.
pub async fn audit(pool: &PgPool, options: &AuditOptions) -> Result<Report> {
    // One read-only transaction: one snapshot of the catalog, and one server connection even
    // through a transaction-pooling proxy.
    let mut conn = pool.begin_with("BEGIN READ ONLY").await?;
    let schemas: Vec<String> = match &options.schemas {
        Some(s) => s.clone(),
        None => {
            sqlx::query_scalar("SELECT unnest(current_schemas(false))::text")
                .fetch_all(&mut *conn)
                .await?
        }
    };
    // `[schema.]table[:column]` as the key the catalog query matches: `schema|table|column`
    // (the schema empty when not given).
    let named_keys: Vec<String> = options
        .tables
        .iter()
        .map(|t| {
            let (table, column) = t.split_once(':').unwrap_or((t, &options.column));
            let (schema, table) = table.split_once('.').unwrap_or(("", table));
            format!("{schema}|{table}|{column}")
        })
        .collect();

    type TableRow = (i64, String, String, String, i16, bool, bool, bool);
    let rows: Vec<TableRow> = sqlx::query_as(
        "SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attname::text, a.attnum,
                c.relrowsecurity, c.relforcerowsecurity,
                pg_has_role(current_user, c.relowner, 'USAGE')
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY ($1)
            AND (a.attname = $2
                 OR ('|' || c.relname || '|' || a.attname) = ANY ($3)
                 OR (n.nspname || '|' || c.relname || '|' || a.attname) = ANY ($3))
          ORDER BY n.nspname, c.relname",
    )
    .bind(&schemas)
    .bind(&options.column)
    .bind(&named_keys)
    .fetch_all(&mut *conn)
    .await?;
    let mut seen = HashSet::new();
    let tables: Vec<Table> = rows
        .into_iter()
        .filter(|r| seen.insert(r.0))
        .map(
            |(oid, schema, name, column, attnum, rls, forced, mine)| Table {
                oid,
                name: qualified(&schema, &name),
                relname: name,
                column,
                attnum,
                rls,
                forced,
                mine,
            },
        )
        .collect();
    let oids: Vec<i64> = tables.iter().map(|t| t.oid).collect();
    let by_oid: HashMap<i64, &Table> = tables.iter().map(|t| (t.oid, t)).collect();
    let mut findings = Vec::new();

    // The connecting role.
    let (role, superuser, bypass, temp): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, rolbypassrls,
                has_database_privilege(current_database(), 'TEMP')
           FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    let r = quote_ident(&role);
    if superuser {
        findings.push(finding(
            Severity::Error,
            "role_superuser",
            format!("role {role}"),
            "a superuser bypasses every Row-Level Security policy: all rows of all organizations",
            format!("-- connect the application as a role without SUPERUSER:\nALTER ROLE {r} NOSUPERUSER;"),
        ));
    }
    if bypass {
        findings.push(finding(
            Severity::Error,
            "role_bypassrls",
            format!("role {role}"),
            "BYPASSRLS skips every policy: all rows of all organizations",
            format!("ALTER ROLE {r} NOBYPASSRLS;"),
        ));
    }
    let owned: Vec<&Table> = tables.iter().filter(|t| t.mine).collect();
    if !owned.is_empty() {
        let names: Vec<&str> = owned.iter().map(|t| t.name.as_str()).collect();
        findings.push(finding(
            Severity::Warning,
            "role_owns_tenant_tables",
            format!("role {role}"),
            &format!(
                "owns {}: FORCE keeps the policies on, but an owner can ALTER TABLE ... DISABLE ROW LEVEL SECURITY or drop a policy",
                names.join(", ")
            ),
            "-- connect the application as a role that owns nothing, with DML grants only:\n\
             -- CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS; GRANT SELECT, INSERT, UPDATE, DELETE ON ... TO app;"
                .to_owned(),
        ));
    }
    if temp {
        findings.push(finding(
            Severity::Warning,
            "role_can_create_temp",
            format!("role {role}"),
            "temporary tables let SQL in one unit shadow names for later units on the same pooled connection",
            "REVOKE TEMPORARY ON DATABASE <database> FROM PUBLIC;  -- and from this role if granted".to_owned(),
        ));
    }

    // Tables: RLS, FORCE.
    for t in &tables {
        if !t.rls {
            findings.push(finding(
                Severity::Error,
                "rls_disabled",
                t.name.clone(),
                "Row-Level Security is off: every query sees every organization's rows",
                format!("ALTER TABLE {} ENABLE ROW LEVEL SECURITY;\nALTER TABLE {0} FORCE ROW LEVEL SECURITY;", t.name),
            ));
        } else if !t.forced {
            findings.push(finding(
                Severity::Error,
                "rls_not_forced",
                t.name.clone(),
                "without FORCE the table's owner skips the policies; an app connected as the owner sees every organization",
                format!("ALTER TABLE {} FORCE ROW LEVEL SECURITY;", t.name),
            ));
        }
    }

    // Policies.
    type PolicyRow = (
        i64,
        String,
        String,
        bool,
        Option<String>,
        Option<String>,
        bool,
        bool,
    );
    let policies: Vec<PolicyRow> = sqlx::query_as(
        "SELECT p.polrelid::int8, p.polname::text, p.polcmd::text, p.polpermissive,
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
                (0::oid = ANY (p.polroles)
                 OR EXISTS (SELECT 1 FROM unnest(p.polroles) r(oid)
                             WHERE pg_has_role(current_user, r.oid, 'MEMBER'))),
                coalesce(obj_description(p.oid, 'pg_policy'), '') LIKE '%tenancy-audit: allow%'
           FROM pg_policy p WHERE p.polrelid = ANY ($1::int8[]::oid[])
          ORDER BY p.polrelid, p.polname",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await?;
    let mut with_policy = HashSet::new();
    let mut functions_called = HashSet::new();
    let mut checks = Vec::new();
    for (relid, name, cmd, permissive, qual, check, applies, allowed) in &policies {
        with_policy.insert(*relid);
        let Some(t) = by_oid.get(relid) else { continue };
        if !applies || *allowed || !permissive {
            continue;
        }
        let object = format!("policy {} on {}", quote_ident(name), t.name);
        let writes = matches!(cmd.as_str(), "*" | "w");
        if writes && check.is_none() {
            findings.push(finding(
                Severity::Error,
                "policy_without_with_check",
                object.clone(),
                "a policy that admits writes needs an explicit WITH CHECK: without it the USING expression is reused implicitly, and a later change to USING silently changes which rows may be written",
                format!(
                    "ALTER POLICY {} ON {} WITH CHECK ({} = (SELECT tenancy_current_org_id()));",
                    quote_ident(name),
                    t.name,
                    quote_ident(&t.column)
                ),
            ));
        }
        for expr in [qual, check].into_iter().flatten() {
            checks.push((t, object.clone(), expr.clone()));
            for f in called_functions(expr) {
                functions_called.insert(f);
            }
        }
    }
    for t in &tables {
        if t.rls && !with_policy.contains(&t.oid) {
            findings.push(finding(
                Severity::Error,
                "no_policy",
                t.name.clone(),
                "Row-Level Security is on without a policy: nothing is visible or writable, so the application will be tempted to connect around it",
                policy_statements(&t.name, &t.relname, &t.column),
            ));
        }
    }
    let bodies: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT proname::text, prosrc FROM pg_proc WHERE proname = ANY ($1)",
    )
    .bind(functions_called.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut reported = HashSet::new();
    for (t, object, expr) in checks {
        for (severity, code, why) in check_policy_expr(&expr, &t.column, &options.setting, &bodies)
        {
            // One finding per policy and code (USING and WITH CHECK alike).
            if reported.insert((object.clone(), code)) {
                let fix = format!(
                    "ALTER POLICY ... ON {} USING ({c} = (SELECT tenancy_current_org_id())) WITH CHECK ({c} = (SELECT tenancy_current_org_id()));\n-- ({object}: replace the expression; keep any role condition with AND)",
                    t.name,
                    c = quote_ident(&t.column)
                );
                findings.push(finding(severity, code, object.clone(), why, fix));
            }
        }
    }

    // Indexes and unique constraints.
    let indexes: Vec<(i64, String, bool, Vec<i16>)> = sqlx::query_as(
        "SELECT i.indrelid::int8, ic.relname::text, i.indisunique,
                ARRAY(SELECT unnest(i.indkey::int2[]))
           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          WHERE i.indrelid = ANY ($1::int8[]::oid[])",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await?;
    for t in &tables {
        let mine = indexes.iter().filter(|i| i.0 == t.oid);
        if !mine.clone().any(|i| i.3.first() == Some(&t.attnum)) {
            findings.push(finding(
                Severity::Warning,
                "no_tenant_index",
                t.name.clone(),
                "no index leads with the tenant column: every policy check is a sequential scan",
                format!(
                    "CREATE INDEX ON {} ({});  -- or lead the primary key with it",
                    t.name,
                    quote_ident(&t.column)
                ),
            ));
        }
        // A table whose tenant column alone is unique holds one row per organization (the
        // organizations table): its other unique keys are global by nature.
        let per_organization = mine.clone().any(|i| i.2 && i.3.as_slice() == [t.attnum]);
        for (_, index, unique, keys) in mine {
            if *unique && !per_organization && !keys.contains(&t.attnum) {
                findings.push(finding(
                    Severity::Warning,
                    "unique_without_tenant",
                    format!("index {} on {}", quote_ident(index), t.name),
                    "a unique key without the tenant column lets one organization learn that a value exists in another (the insert fails), and cannot be kept by Citus when distributed by organization",
                    format!(
                        "-- recreate it with the tenant column first, e.g.:\n-- ALTER TABLE {} ADD UNIQUE ({}, ...);",
                        t.name,
                        quote_ident(&t.column)
                    ),
                ));
            }
        }
    }

    // Foreign keys between tenant tables.
    type ForeignKey = (String, i64, i64, Vec<i16>, Vec<i16>);
    let fks: Vec<ForeignKey> = sqlx::query_as(
        "SELECT conname::text, conrelid::int8, confrelid::int8, conkey, confkey
           FROM pg_constraint
          WHERE contype = 'f' AND conrelid = ANY ($1::int8[]::oid[])
            AND confrelid = ANY ($1::int8[]::oid[])",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await?;
    for (name, from, to, keys, refs) in fks {
        let (Some(child), Some(parent)) = (by_oid.get(&from), by_oid.get(&to)) else {
            continue;
        };
        let aligned = keys
            .iter()
            .zip(&refs)
            .any(|(k, r)| *k == child.attnum && *r == parent.attnum);
        if !aligned {
            findings.push(finding(
                Severity::Error,
                "foreign_key_crosses_tenants",
                format!("foreign key {} on {}", quote_ident(&name), child.name),
                &format!(
                    "it references {} without the tenant column: a row of one organization can point at another's",
                    parent.name
                ),
                format!(
                    "-- make both keys composite (pg-tenancy policy {} prints the statements):\n\
                     -- ALTER TABLE {} ADD UNIQUE ({}, <key>);\n\
                     -- ALTER TABLE {} ADD FOREIGN KEY ({}, <column>) REFERENCES {1} ({2}, <key>);",
                    child.name,
                    parent.name,
                    quote_ident(&parent.column),
                    child.name,
                    quote_ident(&child.column)
                ),
            ));
        }
    }

    // Views over tenant tables.
    let views: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT DISTINCT qualified, relkind, invoker FROM (
           SELECT quote_ident(vn.nspname) || '.' || quote_ident(v.relname) AS qualified,
                  v.relkind::text AS relkind,
                  coalesce(v.reloptions::text[] && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1'], false) AS invoker
             FROM pg_class v
             JOIN pg_namespace vn ON vn.oid = v.relnamespace
             JOIN pg_rewrite rw ON rw.ev_class = v.oid
             JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                             AND d.refclassid = 'pg_class'::regclass
            WHERE v.relkind IN ('v', 'm') AND d.refobjid = ANY ($1::int8[]::oid[])) s
          ORDER BY qualified",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await?;
    for (view, kind, invoker) in views {
        if kind == "m" {
            findings.push(finding(
                Severity::Error,
                "materialized_view_over_tenant_table",
                view.clone(),
                "a materialized view stores every organization's rows and has no Row-Level Security",
                format!("DROP MATERIALIZED VIEW {view};  -- or keep it out of the application role's reach"),
            ));
        } else if !invoker {
            findings.push(finding(
                Severity::Error,
                "view_not_security_invoker",
                view.clone(),
                "a view runs with its owner's rights: the policies apply to the owner, not to the querying role (a superuser or BYPASSRLS owner sees everything)",
                format!("ALTER VIEW {view} SET (security_invoker = true);"),
            ));
        }
    }

    // Functions.
    let functions: Vec<(String, bool, Option<Vec<String>>, String)> = sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' ||
                pg_get_function_identity_arguments(p.oid) || ')',
                p.prosecdef, p.proconfig, p.prosrc
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = ANY ($1) AND p.prokind IN ('f', 'p')",
    )
    .bind(&schemas)
    .fetch_all(&mut *conn)
    .await?;
    for (function, definer, config, source) in functions {
        let pinned = config
            .as_ref()
            .is_some_and(|c| c.iter().any(|s| s.starts_with("search_path=")));
        if definer && !pinned {
            findings.push(finding(
                Severity::Error,
                "definer_without_search_path",
                format!("function {function}"),
                "a SECURITY DEFINER function without a pinned search_path resolves names through the caller's search path: the caller can substitute objects and run them with the owner's rights",
                format!("ALTER FUNCTION {function} SET search_path = pg_catalog, <schema>, pg_temp;"),
            ));
        }
        if sets_at_session_level(&source, &options.setting) {
            findings.push(finding(
                Severity::Error,
                "session_level_setting",
                format!("function {function}"),
                "it sets the tenant setting at session level: on a pooled connection the next borrower inherits the organization",
                format!(
                    "-- use set_config('{}', ..., true) (transaction-local), or let TenantPool set it",
                    options.setting
                ),
            ));
        }
    }

    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(Report {
        tables: tables.iter().map(|t| t.name.clone()).collect(),
        findings,
    })
}

fn finding(
    severity: Severity,
    code: &'static str,
    object: String,
    why: &str,
    fix: String,
) -> Finding {
    Finding {
        severity,
        code,
        object,
        why: why.to_owned(),
        fix,
    }
}

/// Strips balanced outer parentheses.
fn strip_parens(mut s: &str) -> &str {
    loop {
        let t = s.trim();
        if t.starts_with('(') && t.ends_with(')') && closes_at_end(t) {
            s = &t[1..t.len() - 1];
        } else {
            return t;
        }
    }
}

/// Whether the parenthesis opening `s` closes at its last character.
fn closes_at_end(s: &str) -> bool {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return i == s.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

/// Splits `s` on a top-level boolean operator (` AND ` / ` OR `), outside parentheses and
/// quotes.
fn split_top(s: &str, op: &str) -> Vec<String> {
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && s[i..].starts_with(op) => {
                parts.push(s[start..i].trim().to_owned());
                i += op.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(s[start..].trim().to_owned());
    parts
}

/// The settings `current_setting` reads in `s`, each with whether `missing_ok` is true.
fn settings_read(s: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("current_setting(") {
        rest = &rest[at + "current_setting(".len()..];
        let Some(name) = rest.strip_prefix('\'').and_then(|r| r.split('\'').next()) else {
            continue;
        };
        let args_end = rest.find(')').unwrap_or(rest.len());
        let args = &rest[..args_end];
        let missing_ok = args.split(',').nth(1).is_some_and(|a| a.trim() == "true");
        found.push((name.to_owned(), missing_ok));
    }
    found
}

/// Function names called in an expression (identifiers followed by `(`), minus SQL's own.
fn called_functions(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    for i in 0..chars.len() {
        if chars[i] != '(' || i == 0 {
            continue;
        }
        let end = i;
        let mut start = i;
        while start > 0 && (chars[start - 1].is_ascii_alphanumeric() || chars[start - 1] == '_') {
            start -= 1;
        }
        if start < end {
            let name: String = chars[start..end].iter().collect();
            let keyword = matches!(
                name.to_ascii_uppercase().as_str(),
                "IN" | "ANY" | "ALL" | "ARRAY" | "EXISTS" | "AND" | "OR" | "NOT" | "SELECT"
            );
            if !keyword {
                names.push(name);
            }
        }
    }
    names
}

/// Findings for one policy expression on a table whose tenant column is `column`.
fn check_policy_expr(
    expr: &str,
    column: &str,
    setting: &str,
    bodies: &HashMap<String, String>,
) -> Vec<(Severity, &'static str, &'static str)> {
    let mut out = Vec::new();
    let col = quote_ident(column);
    let conjuncts = split_top(strip_parens(expr), " AND ");
    let comparison = conjuncts.iter().find_map(|c| {
        let c = strip_parens(c);
        let (l, r) = c.split_once(" = ")?;
        if l.trim() == col {
            Some(r.trim().to_owned())
        } else if r.trim() == col {
            Some(l.trim().to_owned())
        } else {
            None
        }
    });
    let lower = expr.to_ascii_lowercase();
    if lower.contains("coalesce(") {
        out.push((
            Severity::Error,
            "policy_fails_open",
            "COALESCE in a policy substitutes a default when the context is missing: no context must mean no rows, never a default organization's (or all) rows",
        ));
    }
    let cast = [format!("({col})::"), format!("{col}::")]
        .iter()
        .any(|p| expr.contains(p.as_str()));
    let Some(rhs) = comparison else {
        if cast {
            out.push((
                Severity::Warning,
                "policy_casts_column",
                "the policy casts the tenant column (e.g. ::text): the index on it cannot serve the policy, so every query scans the table",
            ));
        } else if split_top(strip_parens(expr), " OR ").len() > 1 {
            out.push((
                Severity::Error,
                "policy_fails_open",
                "the tenant comparison sits under a top-level OR: rows of other organizations pass whenever the other branch is true",
            ));
        } else {
            out.push((
                Severity::Error,
                "policy_fails_open",
                "the policy does not compare the bare tenant column with the current organization: it does not isolate by organization",
            ));
        }
        return out;
    };
    if !rhs.starts_with("( SELECT ") && !rhs.starts_with("(SELECT ") {
        out.push((
            Severity::Warning,
            "policy_per_row_function",
            "the current organization is computed per row, not once per statement: wrap it as (SELECT tenancy_current_org_id()) so the planner evaluates it once and compares the bare indexed column with a constant",
        ));
    }
    let mut read = settings_read(&rhs);
    for f in called_functions(&rhs) {
        if let Some(body) = bodies.get(&f) {
            read.extend(settings_read(body));
        }
    }
    if read.is_empty() || !read.iter().any(|(name, _)| name == setting) {
        out.push((
            Severity::Error,
            "policy_other_setting",
            "the policy does not read the configured tenant setting: the context TenantPool sets is not what it compares with",
        ));
    } else if read.iter().any(|(name, ok)| name == setting && !ok) {
        out.push((
            Severity::Warning,
            "policy_setting_not_missing_ok",
            "current_setting without missing_ok (true) raises an error when no context is set instead of returning no rows",
        ));
    }
    out
}

/// Whether a function body sets `setting` at session level (`set_config(..., false)`, or `SET`
/// without `LOCAL`).
fn sets_at_session_level(source: &str, setting: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    let name = setting.to_ascii_lowercase();
    let quoted = format!("'{name}'");
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("set_config(") {
        rest = &rest[at + "set_config(".len()..];
        let call = rest.split(')').next().unwrap_or("");
        if call.trim_start().starts_with(&quoted)
            && call.rsplit(',').next().is_some_and(|a| a.trim() == "false")
        {
            return true;
        }
    }
    lower.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| w[0] == "set" && (w[1] == name || w[1].trim_matches('"') == name))
            || words
                .windows(3)
                .any(|w| w[0] == "set" && w[1] == "session" && w[2].trim_matches('"') == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(expr: &str) -> Vec<&'static str> {
        let mut bodies = HashMap::new();
        bodies.insert(
            "tenancy_current_org_id".to_owned(),
            "SELECT NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::uuid"
                .to_owned(),
        );
        check_policy_expr(expr, "organization_id", "app.current_org_id", &bodies)
            .into_iter()
            .map(|f| f.1)
            .collect()
    }

    #[test]
    fn policy_expressions_as_postgres_deparses_them() {
        let shipped =
            "(organization_id = ( SELECT tenancy_current_org_id() AS tenancy_current_org_id))";
        assert!(codes(shipped).is_empty());
        let with_role = "((organization_id = ( SELECT tenancy_current_org_id() AS tenancy_current_org_id)) AND ((( SELECT tenancy_current_org_role() AS tenancy_current_org_role) = 'owner'::text) OR (user_id = 'x'::text)))";
        assert!(codes(with_role).is_empty());
        assert_eq!(
            codes("((organization_id)::text = current_setting('app.current_org_id'::text))"),
            ["policy_casts_column"]
        );
        assert_eq!(
            codes("((organization_id = tenancy_current_org_id()) OR (x = 1))"),
            ["policy_fails_open"]
        );
        assert_eq!(
            codes(
                "(organization_id = (COALESCE(current_setting('app.current_org_id'::text, true), '0'::text))::uuid)"
            ),
            ["policy_fails_open", "policy_per_row_function"]
        );
        assert_eq!(
            codes("(organization_id = tenancy_current_org_id())"),
            ["policy_per_row_function"]
        );
        assert_eq!(
            codes(
                "(organization_id = ( SELECT (current_setting('app.tenant'::text, true))::uuid AS current_setting))"
            ),
            ["policy_other_setting"]
        );
        assert_eq!(
            codes(
                "(organization_id = ( SELECT (current_setting('app.current_org_id'::text))::uuid AS current_setting))"
            ),
            ["policy_setting_not_missing_ok"]
        );
        assert_eq!(codes("(user_id = 'x'::text)"), ["policy_fails_open"]);
    }

    #[test]
    fn session_level_settings_are_recognized() {
        let s = "app.current_org_id";
        assert!(sets_at_session_level(
            "PERFORM set_config('app.current_org_id', x, false);",
            s
        ));
        assert!(!sets_at_session_level(
            "PERFORM set_config('app.current_org_id', x, true);",
            s
        ));
        assert!(sets_at_session_level("SET app.current_org_id = 'x';", s));
        assert!(sets_at_session_level(
            "set session app.current_org_id to 'x';",
            s
        ));
        assert!(!sets_at_session_level(
            "SET LOCAL app.current_org_id = 'x';",
            s
        ));
        assert!(!sets_at_session_level(
            "PERFORM set_config('app.other', x, false);",
            s
        ));
    }

    #[test]
    fn identifiers_are_quoted_when_needed_and_policy_sql_has_every_part() {
        assert_eq!(quote_ident("notes"), "notes");
        assert_eq!(quote_ident("Notes"), "\"Notes\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
        let sql = policy_sql("app.Notes", "org");
        assert!(sql.contains("ALTER TABLE app.\"Notes\" FORCE ROW LEVEL SECURITY"));
        assert!(sql.contains("WITH CHECK (org = (SELECT tenancy_current_org_id()))"));
        assert!(sql.contains("CREATE INDEX IF NOT EXISTS \"Notes_org_idx\""));
    }
}
