//! `pg_tenancy::audit`, the policy generator and the isolation kit: the shipped schema produces no
//! finding; one deliberately broken schema per finding produces exactly that finding; the
//! article's schema produces what it deserves; generated SQL passes the audit and the kit.

use pg_tenancy::audit::{
    AuditOptions, PolicyOptions, Severity, audit, policy_sql, policy_sql_for, policy_sql_with,
};
use pg_tenancy::testing::{
    TableUnderTest, TestCluster, TestDatabase, assert_audit_clean, check_isolation,
};
use pg_tenancy::{Error, ErrorKind, Role, TenantPool};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

use crate::common::{As, both_roles, seed_org};

async fn connect(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap()
}

/// Runs `sql` (several statements) as the database owner.
async fn as_owner(db: &TestDatabase, sql: &str) {
    let pool = connect(db.owner_options()).await;
    pool.execute(AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

/// The generator's SQL for a user's table whose text column `body` holds secrets.
fn hiding_body(table: &str) -> String {
    policy_sql_with(
        table,
        &PolicyOptions::default().with_hidden_statistics("body"),
    )
}

/// The user-style table, made tenant-safe by the generator (its `body` without planner
/// statistics), granted to the application role.
async fn with_notes() -> TestDatabase {
    let db = crate::common::database().await;
    let app = db.app_options().get_username().to_owned();
    as_owner(
        &db,
        &format!(
            "CREATE TABLE notes (organization_id uuid NOT NULL REFERENCES organizations (id),
                                 id uuid NOT NULL DEFAULT gen_random_uuid(), body text,
                                 PRIMARY KEY (organization_id, id));
             {}
             GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {app};",
            hiding_body("notes")
        ),
    )
    .await;
    db
}

async fn app_report(db: &TestDatabase) -> pg_tenancy::audit::Report {
    let pool = connect(db.app_options()).await;
    let report = audit(&pool, &AuditOptions::default()).await.unwrap();
    pool.close().await;
    report
}

#[tokio::test]
async fn the_shipped_schema_has_no_finding_as_the_application_role() {
    let db = crate::common::database().await;
    let report = app_report(&db).await;
    assert_eq!(report.findings, vec![], "{report}");
    for table in [
        "public.organizations",
        "public.organization_members",
        "public.projects",
        "public.membership_tombstones",
        "public.webhook_deliveries",
        "public.membership_removals",
    ] {
        assert!(report.tables.iter().any(|t| t == table), "{table} audited");
    }
    // As the owner: what being the owner means. It reads hardened mode's key (the error), and
    // it may query the service-only tables, whose text columns (files 4 and 5) have
    // statistics; every table the application role can query has none on its text columns.
    let owner = connect(db.owner_options()).await;
    let report = audit(&owner, &AuditOptions::default()).await.unwrap();
    assert_eq!(
        report.errors().map(|f| f.code).collect::<Vec<_>>(),
        ["context_key_readable"],
        "{report}"
    );
    let (statistics, others): (Vec<_>, Vec<_>) = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .partition(|f| f.code == "column_statistics_visible");
    assert_eq!(
        others.iter().map(|f| f.code).collect::<Vec<_>>(),
        ["role_owns_tenant_tables", "role_can_create_temp"],
        "{report}"
    );
    for f in statistics {
        assert!(
            [
                "public.organizations",
                "public.organization_members",
                "public.projects"
            ]
            .iter()
            .all(|t| !f.object.ends_with(&format!(" of {t}"))),
            "{report}"
        );
    }
}

#[tokio::test]
async fn generated_policy_sql_passes_the_audit() {
    let db = with_notes().await;
    let pool = connect(db.app_options()).await;
    let report = assert_audit_clean(&pool, &AuditOptions::default()).await;
    assert_eq!(report.findings, vec![], "{report}");
    assert!(report.tables.contains(&"public.notes".to_owned()));
}

/// Each case: SQL run as the owner on the clean `notes` schema, and the one finding it must
/// produce (audited as the application role).
const BROKEN: &[(&str, &str)] = &[
    ("ALTER TABLE notes DISABLE ROW LEVEL SECURITY", "rls_disabled"),
    ("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY", "rls_not_forced"),
    ("DROP POLICY tenant_isolation ON notes", "no_policy"),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes USING (organization_id = (SELECT tenancy_current_org_id()))",
        "policy_without_with_check",
    ),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes
           USING (organization_id::text = (SELECT current_setting('app.current_org_id', true)))
           WITH CHECK (organization_id::text = (SELECT current_setting('app.current_org_id', true)))",
        "policy_casts_column",
    ),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes
           USING (organization_id = (SELECT coalesce(tenancy_current_org_id(), organization_id)))
           WITH CHECK (organization_id = (SELECT tenancy_current_org_id()))",
        "policy_fails_open",
    ),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes
           USING (organization_id = (SELECT tenancy_current_org_id()) OR body = 'public')
           WITH CHECK (organization_id = (SELECT tenancy_current_org_id()))",
        "policy_fails_open",
    ),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes
           USING (organization_id = (SELECT current_setting('app.tenant', true)::uuid))
           WITH CHECK (organization_id = (SELECT current_setting('app.tenant', true)::uuid))",
        "policy_other_setting",
    ),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes
           USING (organization_id = (SELECT current_setting('app.current_org_id')::uuid))
           WITH CHECK (organization_id = (SELECT current_setting('app.current_org_id')::uuid))",
        "policy_setting_not_missing_ok",
    ),
    (
        "DROP POLICY tenant_isolation ON notes;
         CREATE POLICY p ON notes USING (organization_id = tenancy_current_org_id())
           WITH CHECK (organization_id = tenancy_current_org_id())",
        "policy_per_row_function",
    ),
    (
        "ALTER TABLE notes DROP CONSTRAINT notes_pkey; DROP INDEX notes_organization_id_idx;
         ALTER TABLE notes ADD PRIMARY KEY (id, organization_id)",
        "no_tenant_index",
    ),
    ("CREATE UNIQUE INDEX notes_body_key ON notes (body)", "unique_without_tenant"),
    ("ALTER TABLE notes ADD COLUMN title text", "column_statistics_visible"),
    (
        "CREATE TABLE tags (organization_id uuid NOT NULL, id uuid NOT NULL, note_org uuid,
                            note_id uuid, PRIMARY KEY (organization_id, id),
                            FOREIGN KEY (note_id, note_org) REFERENCES notes (id, organization_id));
         ALTER TABLE tags ENABLE ROW LEVEL SECURITY; ALTER TABLE tags FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON tags
           USING (organization_id = (SELECT tenancy_current_org_id()))
           WITH CHECK (organization_id = (SELECT tenancy_current_org_id()))",
        "foreign_key_crosses_tenants",
    ),
    ("CREATE VIEW notes_view AS SELECT * FROM notes", "view_not_security_invoker"),
    (
        "CREATE MATERIALIZED VIEW notes_copy AS SELECT * FROM notes",
        "materialized_view_over_tenant_table",
    ),
    (
        "CREATE FUNCTION peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER
           AS 'SELECT count(*) FROM notes'",
        "definer_without_search_path",
    ),
    (
        "CREATE FUNCTION enter_org(o uuid) RETURNS void LANGUAGE plpgsql AS
           $$BEGIN PERFORM set_config('app.current_org_id', o::text, false); END$$",
        "session_level_setting",
    ),
];

