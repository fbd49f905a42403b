-- Identity-provider sync (Clerk webhooks): versions for order tolerance, tombstones, and the
-- processed-delivery log for idempotency. All tenant tables; same policy shape as the core.

-- The identity provider's `updated_at` (unix ms) of the state each row holds: an older event
-- never overwrites newer state. NULL for rows the application created itself.
ALTER TABLE organizations ADD COLUMN external_updated_at bigint;
-- Where that state came from, to break ties at equal `updated_at`: 2 = an organization event,
-- 1 = the organization embedded in a membership event (a snapshot), 0 = the application.
ALTER TABLE organizations ADD COLUMN external_source smallint NOT NULL DEFAULT 0;
-- The identity provider's creator of the organization (Clerk: `created_by`).
ALTER TABLE organizations ADD COLUMN created_by text;

-- Which identity-provider membership (Clerk: `orgmem_...`) a row mirrors, when it was created
-- and last updated there (unix ms). A user removed and invited again gets a new membership id:
-- the newer membership wins, and a removed one never comes back.
ALTER TABLE organization_members ADD COLUMN external_id text;
ALTER TABLE organization_members ADD COLUMN external_created_at bigint;
ALTER TABLE organization_members ADD COLUMN external_updated_at bigint;

-- Identity-provider memberships that were deleted: a late `created` or `updated` for one of
-- them is ignored.
CREATE TABLE membership_tombstones (
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    external_id     text        NOT NULL,
    user_id         text        NOT NULL,
    deleted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, external_id)
);

-- Webhook deliveries already applied, keyed by the message id (`svix-id`, stable across
-- retries), recorded in the same transaction as their effect. No foreign key: a delivery is
-- recorded before the organization it creates exists.
CREATE TABLE webhook_deliveries (
    organization_id uuid        NOT NULL,
    message_id      text        NOT NULL,
    event_type      text        NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, message_id)
);
CREATE INDEX webhook_deliveries_received_at_idx ON webhook_deliveries (received_at);

ALTER TABLE membership_tombstones ENABLE ROW LEVEL SECURITY;
ALTER TABLE membership_tombstones FORCE  ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries    ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries    FORCE  ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON membership_tombstones
    USING      (organization_id = (SELECT tenancy_current_org_id()))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()));

CREATE POLICY tenant_isolation ON webhook_deliveries
    USING      (organization_id = (SELECT tenancy_current_org_id()))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()));

-- Pruning old delivery records across organizations without a bypass role: a transaction that
-- sets `app.webhook_prune_before` may DELETE (and only delete) records received before it.
-- `ClerkSync::prune_deliveries` issues a bare `DELETE FROM webhook_deliveries`, so this policy
-- alone decides which rows go. Unset, it matches nothing.
CREATE FUNCTION tenancy_webhook_prune_before() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.webhook_prune_before', true), '')::timestamptz $$;

CREATE POLICY prune_expired ON webhook_deliveries FOR DELETE
    USING (received_at < (SELECT tenancy_webhook_prune_before()));
