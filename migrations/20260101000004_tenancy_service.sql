-- pg-tenancy 4/7: the service path (webhook sync, background jobs) and its bookkeeping.
--
-- Provides `tenancy_enter_service` (only a member of the NOLOGIN role `tenancy_service` may
-- enter), the service policies on `organizations` and `organization_members` (a service unit
-- acts inside the organization it entered), the triggers that keep the identity provider's
-- columns of those two tables, a deleted organization's deletion and a provider
-- organization's slug to the service path (TNC11), and the webhook bookkeeping
-- tables, which only service units can read or write: `membership_tombstones` (identity-
-- provider memberships that were deleted: a late event for one is ignored) and
-- `webhook_deliveries` (deliveries already applied, for idempotency). Old rows of both are
-- pruned across organizations by a service unit entered without one.
--
-- Needs the role `tenancy_service` (create it once per cluster, as a role with CREATEROLE):
--     CREATE ROLE tenancy_service NOLOGIN;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_service') THEN
        RAISE EXCEPTION 'tenancy: the role tenancy_service does not exist'
            USING HINT = 'As a role with CREATEROLE: CREATE ROLE tenancy_service NOLOGIN; '
                         'then GRANT tenancy_service TO <the login your webhook sync and jobs use>.';
    END IF;
END
$$;

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

