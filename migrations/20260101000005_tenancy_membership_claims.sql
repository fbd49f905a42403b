-- pg-tenancy 5/6: membership claims. Memberships a verified session token claims before the
-- identity provider's webhook arrives
-- (`web::Tenancy::with_token_memberships`): when may a token's "member of X" be applied?
--
-- Never for a membership that ended after the token was issued: a removed member's token stays
-- valid until it expires, and must not bring the membership back. Every removal (an admin's
-- DELETE, a member leaving, the webhook sync, an organization's deletion) is recorded here with
-- its time, by a trigger, whoever removes; a service unit applying a token's claim reads it.

-- No foreign key: a removal outlives an organization deleted outright (its memberships go with
-- it, each recorded here), so that a token issued before cannot bring the organization back.
CREATE TABLE membership_removals (
    organization_id uuid        NOT NULL,
    user_id         text        NOT NULL,
    removed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);

ALTER TABLE membership_removals ENABLE ROW LEVEL SECURITY;
ALTER TABLE membership_removals FORCE  ROW LEVEL SECURITY;

-- The trigger below runs as this table's owner, under these policies: inside the organization
-- whose membership ends, it may record (or refresh) a removal at the current time, nothing else.
-- No role is granted this table except the service login's SELECT (README set-up).
CREATE POLICY removal_read ON membership_removals FOR SELECT
    USING (organization_id = (SELECT tenancy_current_org_id()));
CREATE POLICY removal_record ON membership_removals FOR INSERT
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND removed_at = now());
CREATE POLICY removal_refresh ON membership_removals FOR UPDATE
    USING      (organization_id = (SELECT tenancy_current_org_id()))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND removed_at = now());

-- Functions below capture this search_path (SET search_path FROM CURRENT): the schema the
-- migrations run in, pg_catalog, and pg_temp last, so that a temporary table can never shadow a
-- table they read. Session-level because `psql -f` runs each statement in its own transaction;
-- the caller's value is saved here and restored at the end of the file, so a pooled connection
-- that ran the migration goes back as it came.
SELECT pg_catalog.set_config('tenancy.migration_search_path',
                             pg_catalog.current_setting('search_path'), false);
SELECT pg_catalog.set_config('search_path',
    pg_catalog.format('%I, pg_catalog, pg_temp', pg_catalog.current_schema()), false);

CREATE FUNCTION tenancy_record_removal() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
BEGIN
    INSERT INTO membership_removals (organization_id, user_id, removed_at)
    VALUES (OLD.organization_id, OLD.user_id, now())
    ON CONFLICT (organization_id, user_id) DO UPDATE SET removed_at = EXCLUDED.removed_at;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy_record_removal() FROM PUBLIC;

CREATE TRIGGER tenancy_record_removal
    AFTER DELETE ON organization_members
    FOR EACH ROW EXECUTE FUNCTION tenancy_record_removal();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