#[tokio::test]
async fn one_broken_schema_per_finding_produces_exactly_that_finding() {
    let mut seen = std::collections::HashSet::new();
    for (sql, code) in BROKEN {
        let db = with_notes().await;
        as_owner(&db, sql).await;
        let report = app_report(&db).await;
        assert_eq!(report.codes(), [*code], "{sql}\n{report}");
        let finding = &report.findings[0];
        assert!(!finding.why.is_empty() && !finding.fix.is_empty());
        seen.insert(*code);
    }
    assert_eq!(seen.len(), 17, "every schema finding has a case");
}

/// A login role with `attributes`, granted the tables, connecting to `db`.
async fn role_with(db: &TestDatabase, name: &str, attributes: &str) -> PgPool {
    let cluster = TestCluster::global().unwrap();
    let admin = connect(cluster.admin_options().database(db.name())).await;
    let role = format!("{}_{name}", db.name());
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN {attributes} PASSWORD 'pw_{role}';
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
        )))
        .await
        .unwrap();
    admin.close().await;
    connect(
        db.app_options()
            .username(&role)
            .password(&format!("pw_{role}")),
    )
    .await
}

#[tokio::test]
async fn the_connecting_role_is_audited() {
    let db = with_notes().await;
    let errors = |r: &pg_tenancy::audit::Report| {
        r.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.code)
            .collect::<Vec<_>>()
    };
    // Both hold SELECT on every table (`role_with`), and bypass the policies: the key too.
    let bypass = role_with(&db, "bypass", "NOSUPERUSER BYPASSRLS").await;
    let report = audit(&bypass, &AuditOptions::default()).await.unwrap();
    assert_eq!(
        report.codes(),
        ["role_bypassrls", "context_key_readable"],
        "{report}"
    );
    let superuser = role_with(&db, "super", "SUPERUSER NOBYPASSRLS").await;
    let report = audit(&superuser, &AuditOptions::default()).await.unwrap();
    assert_eq!(
        errors(&report),
        ["role_superuser", "context_key_readable"],
        "{report}"
    );
    // TEMP granted to the application role.
    let cluster = TestCluster::global().unwrap();
    let admin = connect(cluster.admin_options()).await;
    admin
        .execute(AssertSqlSafe(format!(
            "GRANT TEMPORARY ON DATABASE {} TO {}",
            db.name(),
            db.app_options().get_username()
        )))
        .await
        .unwrap();
    assert_eq!(app_report(&db).await.codes(), ["role_can_create_temp"]);
    // The owner without TEMP: owning is the finding, and the key it owns (statistics aside:
    // see the shipped-schema test).
    as_owner(
        &db,
        &format!(
            "REVOKE TEMPORARY ON DATABASE {0} FROM PUBLIC, {1}",
            db.name(),
            db.owner_options().get_username()
        ),
    )
    .await;
    let owner = connect(db.owner_options()).await;
    let report = audit(&owner, &AuditOptions::default().without_column_statistics())
        .await
        .unwrap();
    assert_eq!(
        report.codes(),
        ["context_key_readable", "role_owns_tenant_tables"],
        "{report}"
    );
}