-- A service unit: only a member of `tenancy_service` may enter. With an organization, the
-- service policies admit that organization's rows; without one (NULL), only the cross-
-- organization maintenance policies apply (pruning webhook deliveries). In hardened mode it
-- is sealed by tenancy_seal_service.
CREATE PROCEDURE tenancy_enter_service(org uuid, session_now text, session_expected text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
DECLARE
    ignored text;
BEGIN
    IF NOT pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE') THEN
        RAISE EXCEPTION 'tenancy: % is not a member of tenancy_service', current_user
            USING ERRCODE = 'TNC07';
    END IF;
    PERFORM tenancy_assert_clean_session(session_now, session_expected);
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', coalesce(org::text, ''), true)
            || pg_catalog.set_config('app.current_user_id', '', true)
            || pg_catalog.set_config('app.current_org_role', 'service', true)
            || pg_catalog.set_config('app.current_permissions', '', true)
            || coalesce(tenancy_propagate_context()::text, '');
    PERFORM tenancy_seal_service();
END
$$;
-- (tenancy_seal_service, which also checks the login, is in ..._06_tenancy_hardened.sql.)

-- Purging a deleted organization's data (ServicePool::purge_organization), in a service unit
-- entered for `org`: marks it deleted if it is not yet (its members go), then deletes its rows
-- from every table whose single-column foreign key references `organizations` (their own
-- foreign keys cascade further), except the sync's membership tombstones. The organization's
-- row stays, as its id's tombstone: nobody can bootstrap the id again. Returns the number of
-- rows deleted from those tables.
CREATE FUNCTION tenancy_purge_organization(org uuid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    t     record;
    n     bigint;
    total bigint := 0;
BEGIN
    IF tenancy_current_org_role() IS DISTINCT FROM 'service'
       OR tenancy_current_org_id() IS DISTINCT FROM org THEN
        RAISE EXCEPTION 'tenancy: purging needs a service unit entered for this organization'
            USING ERRCODE = 'TNC07';
    END IF;
    UPDATE organizations SET deleted_at = pg_catalog.now() WHERE id = org AND deleted_at IS NULL;
    FOR t IN SELECT tbl, col FROM tenancy_purge_targets() ORDER BY tbl LOOP
        EXECUTE pg_catalog.format('DELETE FROM %s WHERE %I = $1', t.tbl, t.col) USING org;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Service policies: a service unit acts inside the organization it entered, on every table the
-- sync writes. Permissive, so they add to the member policies for members of tenancy_service.

CREATE POLICY service_unit ON organizations TO tenancy_service
    USING      (id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_unit ON organization_members TO tenancy_service
    USING      (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');

-- The identity provider's columns belong to the service path, and so do a deleted
-- organization's deletion and a provider organization's slug (below). A request unit
-- (whatever its role is granted on the tables) may not write them: an admin who rewrote their own
-- membership's `external_id` or `external_*_at` would no longer match the provider's removal
-- of it, and an `external_updated_at` far in the future would make every later event of the
-- organization look older. Inserted rows leave them unset; updates leave them unchanged.
-- Not SECURITY DEFINER: `current_user` is the role running the statement.
CREATE FUNCTION tenancy_guard_organization_columns() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE') THEN
        RETURN NEW;
    END IF;
    IF (TG_OP = 'INSERT'
        AND (NEW.external_id IS NOT NULL OR NEW.external_updated_at IS NOT NULL
             OR NEW.external_source <> 0 OR NEW.created_by IS NOT NULL))
       OR (TG_OP = 'UPDATE'
           AND (NEW.external_id, NEW.external_updated_at, NEW.external_source, NEW.created_by)
               IS DISTINCT FROM
               (OLD.external_id, OLD.external_updated_at, OLD.external_source, OLD.created_by)) THEN
        RAISE EXCEPTION 'tenancy: the identity provider''s columns of organizations are the service path''s'
            USING ERRCODE = 'TNC11';
    END IF;
    -- A deletion is final for request units: an owner who marked the organization deleted
    -- cannot clear or move the mark (it would be live again with no members and no removal
    -- records, and removed members could claim their way back).
    IF TG_OP = 'UPDATE' AND OLD.deleted_at IS NOT NULL
       AND NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
        RAISE EXCEPTION 'tenancy: a deleted organization stays deleted (only the service path changes its deletion)'
            USING ERRCODE = 'TNC11';
    END IF;
    -- The slug of an identity provider's organization is the sync's (it follows the
    -- provider's): a request unit renaming it could take a slug the provider gives another
    -- organization later, and each 23505 it met would tell it that another organization holds
    -- the slug it tried.
    IF TG_OP = 'UPDATE' AND OLD.external_id IS NOT NULL AND NEW.slug IS DISTINCT FROM OLD.slug THEN
        RAISE EXCEPTION 'tenancy: the slug of an identity provider''s organization is the service path''s'
            USING ERRCODE = 'TNC11';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tenancy_guard_provider_columns
    BEFORE INSERT OR UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION tenancy_guard_organization_columns();

CREATE FUNCTION tenancy_guard_membership_columns() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE') THEN
        RETURN NEW;
    END IF;
    -- `role_key` too: it names the permissions the member's units get (an admin who set their
    -- own to a custom role's key would grant themselves that role's permissions). A request
    -- unit that changes the role clears it: a member demoted in the application keeps no
    -- permission of the provider's role it had (its `role` names them from then on).
    IF TG_OP = 'UPDATE' AND NEW.role IS DISTINCT FROM OLD.role
       AND NEW.role_key IS NOT DISTINCT FROM OLD.role_key THEN
        NEW.role_key := NULL;
    END IF;
    -- Nor does a membership change hands: an admin who moved a member's row onto their own
    -- user would take its role key and permissions (and the member's removal would go
    -- unrecorded). Re-assigning is a DELETE and an INSERT. (Moving it to another organization
    -- is the policies' to refuse.)
    IF TG_OP = 'UPDATE' AND NEW.user_id IS DISTINCT FROM OLD.user_id THEN
        RAISE EXCEPTION 'tenancy: a membership does not change users (delete it and add the other user)'
            USING ERRCODE = 'TNC11';
    END IF;
    IF (TG_OP = 'INSERT'
        AND (NEW.external_id IS NOT NULL OR NEW.external_created_at IS NOT NULL
             OR NEW.external_updated_at IS NOT NULL OR NEW.role_key IS NOT NULL))
       OR (TG_OP = 'UPDATE'
           AND ((NEW.external_id, NEW.external_created_at, NEW.external_updated_at)
                IS DISTINCT FROM
                (OLD.external_id, OLD.external_created_at, OLD.external_updated_at)
                OR (NEW.role_key IS DISTINCT FROM OLD.role_key
                    AND (NEW.role_key IS NOT NULL OR NEW.role IS NOT DISTINCT FROM OLD.role)))) THEN
        RAISE EXCEPTION 'tenancy: the identity provider''s columns of organization_members are the service path''s'
            USING ERRCODE = 'TNC11';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tenancy_guard_provider_columns
    BEFORE INSERT OR UPDATE ON organization_members
    FOR EACH ROW EXECUTE FUNCTION tenancy_guard_membership_columns();

-- Identity-provider memberships that were deleted: a late `created` or `updated` for one of
-- them is ignored. Kept while the provider may still deliver such an event (Svix retries a
-- delivery for about a day and a half; `ClerkSync::prune` keeps a month by default), and
-- deleted with the organization.
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

-- The webhook bookkeeping belongs to service units alone: no policy admits anyone else.
CREATE POLICY service_unit ON membership_tombstones TO tenancy_service
    USING      (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_unit ON webhook_deliveries TO tenancy_service
    USING      (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');
-- Pruning old tombstones and delivery records, across organizations: a service unit entered
-- without an organization may read and delete them, nothing else.
CREATE POLICY service_prune_read ON membership_tombstones FOR SELECT TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_prune_delete ON membership_tombstones FOR DELETE TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
COMMENT ON POLICY service_prune_read ON membership_tombstones IS
    'tenancy-audit: allow. Service units entered without an organization read old tombstones to prune them (tenancy_service only).';
COMMENT ON POLICY service_prune_delete ON membership_tombstones IS
    'tenancy-audit: allow. Service units entered without an organization delete old tombstones (tenancy_service only).';
CREATE POLICY service_prune_read ON webhook_deliveries FOR SELECT TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_prune_delete ON webhook_deliveries FOR DELETE TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
COMMENT ON POLICY service_prune_read ON webhook_deliveries IS
    'tenancy-audit: allow. Service units entered without an organization read old delivery records to prune them (tenancy_service only).';
COMMENT ON POLICY service_prune_delete ON webhook_deliveries IS
    'tenancy-audit: allow. Service units entered without an organization delete old delivery records (tenancy_service only).';

-- The tables a purge deletes from, and their organization column: every table whose
-- single-column foreign key references `organizations`, except the sync's membership
-- tombstones (and the memberships, which marking the organization deleted removes).
-- src/citus.sql replaces tenancy_purge_targets() to add the distributed tenant tables, whose
-- foreign key to `organizations` tenancy_distribute drops.
CREATE FUNCTION tenancy_purge_fk_targets(OUT tbl regclass, OUT col name) RETURNS SETOF record
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
    AS $$ SELECT c.conrelid::regclass, a.attname
            FROM pg_catalog.pg_constraint c
            JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
           WHERE c.contype = 'f' AND c.confrelid = 'organizations'::regclass
             AND pg_catalog.cardinality(c.conkey) = 1
             AND c.conrelid NOT IN ('membership_tombstones'::regclass, 'organization_members'::regclass) $$;
CREATE FUNCTION tenancy_purge_targets(OUT tbl regclass, OUT col name) RETURNS SETOF record
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
    AS $$ SELECT tbl, col FROM tenancy_purge_fk_targets() $$;

SELECT tenancy_pin_search_path();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
