-- pg-tenancy 3/7: what each role may do to organizations and memberships, enforced by
-- policies and triggers.
--
-- Provides the policies of `organizations` and `organization_members` for request units:
-- members read their organization; admins update it and add, change and remove members and
-- admins; only an owner grants, changes or removes an owner or marks the organization deleted
-- (nobody hard-deletes it); anyone may leave; the organization switcher reads a user's own memberships while
-- no organization is chosen. And the triggers: a deleted organization keeps no memberships
-- (`tenancy_forget_members`), and a live organization keeps an owner (`tenancy_keep_an_owner`,
-- which counts the owners through `tenancy_lock_owners` whatever role the unit acts with).
-- The tenant predicate is always the bare indexed column against the per-statement constant;
-- role conditions are per-statement constants too.

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

-- Organization switcher: with a user set and no organization chosen, the user's own
-- memberships and their organizations. SELECT only; never applies inside an organization.
CREATE POLICY own_memberships ON organization_members FOR SELECT
    USING (user_id = (SELECT tenancy_switcher_user_id()));
-- The user's organizations come as one array, computed once per statement and only in the
-- switcher (the first condition is a per-statement constant, false inside an organization).
-- An array rather than `id IN (SELECT ...)`: a sub-select is a subplan with its own policies
-- that every statement reading organizations initializes, the entries' membership lookup
-- included, even where it never runs (it cost that lookup about 15% of a unit's server
-- instructions, docs/benchmarks.md). Runs with the caller's rights: own_memberships above is
-- what lets it see the user's memberships.
CREATE FUNCTION tenancy_switcher_organizations() RETURNS uuid[]
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
    AS $$ SELECT pg_catalog.array_agg(m.organization_id) FROM organization_members m
           WHERE m.user_id = tenancy_switcher_user_id() $$;
CREATE POLICY own_organizations ON organizations FOR SELECT
    USING ((SELECT tenancy_switcher_user_id()) IS NOT NULL
           AND id = ANY ((SELECT tenancy_switcher_organizations())::uuid[]));

CREATE POLICY tenant_read ON organizations FOR SELECT
    USING (id = (SELECT tenancy_current_org_id()));
-- Bootstrap: only the unit tenancy_enter_new_organization opened acts as owner of an
-- organization that has no row yet.
CREATE POLICY owner_insert ON organizations FOR INSERT
    WITH CHECK (id = (SELECT tenancy_current_org_id())
                AND (SELECT tenancy_current_org_role()) = 'owner');
-- Admins update; only an owner may mark the organization deleted.
CREATE POLICY admin_update ON organizations FOR UPDATE
    USING      (id = (SELECT tenancy_current_org_id())
                AND (SELECT tenancy_current_org_role()) IN ('admin', 'owner'))
    WITH CHECK (id = (SELECT tenancy_current_org_id())
                AND (SELECT tenancy_current_org_role()) IN ('admin', 'owner')
                AND (deleted_at IS NULL OR (SELECT tenancy_current_org_role()) = 'owner'));
-- Nobody deletes an organization's row, service units and the owner included: deleting means
-- marking it deleted (above), and its row stays as the id's tombstone, so that bootstrap
-- refuses the id forever (TNC04) and a late identity-provider event finds it deleted. Purging
-- its data is a service operation that keeps the row (tenancy_purge_organization).
CREATE POLICY no_hard_delete ON organizations AS RESTRICTIVE FOR DELETE
    USING (false);

CREATE POLICY tenant_read ON organization_members FOR SELECT
    USING (organization_id = (SELECT tenancy_current_org_id()));
-- Admins add members and admins; only an owner grants, changes or removes an owner.
CREATE POLICY admin_insert ON organization_members FOR INSERT
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id())
                AND (SELECT tenancy_current_org_role()) IN ('admin', 'owner')
                AND (role <> 'owner' OR (SELECT tenancy_current_org_role()) = 'owner'));
CREATE POLICY admin_update ON organization_members FOR UPDATE
    USING      (organization_id = (SELECT tenancy_current_org_id())
                AND (SELECT tenancy_current_org_role()) IN ('admin', 'owner')
                AND (role <> 'owner' OR (SELECT tenancy_current_org_role()) = 'owner'))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id())
                AND (SELECT tenancy_current_org_role()) IN ('admin', 'owner')
                AND (role <> 'owner' OR (SELECT tenancy_current_org_role()) = 'owner'));
-- Admins remove members (an owner removes owners); anyone may leave.
CREATE POLICY admin_delete_or_leave ON organization_members FOR DELETE
    USING (organization_id = (SELECT tenancy_current_org_id())
           AND (((SELECT tenancy_current_org_role()) IN ('admin', 'owner')
                 AND (role <> 'owner' OR (SELECT tenancy_current_org_role()) = 'owner'))
                OR user_id = (SELECT tenancy_current_user_id())));

-- Policies that deliberately do not compare the tenant column are marked for the audit
-- (`pg_tenancy::audit` skips a policy whose comment contains "tenancy-audit: allow"), each with
-- its reason.
COMMENT ON POLICY own_memberships ON organization_members IS
    'tenancy-audit: allow. The organization switcher: with no organization chosen, a user reads their own memberships (SELECT only; never inside an organization).';
