-- Policies that deliberately do not compare the tenant column, marked for `tenancy::audit`
-- (which skips a policy whose comment contains "tenancy-audit: allow"), each with its reason.

COMMENT ON POLICY own_memberships ON organization_members IS
    'tenancy-audit: allow. The organization switcher: with no organization chosen, a user reads their own memberships (SELECT only; never inside an organization).';
COMMENT ON POLICY own_organizations ON organizations IS
    'tenancy-audit: allow. The organization switcher: the organizations of the user''s own memberships (SELECT only; never inside an organization).';
COMMENT ON POLICY service_prune_read ON webhook_deliveries IS
    'tenancy-audit: allow. Service units entered without an organization read old delivery records to prune them (tenancy_service only).';
COMMENT ON POLICY service_prune_delete ON webhook_deliveries IS
    'tenancy-audit: allow. Service units entered without an organization delete old delivery records (tenancy_service only).';
