-- pg-tenancy 5/7: membership claims. Memberships a verified session token claims before the
-- identity provider's webhook arrives
-- (`web::Tenancy::with_token_memberships`): when may a token's "member of X" be applied?
--
-- Never for a membership that ended after the token was issued: a removed member's token stays
-- valid until it expires, and must not bring the membership back. And never after a removal
-- made in the application: the identity provider still lists that member, so every new token
-- would claim the membership again. Every removal is recorded here with its time, whoever
-- removes, by triggers: a member's row deleted (an admin's DELETE, a member leaving, the
-- webhook sync, an organization's deletion), or the webhook sync's tombstone of a provider
-- membership (also when the removal arrives before the membership it ends). A service unit
-- applying a token's claim reads them.
--
-- A removal is `local` when a request unit made it (the application's decision), otherwise
-- it is the provider's. A claim is refused after any local removal, and after a provider's
-- removal recorded at or after the token's `iat`. A local removal stands until the provider
-- confirms a membership created after it (the sync then deletes the record) or removes the
-- membership itself (the record becomes the provider's). Lifetimes: a provider's removal only
-- matters while a token issued before it may still be valid (minutes), so `ClerkSync::prune`
-- deletes those older than a horizon (a day by default); a local one lasts as long as it
-- stands; all of an organization's go when it is marked deleted (claims for a deleted
-- organization are refused anyway).

-- No foreign key: a removal may be recorded before the organization's row exists.
CREATE TABLE membership_removals (
    organization_id uuid        NOT NULL,
    user_id         text        NOT NULL,
    removed_at      timestamptz NOT NULL DEFAULT now(),
    local           boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX membership_removals_removed_at_idx ON membership_removals (removed_at) WHERE NOT local;

ALTER TABLE membership_removals ENABLE ROW LEVEL SECURITY;
ALTER TABLE membership_removals FORCE  ROW LEVEL SECURITY;

-- The triggers below run as this table's owner, under these policies: inside the organization
-- whose membership ends, they may record (or refresh) a removal at the current time, and forget
-- the removals of an organization that is deleted. Request roles are granted nothing on this
-- table; the service login's grants (README set-up) add: a service unit forgets a removal of its
-- organization (the provider confirmed a newer membership), and one entered without an
-- organization prunes the provider's old removals.
CREATE POLICY removal_read ON membership_removals FOR SELECT
    USING (organization_id = (SELECT tenancy_current_org_id()));
-- A removal recorded outside a service unit is local: request code (whatever it is granted)
-- cannot pass its own removal off as the provider's, which a newer token would override.
CREATE POLICY removal_record ON membership_removals FOR INSERT
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND removed_at = now()
                AND local = ((SELECT tenancy_current_org_role()) IS DISTINCT FROM 'service'));
CREATE POLICY removal_refresh ON membership_removals FOR UPDATE
    USING      (organization_id = (SELECT tenancy_current_org_id()))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND removed_at = now()
                AND local = ((SELECT tenancy_current_org_role()) IS DISTINCT FROM 'service'));
CREATE POLICY removal_forget ON membership_removals FOR DELETE
    USING (organization_id = (SELECT tenancy_current_org_id())
           AND NOT EXISTS (SELECT 1 FROM organizations o
                            WHERE o.id = organization_id AND o.deleted_at IS NULL));
CREATE POLICY service_unit ON membership_removals FOR DELETE TO tenancy_service
    USING (organization_id = (SELECT tenancy_current_org_id())
           AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_prune_read ON membership_removals FOR SELECT TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_prune_delete ON membership_removals FOR DELETE TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service'
           AND NOT local);
COMMENT ON POLICY service_prune_read ON membership_removals IS
    'tenancy-audit: allow. Service units entered without an organization read old removals to prune them (tenancy_service only).';
COMMENT ON POLICY service_prune_delete ON membership_removals IS
    'tenancy-audit: allow. Service units entered without an organization delete the identity provider''s old removals (tenancy_service only).';

-- Functions below capture a search_path (SET search_path FROM CURRENT), which the end of this
-- file turns into pg_catalog first, then the schema the migrations run in, and pg_temp last
-- (tenancy_pin_search_path): neither an operator or function created in that schema (by a
-- role with CREATE there) can shadow a built-in one a SECURITY DEFINER function uses, nor a
-- temporary table a table they read. (The session's path during the file keeps the schema
-- first: it is where the file creates its objects.) Session-level because `psql -f` runs each statement in its own transaction;
-- the caller's value is saved here and restored at the end of the file, so a pooled connection
-- that ran the migration goes back as it came.
SELECT pg_catalog.set_config('tenancy.migration_search_path',
                             pg_catalog.current_setting('search_path'), false);
SELECT pg_catalog.set_config('search_path',
    pg_catalog.format('%I, pg_catalog, pg_temp', pg_catalog.current_schema()), false);

-- A member's row deleted: local when a request unit deleted it, the provider's when a
-- service unit did (the sync applying the provider's removal, or a service job).
CREATE FUNCTION tenancy_record_removal() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
BEGIN
    INSERT INTO membership_removals (organization_id, user_id, removed_at, local)
    VALUES (OLD.organization_id, OLD.user_id, now(),
            tenancy_current_org_role() IS DISTINCT FROM 'service')
    ON CONFLICT (organization_id, user_id)
    DO UPDATE SET removed_at = EXCLUDED.removed_at, local = EXCLUDED.local;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy_record_removal() FROM PUBLIC;

CREATE TRIGGER tenancy_record_removal
    AFTER DELETE ON organization_members
    FOR EACH ROW EXECUTE FUNCTION tenancy_record_removal();

-- The provider said a membership ended (the sync writes its tombstone), whether or not a row
-- was deleted: a removal delivered before the membership's creation is recorded too. At the
-- delivery's time, which is at or after the provider's: a token issued before the removal is
-- refused, whatever the order of events.
CREATE FUNCTION tenancy_record_provider_removal() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
BEGIN
    INSERT INTO membership_removals (organization_id, user_id, removed_at, local)
    VALUES (NEW.organization_id, NEW.user_id, now(), false)
    ON CONFLICT (organization_id, user_id)
    DO UPDATE SET removed_at = EXCLUDED.removed_at, local = false;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy_record_provider_removal() FROM PUBLIC;

CREATE TRIGGER tenancy_record_provider_removal
    AFTER INSERT ON membership_tombstones
    FOR EACH ROW EXECUTE FUNCTION tenancy_record_provider_removal();

-- An organization marked deleted: its removals no longer matter (claims for it are refused).
-- Fires after tenancy_forget_members (triggers fire in name order), whose deletions record
-- removals first.
CREATE FUNCTION tenancy_forget_removals() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF tenancy_current_org_id() IS DISTINCT FROM NEW.id THEN
        RAISE EXCEPTION 'tenancy: the context changed inside the statement' USING ERRCODE = 'TNC10';
    END IF;
    DELETE FROM membership_removals WHERE organization_id = NEW.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy_forget_removals() FROM PUBLIC;

CREATE TRIGGER tenancy_forget_removals
    AFTER UPDATE OF deleted_at ON organizations
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION tenancy_forget_removals();

SELECT tenancy_pin_search_path();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
