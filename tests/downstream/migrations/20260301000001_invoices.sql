-- The user's own tenant table, in the user's own migrations (recorded in sqlx's
-- `_sqlx_migrations`; pg-tenancy records its own in `_pg_tenancy_migrations`). The RLS
-- statements are what `pg-tenancy policy invoices` prints.
CREATE TABLE invoices (
    organization_id uuid    NOT NULL REFERENCES organizations (id),
    id              bigint  GENERATED ALWAYS AS IDENTITY,
    amount_cents    bigint  NOT NULL,
    PRIMARY KEY (organization_id, id)
);

ALTER TABLE "invoices" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "invoices" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "invoices"
    USING      ("organization_id" = (SELECT tenancy_current_org_id()))
    WITH CHECK ("organization_id" = (SELECT tenancy_current_org_id()));
