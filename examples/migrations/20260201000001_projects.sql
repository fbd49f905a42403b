-- The example application's own tenant table, as a user of pg-tenancy adds one: its own
-- migration, applied beside the crate's (the crate records its migrations in
-- `_pg_tenancy_migrations`, this one in sqlx's `_sqlx_migrations`). The RLS and statistics
-- statements are what `pg-tenancy policy projects --hide-statistics name` prints (its index
-- line is skipped: the primary key leads with organization_id). The example apps, the
-- quickstart, the tests and the benchmarks all use this table.
--
-- The GRANT to the application role (and to the service login, for service units) is not
-- here: role names belong to the deployment. Run it once where the roles are known, e.g.
--     GRANT SELECT, INSERT, UPDATE, DELETE ON projects TO app, tenancy_sync;

CREATE TABLE projects (
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    name            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- organization_id first: the primary key's index serves the policy.
    PRIMARY KEY (organization_id, id)
);

ALTER TABLE "projects" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "projects" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "projects"
    USING      ("organization_id" = (SELECT tenancy_current_org_id()))
    WITH CHECK ("organization_id" = (SELECT tenancy_current_org_id()));
-- No planner statistics on project names: EXPLAIN's estimates would show other
-- organizations' names (docs/security.md, "What PostgreSQL itself leaves open").
ALTER TABLE "projects" ALTER COLUMN "name" SET STATISTICS 0;