#[tokio::test]
async fn the_articles_schema_gets_the_findings_it_deserves() {
    // The article's tables and policies: a text-cast comparison, no FORCE, no WITH CHECK,
    // `organizations` without RLS, keys without the tenant column; the app connects as the
    // tables' owner.
    let db = TestDatabase::create_empty().await.unwrap();
    as_owner(
        &db,
        "CREATE TABLE organizations (id uuid PRIMARY KEY, name text NOT NULL);
         CREATE TABLE organization_members (id uuid PRIMARY KEY,
             organization_id uuid NOT NULL REFERENCES organizations (id),
             user_id text NOT NULL, role text NOT NULL, UNIQUE (organization_id, user_id));
         CREATE TABLE projects (id uuid PRIMARY KEY,
             organization_id uuid NOT NULL REFERENCES organizations (id), name text NOT NULL);
         ALTER TABLE organization_members ENABLE ROW LEVEL SECURITY;
         ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON organization_members
             USING (organization_id::text = current_setting('app.current_org_id'));
         CREATE POLICY tenant_isolation ON projects
             USING (organization_id::text = current_setting('app.current_org_id'));",
    )
    .await;
    let owner = connect(db.owner_options()).await;
    let report = audit(&owner, &AuditOptions::default()).await.unwrap();
    let has = |code: &str, object: &str| {
        report
            .findings
            .iter()
            .any(|f| f.code == code && f.object.contains(object))
    };
    for (code, object) in [
        ("rls_disabled", "public.organizations"),
        ("rls_not_forced", "public.organization_members"),
        ("rls_not_forced", "public.projects"),
        ("policy_without_with_check", "on public.projects"),
        (
            "policy_without_with_check",
            "on public.organization_members",
        ),
        ("policy_casts_column", "on public.projects"),
        ("policy_casts_column", "on public.organization_members"),
        ("no_tenant_index", "public.projects"),
        ("unique_without_tenant", "projects_pkey"),
        ("unique_without_tenant", "organization_members_pkey"),
        ("role_owns_tenant_tables", "role"),
    ] {
        assert!(has(code, object), "{code} on {object}:\n{report}");
    }
    assert!(report.has_errors());
    // The same schema refuses to serve.
    let refused = TenantPool::dangerously_skip_role_check(owner.clone())
        .audited(&AuditOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&refused, Error::AuditFailed(r) if r.has_errors()));
    assert_eq!(refused.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn a_clean_schema_serves_and_a_broken_one_does_not() {
    let db = with_notes().await;
    let pool = db.app_pool(2).await.unwrap();
    let pool = pool.audited(&AuditOptions::default()).await.unwrap();
    as_owner(&db, "ALTER TABLE notes NO FORCE ROW LEVEL SECURITY").await;
    let e = pool.audited(&AuditOptions::default()).await.unwrap_err();
    let Error::AuditFailed(report) = &e else {
        panic!("{e}")
    };
    assert_eq!(report.codes(), ["rls_not_forced"]);
    assert!(
        e.to_string()
            .contains("ALTER TABLE public.notes FORCE ROW LEVEL SECURITY")
    );
}

#[tokio::test]
async fn the_generator_makes_crossing_foreign_keys_composite() {
    let db = with_notes().await;
    let app = db.app_options().get_username().to_owned();
    as_owner(
        &db,
        &format!(
            "CREATE TABLE comments (organization_id uuid NOT NULL, id uuid NOT NULL,
                                    note_id uuid NOT NULL, PRIMARY KEY (organization_id, id));
             ALTER TABLE notes ADD UNIQUE (id);
             ALTER TABLE comments ADD CONSTRAINT comments_note_fk FOREIGN KEY (note_id) REFERENCES notes (id);
             GRANT SELECT, INSERT, UPDATE, DELETE ON comments TO {app};"
        ),
    )
    .await;
    let owner = connect(db.owner_options()).await;
    let sql = policy_sql_for(&owner, "comments", "organization_id")
        .await
        .unwrap();
    assert!(
        sql.contains(
            "FOREIGN KEY (organization_id, note_id) REFERENCES public.notes (organization_id, id)"
        ),
        "{sql}"
    );
    owner
        .execute(AssertSqlSafe(format!(
            "{sql} ALTER TABLE notes DROP CONSTRAINT notes_id_key;"
        )))
        .await
        .unwrap();
    let report = app_report(&db).await;
    assert_eq!(report.findings, vec![], "{report}");
}