COMMENT ON POLICY own_organizations ON organizations IS
    'tenancy-audit: allow. The organization switcher: the organizations of the user''s own memberships (SELECT only; never inside an organization).';

-- A deleted organization keeps no memberships: marking it deleted (an owner's UPDATE, or the
-- sync) removes them. The entries also refuse a deleted organization themselves.
CREATE FUNCTION tenancy_forget_members() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    -- The statement's context must still be this organization: SQL that changes it inside the
    -- statement (`RETURNING set_config(...)` runs before AFTER triggers) would make this
    -- DELETE see nothing and leave the members in place.
    IF tenancy_current_org_id() IS DISTINCT FROM NEW.id THEN
        RAISE EXCEPTION 'tenancy: the context changed inside the statement' USING ERRCODE = 'TNC10';
    END IF;
    DELETE FROM organization_members WHERE organization_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenancy_forget_members
    AFTER UPDATE OF deleted_at ON organizations
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION tenancy_forget_members();

-- The owners of the statement's own organization, locked FOR UPDATE, for tenancy_keep_an_owner:
-- true when one remains. A row lock applies the UPDATE policy, which shows owner rows to a
-- unit acting as owner only: an owner whose unit entered with a lower role (leaving is
-- allowed to anyone) would find none. So for its one statement this acts as 'owner' (sealed
-- anew in hardened mode, as tenancy_member_role does for its lookup) and then puts the role
-- and the seal back. Only for the organization the unit is in (TNC10 otherwise, a context
-- changed inside the statement included), and it answers only whether an owner remains,
-- which the unit's own SELECT already shows. SECURITY DEFINER for tenancy_seal; the pinned
-- search_path keeps temporary objects out.
CREATE FUNCTION tenancy_lock_owners(org uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    role_before text := pg_catalog.current_setting('app.current_org_role', true);
    seal_before text := pg_catalog.current_setting('app.context_seal', true);
    hardened    boolean := EXISTS (SELECT 1 FROM tenancy_context_key);
    found_owner boolean;
    ignored     text;
BEGIN
    -- Only inside a trigger (tenancy_keep_an_owner's): called by SQL in a unit, it would lock
    -- the owners' rows for the rest of that unit, which its own role cannot.
    IF pg_catalog.pg_trigger_depth() = 0 THEN
        RAISE EXCEPTION 'tenancy: tenancy_lock_owners is the last-owner trigger''s'
            USING ERRCODE = '42501';
    END IF;
    IF org IS NULL OR tenancy_current_org_id() IS DISTINCT FROM org THEN
        RAISE EXCEPTION 'tenancy: the context changed inside the statement' USING ERRCODE = 'TNC10';
    END IF;
    ignored := pg_catalog.set_config('app.current_org_role', 'owner', true);
    IF hardened THEN
        PERFORM tenancy_seal(pg_catalog.current_setting('app.context_expiry')::bigint);
    END IF;
    PERFORM 1 FROM organization_members
      WHERE organization_id = org AND role = 'owner'
      FOR UPDATE;
    found_owner := FOUND;
    ignored := pg_catalog.set_config('app.current_org_role', coalesce(role_before, ''), true);
    IF hardened THEN
        ignored := pg_catalog.set_config('app.context_seal', coalesce(seal_before, ''), true);
    END IF;
    RETURN found_owner;
END
$$;
-- (tenancy_context_key and tenancy_seal are hardened mode's, in ..._06_tenancy_hardened.sql;
-- PL/pgSQL resolves them when called.)

-- The last owner of a live organization cannot leave or be demoted. Row locks on the remaining
-- owners serialize concurrent demotions (one of two racing transactions fails); they are
-- taken by tenancy_lock_owners, so that they see every owner whatever role the unit acts
-- with. Service units (the identity provider is the source of truth) and organizations being
-- deleted are exempt.
CREATE FUNCTION tenancy_keep_an_owner() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.role = 'owner' AND NEW.organization_id = OLD.organization_id THEN
        RETURN NULL;
    END IF;
    -- The checks below read the tables under the statement's context: it must still be this
    -- organization's (see tenancy_forget_members).
    IF tenancy_current_org_id() IS DISTINCT FROM OLD.organization_id THEN
        RAISE EXCEPTION 'tenancy: the context changed inside the statement' USING ERRCODE = 'TNC10';
    END IF;
    IF pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE') THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM organizations
                    WHERE id = OLD.organization_id AND deleted_at IS NULL) THEN
        RETURN NULL;
    END IF;
    IF NOT tenancy_lock_owners(OLD.organization_id) THEN
        RAISE EXCEPTION 'tenancy: an organization keeps at least one owner' USING ERRCODE = 'TNC03';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenancy_keep_an_owner
    AFTER UPDATE OR DELETE ON organization_members
    FOR EACH ROW WHEN (OLD.role = 'owner')
    EXECUTE FUNCTION tenancy_keep_an_owner();

SELECT tenancy_pin_search_path();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
