-- The example application's permission-guarded table: every member of the organization reads
-- its invoices; writing one needs the permission `org:invoices:write`, which the member's role
-- must grant at the moment of the write, as the database holds it (Clerk's role and permission
-- webhooks keep the definitions; `ServicePool::set_role_permissions` sets them without Clerk).
-- The RLS statements are what `pg-tenancy policy invoices --write-permission
-- org:invoices:write --hide-statistics number` prints (its index line is skipped: the primary
-- key leads with organization_id). The GRANT is the deployment's, as for `projects`.

CREATE TABLE invoices (
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    number          text        NOT NULL,
    amount_cents    bigint      NOT NULL CHECK (amount_cents >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

ALTER TABLE "invoices" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "invoices" FORCE ROW LEVEL SECURITY;
-- The organization's members read; writing needs the permission the policies name (a
-- role grants it: the Clerk sync, or ServicePool::set_role_permissions).
CREATE POLICY tenant_read ON "invoices" FOR SELECT
    USING      ("organization_id" = (SELECT tenancy_current_org_id()));
CREATE POLICY permitted_insert ON "invoices" FOR INSERT
    WITH CHECK ("organization_id" = (SELECT tenancy_current_org_id_with('org:invoices:write')));
CREATE POLICY permitted_update ON "invoices" FOR UPDATE
    USING      ("organization_id" = (SELECT tenancy_current_org_id_with('org:invoices:write')))
    WITH CHECK ("organization_id" = (SELECT tenancy_current_org_id_with('org:invoices:write')));
CREATE POLICY permitted_delete ON "invoices" FOR DELETE
    USING      ("organization_id" = (SELECT tenancy_current_org_id_with('org:invoices:write')));
-- No planner statistics (EXPLAIN's estimates would show other organizations' values);
-- on a table already analyzed, also ALTER COLUMN ... TYPE <its type> to drop the old ones.
ALTER TABLE "invoices" ALTER COLUMN "number" SET STATISTICS 0;