/// `projects` for the isolation kit.
pub(crate) fn projects_under_test() -> TableUnderTest {
    TableUnderTest::new(
        "projects",
        "organization_id",
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'kit')",
    )
}

both_roles!(the_isolation_kit_passes_on_shipped_and_user_tables_and_fails_without_force);

async fn the_isolation_kit_passes_on_shipped_and_user_tables_and_fails_without_force(role: As) {
    let db = with_notes().await;
    let pool = match role {
        As::App => db.app_pool(3).await.unwrap(),
        As::Owner => db.owner_pool(3).await.unwrap(),
    };
    let a = seed_org(&pool, "alpha").await;
    let b = seed_org(&pool, "beta").await;
    let tables = [
        projects_under_test(),
        TableUnderTest::new(
            "organization_members",
            "organization_id",
            "INSERT INTO organization_members (organization_id, user_id, role) \
             VALUES ($1, 'user_kit_' || gen_random_uuid(), 'member')",
        ),
        TableUnderTest::new(
            "public.notes",
            "organization_id",
            "INSERT INTO notes (organization_id, body) VALUES ($1, 'kit')",
        ),
    ];
    for table in &tables {
        let result = check_isolation(&pool, &a.ctx(Role::Owner), &b.ctx(Role::Owner), table).await;
        assert_eq!(result, Ok(()), "{table:?}");
    }
    // The defence removed: without FORCE the owner reads across organizations, and the kit
    // says so (as the application role, ENABLE alone still holds, and the kit still passes).
    as_owner(&db, "ALTER TABLE notes NO FORCE ROW LEVEL SECURITY").await;
    let result = check_isolation(&pool, &a.ctx(Role::Owner), &b.ctx(Role::Owner), &tables[2]).await;
    match role {
        As::Owner => {
            let failures = result.unwrap_err();
            assert!(
                failures.iter().any(|f| f.starts_with("cross-tenant read")),
                "{failures:?}"
            );
        }
        As::App => assert_eq!(result, Ok(())),
    }
    // Two contexts of one organization are refused outright.
    let same = check_isolation(&pool, &a.ctx(Role::Owner), &a.ctx(Role::Admin), &tables[0]).await;
    assert!(same.is_err());
}

