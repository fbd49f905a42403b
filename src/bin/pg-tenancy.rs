//! `pg-tenancy`: the catalog audit and the policy generator on the command line (feature `cli`).
//!
//! ```text
//! pg-tenancy audit <DATABASE_URL> [--json] [--column C] [--setting S] [--table T]... [--schema S]... [--allow-statistics]
//! pg-tenancy policy <TABLE> [--column C] [--grant ROLE]... [--hide-statistics COLUMN]... [--write-permission P] [--database-url URL] [--citus]
//! ```
//!
//! `audit` exits 0 without errors (warnings allowed), 1 with errors, 2 when it could not
//! connect or read the catalog (or the arguments are wrong).

use std::process::ExitCode;
use std::time::Duration;

use pg_tenancy::audit::{AuditOptions, PolicyOptions, audit, policy_sql_for_with, policy_sql_with};
use sqlx::ConnectOptions;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const USAGE: &str = "usage:
  pg-tenancy audit <DATABASE_URL> [--json] [--column C] [--setting S] [--table T[:column]]... [--schema S]... [--allow-statistics]
  pg-tenancy policy <TABLE> [--column C] [--grant ROLE]... [--hide-statistics COLUMN]... [--write-permission P] [--database-url URL] [--citus]

audit: findings on the tenant tables, policies, role, views and functions of the database
  (exit 0: no error, 1: errors, 2: could not connect). Connect as your application's role.
  --allow-statistics: do not report text columns whose planner statistics EXPLAIN reveals.
policy: the SQL that makes TABLE a tenant table like pg-tenancy's own, ending with the GRANT of
  SELECT, INSERT, UPDATE, DELETE to each --grant ROLE (your application's role; without one, a
  comment says which GRANT to run); each --hide-statistics COLUMN turns that column's planner
  statistics off (SET STATISTICS 0: EXPLAIN's estimates would show other organizations'
  values); with --database-url, also the composite keys for foreign keys that cross
  organizations; with --citus, the policy in the form Citus accepts (the bare
  tenancy_current_org_id()) and the table distributed (tenancy_distribute, src/citus.sql);
  with --write-permission P (e.g. org:invoices:write), members read the table and only a unit
  whose role grants P writes it (tenancy_current_org_id_with('P')).";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("audit") => run_audit(&args[1..]).await,
        Some("policy") => run_policy(&args[1..]).await,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage("a command: audit or policy"),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("pg-tenancy: expected {problem}\n\n{USAGE}");
    ExitCode::from(2)
}

/// Splits `args` into positionals, flags and `--name value` options.
struct Args {
    positional: Vec<String>,
    flags: Vec<String>,
    options: Vec<(String, String)>,
}

fn parse(args: &[String], flags: &[&str], options: &[&str]) -> Result<Args, String> {
    let mut out = Args {
        positional: Vec::new(),
        flags: Vec::new(),
        options: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if flags.contains(&arg.as_str()) {
            out.flags.push(arg.clone());
        } else if options.contains(&arg.as_str()) {
            let value = it.next().ok_or(format!("a value after {arg}"))?;
            out.options.push((arg.clone(), value.clone()));
        } else if arg.starts_with("--") {
            return Err(format!("a known option, not {arg}"));
        } else {
            out.positional.push(arg.clone());
        }
    }
    Ok(out)
}

impl Args {
    fn all(&self, name: &str) -> Vec<String> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn last(&self, name: &str) -> Option<String> {
        self.all(name).pop()
    }
}

async fn connect(url: &str) -> Result<sqlx::PgPool, ExitCode> {
    // The URL may hold a password: never print it. sqlx's errors do not carry it.
    let fail = |e: sqlx::Error| {
        eprintln!("pg-tenancy: could not connect to the database: {e}");
        ExitCode::from(2)
    };
    let options: PgConnectOptions = url.parse().map_err(fail)?;
    // One connection first, for the server's own reason when it fails (a pool only says that
    // it timed out).
    let probe = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .map_err(|_| fail(sqlx::Error::PoolTimedOut))?
        .map_err(fail)?;
    probe.close().await.map_err(fail)?;
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(fail)
}

async fn run_audit(args: &[String]) -> ExitCode {
    let args = match parse(
        args,
        &["--json", "--allow-statistics"],
        &["--column", "--setting", "--table", "--schema"],
    ) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let [url] = args.positional.as_slice() else {
        return usage("one DATABASE_URL");
    };
    let mut options = AuditOptions::default();
    if let Some(column) = args.last("--column") {
        options = options.with_column(column);
    }
    if let Some(setting) = args.last("--setting") {
        options.setting = setting;
    }
    for table in args.all("--table") {
        options = options.with_table(table);
    }
    if args.flags.iter().any(|f| f == "--allow-statistics") {
        options = options.without_column_statistics();
    }
    let schemas = args.all("--schema");
    if !schemas.is_empty() {
        options = options.with_schemas(schemas);
    }
    let pool = match connect(url).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let report = match audit(&pool, &options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pg-tenancy: could not read the catalog: {e}");
            return ExitCode::from(2);
        }
    };
    if args.flags.iter().any(|f| f == "--json") {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("pg-tenancy: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{report}");
    }
    if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run_policy(args: &[String]) -> ExitCode {
    let args = match parse(
        args,
        &["--citus"],
        &[
            "--column",
            "--grant",
            "--hide-statistics",
            "--write-permission",
            "--database-url",
        ],
    ) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let [table] = args.positional.as_slice() else {
        return usage("one TABLE");
    };
    let mut options = PolicyOptions::default();
    if let Some(column) = args.last("--column") {
        options = options.with_column(column);
    }
    for role in args.all("--grant") {
        options = options.with_grant(role);
    }
    for column in args.all("--hide-statistics") {
        options = options.with_hidden_statistics(column);
    }
    if args.flags.iter().any(|f| f == "--citus") {
        options = options.for_citus();
    }
    if let Some(permission) = args.last("--write-permission") {
        // What the database stores as one permission: no comma, no white space.
        if permission.is_empty()
            || permission.contains(',')
            || permission.contains(char::is_whitespace)
        {
            return usage("--write-permission: a permission key without commas or white space");
        }
        options = options.with_write_permission(permission);
    }
    let sql = match args.last("--database-url") {
        None => policy_sql_with(table, &options),
        Some(url) => {
            let pool = match connect(&url).await {
                Ok(p) => p,
                Err(code) => return code,
            };
            match policy_sql_for_with(&pool, table, &options).await {
                Ok(sql) => sql,
                Err(e) => {
                    eprintln!("pg-tenancy: could not read the catalog: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    print!("{sql}");
    ExitCode::SUCCESS
}