#[tokio::test]
async fn the_command_line_reports_exits_and_speaks_json() {
    let bin = env!("CARGO_BIN_EXE_pg-tenancy");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let db = with_notes().await;
    let url = db.app_url();
    let (code, out, _) = run(&["audit", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("pg-tenancy audit: 8 tenant table(s), 0 error(s), 0 warning(s)"),
        "{out}"
    );
    as_owner(&db, "ALTER TABLE notes NO FORCE ROW LEVEL SECURITY").await;
    let (code, out, _) = run(&["audit", &url, "--json"]);
    assert_eq!(code, Some(1), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["findings"][0]["code"], "rls_not_forced");
    assert_eq!(json["findings"][0]["severity"], "error");
    // Could not connect: 2, and the password is not printed.
    let wrong = url.replace(db.name(), "no_such_database");
    let (code, out, err) = run(&["audit", &wrong]);
    assert_eq!(code, Some(2), "{out}{err}");
    let password = wrong.split(':').nth(2).unwrap().split('@').next().unwrap();
    assert!(!err.contains(password) && !out.contains(password));
    // The generator.
    let (code, out, _) = run(&["policy", "invoices", "--column", "tenant_id"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, policy_sql("invoices", "tenant_id"));
    assert_eq!(run(&["frobnicate"]).0, Some(2));
}

/// The audit's cost on a schema of a few hundred tenant tables: correct at that size (no
/// finding), and its time printed (`cargo test --test it audit::at_scale -- --nocapture`).
#[tokio::test]
async fn at_scale_three_hundred_tenant_tables_audit_clean() {
    let db = crate::common::database().await;
    let mut sql = String::new();
    for i in 0..300 {
        sql.push_str(&format!(
            "CREATE TABLE t{i} (organization_id uuid NOT NULL, id uuid NOT NULL, body text,
                                PRIMARY KEY (organization_id, id));\n{}",
            hiding_body(&format!("t{i}"))
        ));
    }
    as_owner(&db, &sql).await;
    let pool = connect(db.app_options()).await;
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let report = audit(&pool, &AuditOptions::default()).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(report.tables.len(), 307);
        assert_eq!(report.findings, vec![], "{report}");
    }
    times.sort();
    println!(
        "audit of 307 tenant tables: median {:?} (min {:?}, max {:?})",
        times[2], times[0], times[4]
    );
}

#[tokio::test]
async fn the_isolation_kit_passes_on_the_service_tables_through_service_units() {
    let db = crate::common::database().await;
    let service = db.service_pool(3).await.unwrap();
    // Organizations the service units create themselves (the sync's path), so that
    // `organizations` is covered too.
    let (a, b) = (
        pg_tenancy::OrgId::from_external_id("org_kit_a"),
        pg_tenancy::OrgId::from_external_id("org_kit_b"),
    );
    let tables = [
        TableUnderTest::new(
            "organizations",
            "id",
            "INSERT INTO organizations (id, name) VALUES ($1, 'kit')",
        ),
        TableUnderTest::new(
            "membership_tombstones",
            "organization_id",
            "INSERT INTO membership_tombstones (organization_id, external_id, user_id) \
             VALUES ($1, 'orgmem_' || gen_random_uuid(), 'user_kit')",
        ),
        TableUnderTest::new(
            "webhook_deliveries",
            "organization_id",
            "INSERT INTO webhook_deliveries (organization_id, message_id, event_type) \
             VALUES ($1, 'msg_' || gen_random_uuid(), 'kit')",
        ),
        projects_under_test(),
    ];
    for table in &tables {
        let result = pg_tenancy::testing::check_service_isolation(&service, a, b, table).await;
        assert_eq!(result, Ok(()), "{table:?}");
    }
}

/// Whether the application role reads a row of hardened mode's key table (`None`: refused).
async fn app_reads_the_key(db: &TestDatabase) -> Option<i64> {
    let pool = connect(db.app_options()).await;
    let n = sqlx::query_scalar("SELECT count(*) FROM tenancy_context_key")
        .fetch_one(&pool)
        .await;
    pool.close().await;
    match n {
        Ok(n) => Some(n),
        Err(e) => {
            let code = e.as_database_error().and_then(|d| d.code());
            assert_eq!(code.as_deref(), Some("42501"), "{e}");
            None
        }
    }
}

#[tokio::test]
async fn the_hardened_key_in_reach_of_the_application_role_is_an_error() {
    let db = with_notes().await;
    let key = pg_tenancy::ContextKey::generate();
    as_owner(&db, &key.enable_sql()).await;
    // Without a grant: out of reach, and no finding.
    assert_eq!(app_reads_the_key(&db).await, None);
    assert_eq!(app_report(&db).await.findings, vec![]);
    // The usual shortcut, on a key table without Row-Level Security (as it was shipped before
    // this check): the application role reads the key, and the audit says so.
    as_owner(
        &db,
        &format!(
            "ALTER TABLE tenancy_context_key DISABLE ROW LEVEL SECURITY;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {};",
            db.app_role()
        ),
    )
    .await;
    assert_eq!(app_reads_the_key(&db).await, Some(1));
    // (The grant also reaches the service-only tables: their statistics are warnings here.)
    let errors = |r: &pg_tenancy::audit::Report| r.errors().map(|f| f.code).collect::<Vec<_>>();
    let report = app_report(&db).await;
    assert_eq!(errors(&report), ["context_key_readable"], "{report}");
    let fix = &report.findings[0].fix;
    assert!(
        fix.contains("ALTER TABLE public.tenancy_context_key ENABLE ROW LEVEL SECURITY;"),
        "{fix}"
    );
    // Row-Level Security on, no policy, not forced (the owner's functions read it): the grant
    // stays, the key is out of reach, and the finding is gone.
    as_owner(
        &db,
        "ALTER TABLE tenancy_context_key ENABLE ROW LEVEL SECURITY",
    )
    .await;
    assert_eq!(app_reads_the_key(&db).await, Some(0));
    let report = app_report(&db).await;
    assert_eq!(errors(&report), Vec::<&str>::new(), "{report}");
}

#[tokio::test]
async fn text_columns_with_planner_statistics_are_reported_until_hidden_or_allowed() {
    let db = with_notes().await;
    let clean = app_report(&db).await;
    assert_eq!(clean.findings, vec![], "{clean}");
    // A text column with statistics the application role can plan on: the finding. A column
    // of another type is not reported, nor one the role cannot select.
    as_owner(
        &db,
        &format!(
            "ALTER TABLE notes ADD COLUMN title varchar(80), ADD COLUMN pages int;
             CREATE TABLE secrets (organization_id uuid NOT NULL, word text);\n{}",
            policy_sql("secrets", "organization_id")
        ),
    )
    .await;
    let report = app_report(&db).await;
    assert_eq!(report.codes(), ["column_statistics_visible"], "{report}");
    let finding = &report.findings[0];
    assert_eq!(finding.severity, Severity::Warning);
    assert_eq!(finding.object, "column title of public.notes");
    assert!(
        finding
            .fix
            .starts_with("ALTER TABLE public.notes ALTER COLUMN title SET STATISTICS 0;"),
        "{}",
        finding.fix
    );
    // Opted out, by the options or the command line.
    let pool = connect(db.app_options()).await;
    let options = AuditOptions::default().without_column_statistics();
    assert_eq!(audit(&pool, &options).await.unwrap().findings, vec![]);
    let bin = env!("CARGO_BIN_EXE_pg-tenancy");
    let out = std::process::Command::new(bin)
        .args(["audit", &db.app_url(), "--allow-statistics"])
        .output()
        .unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains(", 0 error(s), 0 warning(s)"), "{out}");
    // Opted out for the column, by its comment.
    as_owner(
        &db,
        "COMMENT ON COLUMN notes.title IS 'tenancy-audit: allow. Titles are public.'",
    )
    .await;
    assert_eq!(app_report(&db).await.findings, vec![]);
    // The fix, as printed (after statistics were gathered): applies, and the finding is gone.
    as_owner(&db, "COMMENT ON COLUMN notes.title IS NULL; ANALYZE notes").await;
    let report = app_report(&db).await;
    assert_eq!(report.codes(), ["column_statistics_visible"], "{report}");
    as_owner(&db, &report.findings[0].fix).await;
    assert_eq!(app_report(&db).await.findings, vec![]);
}

/// A role-guarded policy as one per-statement value,
/// `organization_id = (SELECT tenancy_current_org_id_at_least('admin'))`: the audit accepts it,
/// it stays an index condition, an admin reads and writes their organization's rows only, and a
/// member of the same organization reads and writes none (the control: the same member under
/// the plain tenant policy reads them).
#[tokio::test]
async fn a_role_guarded_policy_is_one_value_per_statement() {
    let db = crate::common::database().await;
    let app = db.app_options().get_username().to_owned();
    as_owner(
        &db,
        &format!(
            "CREATE TABLE payroll (organization_id uuid NOT NULL REFERENCES organizations (id),
                                   id uuid NOT NULL DEFAULT gen_random_uuid(),
                                   PRIMARY KEY (organization_id, id));
             ALTER TABLE payroll ENABLE ROW LEVEL SECURITY;
             ALTER TABLE payroll FORCE ROW LEVEL SECURITY;
             CREATE POLICY admins ON payroll
                 USING      (organization_id = (SELECT tenancy_current_org_id_at_least('admin')))
                 WITH CHECK (organization_id = (SELECT tenancy_current_org_id_at_least('admin')));
             GRANT SELECT, INSERT, UPDATE, DELETE ON payroll TO {app};"
        ),
    )
    .await;
    let report = app_report(&db).await;
    assert_eq!(report.findings, vec![], "{report}");
    let pool = TenantPool::new(connect(db.app_options()).await)
        .await
        .unwrap();
    let (a, b) = (
        seed_org(&pool, "alpha").await,
        seed_org(&pool, "beta").await,
    );
    let count = async |ctx: &pg_tenancy::OrgContext, sql: &'static str| {
        pool.with_rls(ctx, async |tx| {
            Ok::<_, Error>(sqlx::query_scalar::<_, i64>(sql).fetch_one(tx).await?)
        })
        .await
    };
    let insert = "WITH i AS (INSERT INTO payroll (organization_id) \
                  VALUES ((SELECT tenancy_current_org_id())) RETURNING 1) SELECT count(*) FROM i";
    for org in [&a, &b] {
        assert_eq!(count(&org.ctx(Role::Admin), insert).await.unwrap(), 1);
    }
    let read = "SELECT count(*) FROM payroll";
    assert_eq!(count(&a.ctx(Role::Owner), read).await.unwrap(), 1);
    assert_eq!(count(&a.ctx(Role::Admin), read).await.unwrap(), 1);
    assert_eq!(count(&a.ctx(Role::Member), read).await.unwrap(), 0);
    let refused = count(&a.ctx(Role::Member), insert).await.unwrap_err();
    assert!(refused.is_rls_violation(), "{refused}");
    // Control: the member reads the rows where the policy has no role guard.
    as_owner(
        &db,
        "ALTER POLICY admins ON payroll USING (organization_id = (SELECT tenancy_current_org_id()))",
    )
    .await;
    assert_eq!(count(&a.ctx(Role::Member), read).await.unwrap(), 1);
    // The guard leaves the tenant comparison an index condition.
    let plan: Vec<String> = pool
        .with_rls(&a.ctx(Role::Admin), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar(
                    "EXPLAIN SELECT * FROM payroll WHERE organization_id = \
                     (SELECT tenancy_current_org_id_at_least('admin'))",
                )
                .fetch_all(tx)
                .await?,
            )
        })
        .await
        .unwrap();
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Cond: (organization_id = ")),
        "{plan:?}"
    );
}
