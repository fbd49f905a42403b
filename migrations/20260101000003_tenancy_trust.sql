-- tenancy trust: the database decides who may act, with which role, and nothing a unit of work
-- leaves on its session carries a context into the next one.
--
-- - Every unit enters through a tenancy_enter* function, in the BEGIN round trip: it checks
--   that the session is clean, that the user is a member of a live organization with at least
--   the claimed role, and sets the context transaction-locally.
-- - The context is bound to its transaction (app.current_unit = transaction_timestamp()): a
--   value left at session level by `set_config(..., false)` is void in every later transaction.
-- - Roles are enforced by policies: members need admin, owners need an owner, the last owner
--   stays; organizations need admin to update and an owner to delete.
-- - Service units (webhook sync, background jobs) run as members of the NOLOGIN role
--   `tenancy_service`, through their own policies; the webhook bookkeeping tables are theirs
--   alone.
-- - Every function pins its name resolution (schema, pg_catalog, pg_temp last).
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

-- Functions created below capture this search_path (SET search_path FROM CURRENT): the schema
-- the migrations run in, pg_catalog, and pg_temp last, so a temporary table can never shadow a
-- table they read. Session-level because `psql -f` runs each statement in its own transaction;
-- the caller's value is saved here and restored at the end of the file, so a pooled connection
-- that ran the migration goes back as it came.
SELECT pg_catalog.set_config('tenancy.migration_search_path',
                             pg_catalog.current_setting('search_path'), false);
SELECT pg_catalog.set_config('search_path',
    pg_catalog.format('%I, pg_catalog, pg_temp', pg_catalog.current_schema()), false);

-- ---------------------------------------------------------------------------------------------
-- The context, as policies read it. Each value counts only inside the transaction that set it.

CREATE OR REPLACE FUNCTION tenancy_current_unit_is_live() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.current_setting('app.current_unit', true)
                 = pg_catalog.transaction_timestamp()::text $$;

-- Writes the four context functions every policy calls, for one mode: in the default mode
-- they read the current unit's settings (inlinable SQL, one InitPlan per statement as
-- `(SELECT f())`); in hardened mode the same, only while the unit's seal holds
-- (tenancy_context_is_sealed, below). Replacing them switches users' own policies written
-- with them too. The owner's alone (tenancy_enable_hardened_mode and _disable_ call it).
--
-- - tenancy_current_org_id(), tenancy_current_user_id();
-- - tenancy_current_org_role(): the role the unit acts with, checked against the membership
--   by the entry (never more than the membership holds, nor than the application claimed);
--   'service' in a service unit; one setting read, no table lookup;
-- - tenancy_switcher_user_id(): the user, only while no organization is chosen (the switcher
--   policies: one InitPlan where `org IS NULL AND user_id = user` needs two).
CREATE FUNCTION tenancy_install_context_functions(hardened boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    s        text := pg_catalog.quote_ident(pg_catalog.current_schema());
    live     text := CASE WHEN hardened THEN 'tenancy_context_is_sealed()'
                          ELSE 'tenancy_current_unit_is_live()' END;
    parallel text := CASE WHEN hardened THEN '' ELSE 'PARALLEL SAFE' END;
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION %1$s.tenancy_current_org_id() RETURNS uuid
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                               THEN NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::uuid END $b$;
        CREATE OR REPLACE FUNCTION %1$s.tenancy_current_user_id() RETURNS text
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                               THEN NULLIF(pg_catalog.current_setting('app.current_user_id', true), '') END $b$;
        CREATE OR REPLACE FUNCTION %1$s.tenancy_current_org_role() RETURNS text
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                               THEN NULLIF(pg_catalog.current_setting('app.current_org_role', true), '') END $b$;
        CREATE OR REPLACE FUNCTION %1$s.tenancy_switcher_user_id() RETURNS text
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                                AND NULLIF(pg_catalog.current_setting('app.current_org_id', true), '') IS NULL
                               THEN NULLIF(pg_catalog.current_setting('app.current_user_id', true), '') END $b$;
    $f$, s, live, parallel);
END
$$;
REVOKE ALL ON FUNCTION tenancy_install_context_functions(boolean) FROM PUBLIC;

SELECT tenancy_install_context_functions(false);

CREATE FUNCTION tenancy_role_rank(role text) RETURNS int
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE role WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'member' THEN 1 END $$;

-- ---------------------------------------------------------------------------------------------
-- Entering a unit: procedures, called as `BEGIN; CALL tenancy_enter(...)` in one round trip
-- (a CALL skips the planner and the row description a SELECT would cost). Raised SQLSTATEs:
--   TNC01 not a member of a live organization     TNC02 role below the required role
--   TNC04 organization already exists (bootstrap)  TNC05 session not clean: close the connection
--   TNC06 wrong entry for this database's mode     TNC07 not a service role

-- A member unit: `member` must be a member of the live organization `org` with at least
-- `required`. The unit then acts as `required` when `act_as_required` (an OrgContext's role:
-- never more than the application claimed), else as the membership's role (with_member).
--
-- First, what a unit may not find on its session: a changed role or search path, or
-- temporary objects (which shadow unqualified table names). TNC05; the pool closes such a
-- connection. SQL-level prepared statements (which can replace a driver's cached statement)
-- are looked for by the other entries and by the signed entry of hardened mode, not here: the
-- scan materializes every statement of the session (the driver's cache included) and cost
-- about 0.09 of saturated throughput, and in the default mode the SQL that could plant one
-- can already switch its own context with set_config (docs/security.md).
--
-- This runs once per unit, so it is kept cheap: the session check is one simple expression
-- (no query), names are schema-qualified when the function is created (no SET clause to save
-- and restore), and one index lookup of the membership suffices because a deleted
-- organization keeps no memberships (tenancy_forget_members).
DO $do$
BEGIN
EXECUTE pg_catalog.format($fn$
CREATE PROCEDURE tenancy_enter(org uuid, member text, required text, act_as_required boolean,
                               search_path_now text, search_path_expected text)
    LANGUAGE plpgsql
    AS $body$
DECLARE
    found_role text;
    ignored    text;
BEGIN
    IF current_user <> session_user
       OR search_path_now IS DISTINCT FROM search_path_expected
       OR pg_catalog.pg_my_temp_schema() <> 0 THEN
        RAISE EXCEPTION 'tenancy: session not clean (role, search_path or temporary objects)'
            USING ERRCODE = 'TNC05';
    END IF;
    -- One expression per step: PL/pgSQL prepares each expression once per transaction.
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', org::text, true)
            || pg_catalog.set_config('app.current_user_id', member, true);
    SELECT m.role INTO found_role FROM %1$I.organization_members m
     WHERE m.organization_id = org AND m.user_id = member;
    IF found_role IS NULL
       OR %1$I.tenancy_role_rank(required) IS NULL
       OR %1$I.tenancy_role_rank(found_role) < %1$I.tenancy_role_rank(required) THEN
        IF found_role IS NULL THEN
            RAISE EXCEPTION 'tenancy: not a member of this organization' USING ERRCODE = 'TNC01';
        ELSIF %1$I.tenancy_role_rank(required) IS NULL THEN
            RAISE EXCEPTION 'tenancy: unknown role %%', required USING ERRCODE = '22023';
        END IF;
        RAISE EXCEPTION 'tenancy: role below the required role'
            USING ERRCODE = 'TNC02', DETAIL = found_role;
    END IF;
    ignored := pg_catalog.set_config('app.current_org_role',
                                     CASE WHEN act_as_required THEN required ELSE found_role END, true);
END
$body$
$fn$, pg_catalog.current_schema());
END
$do$;

-- The session check alone, for the other entries (switcher, bootstrap, service, and every
-- signed entry of hardened mode), prepared statements included.
CREATE FUNCTION tenancy_assert_clean_session(search_path_now text, search_path_expected text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF current_user <> session_user
       OR search_path_now IS DISTINCT FROM search_path_expected
       OR pg_catalog.pg_my_temp_schema() <> 0
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN
        RAISE EXCEPTION 'tenancy: session not clean (role, search_path, temporary objects or prepared statements)'
            USING ERRCODE = 'TNC05';
    END IF;
END
$$;

-- Sets the four context settings for the current transaction (the entries below; the hot
-- tenancy_enter inlines the same four lines to spare a call per unit).
CREATE FUNCTION tenancy_set_context(org uuid, member text, role text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    ignored text;
BEGIN
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true);
    ignored := pg_catalog.set_config('app.current_org_id', coalesce(org::text, ''), true);
    ignored := pg_catalog.set_config('app.current_user_id', coalesce(member, ''), true);
    ignored := pg_catalog.set_config('app.current_org_role', coalesce(role, ''), true);
END
$$;

-- A user unit without an organization (the organization switcher): only the user is set, so
-- only the switcher policies apply.
CREATE PROCEDURE tenancy_enter_user(member text, search_path_now text, search_path_expected text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    PERFORM tenancy_assert_clean_session(search_path_now, search_path_expected);
    PERFORM tenancy_set_context(NULL, member, NULL);
END
$$;

-- Organization bootstrap (TenantPool::create_organization): `member` creates `org` and
-- becomes its owner. Refused (TNC04) when an organization with that id exists or existed.
CREATE PROCEDURE tenancy_enter_new_organization(org uuid, member text, search_path_now text,
                                               search_path_expected text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
DECLARE
    ignored text;
BEGIN
    PERFORM tenancy_assert_clean_session(search_path_now, search_path_expected);
    PERFORM tenancy_set_context(org, member, NULL);
    IF EXISTS (SELECT 1 FROM organizations WHERE id = org) THEN
        RAISE EXCEPTION 'tenancy: organization exists' USING ERRCODE = 'TNC04';
    END IF;
    ignored := pg_catalog.set_config('app.current_org_role', 'owner', true);
END
$$;

DROP FUNCTION tenancy_require_member(text);

-- ---------------------------------------------------------------------------------------------
-- Policies with roles. The tenant predicate stays the bare indexed column against the
-- per-statement constant; role conditions are per-statement constants too.

DROP POLICY tenant_isolation ON organizations;
DROP POLICY tenant_isolation ON organization_members;
DROP POLICY own_memberships ON organization_members;
DROP POLICY own_organizations ON organizations;

-- Organization switcher: with a user set and no organization chosen, the user's own
-- memberships and their organizations. SELECT only; never applies inside an organization.
CREATE POLICY own_memberships ON organization_members FOR SELECT
    USING (user_id = (SELECT tenancy_switcher_user_id()));
CREATE POLICY own_organizations ON organizations FOR SELECT
    USING (id IN (SELECT m.organization_id FROM organization_members m
                   WHERE m.user_id = (SELECT tenancy_switcher_user_id())));

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
CREATE POLICY owner_delete ON organizations FOR DELETE
    USING (id = (SELECT tenancy_current_org_id())
           AND (SELECT tenancy_current_org_role()) = 'owner');

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

-- A deleted organization keeps no memberships, so "member of a live organization" is one index
-- lookup. Marking an organization deleted (an owner's UPDATE, or the sync) removes them; the
-- sync already did, and the policies let only an owner mark it.
CREATE FUNCTION tenancy_forget_members() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    DELETE FROM organization_members WHERE organization_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenancy_forget_members
    AFTER UPDATE OF deleted_at ON organizations
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION tenancy_forget_members();
-- Memberships of organizations deleted before this migration: the owner, with FORCE lifted for
-- this one statement inside the migration's transaction.
ALTER TABLE organization_members NO FORCE ROW LEVEL SECURITY;
ALTER TABLE organizations NO FORCE ROW LEVEL SECURITY;
DELETE FROM organization_members m USING organizations o
 WHERE o.id = m.organization_id AND o.deleted_at IS NOT NULL;
ALTER TABLE organization_members FORCE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;

-- The last owner of a live organization cannot leave or be demoted. Row locks on the remaining
-- owners serialize concurrent demotions (one of two racing transactions fails). Service units
-- (the identity provider is the source of truth) and organizations being deleted are exempt.
CREATE FUNCTION tenancy_keep_an_owner() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.role = 'owner' AND NEW.organization_id = OLD.organization_id THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE') THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM organizations
                    WHERE id = OLD.organization_id AND deleted_at IS NULL) THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM organization_members
      WHERE organization_id = OLD.organization_id AND role = 'owner'
      FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: an organization keeps at least one owner' USING ERRCODE = 'TNC03';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenancy_keep_an_owner
    AFTER UPDATE OR DELETE ON organization_members
    FOR EACH ROW WHEN (OLD.role = 'owner')
    EXECUTE FUNCTION tenancy_keep_an_owner();

-- ---------------------------------------------------------------------------------------------
-- Service policies: a service unit acts inside the organization it entered, on every table the
-- sync writes. Permissive, so they add to the member policies for members of tenancy_service.

CREATE POLICY service_unit ON organizations TO tenancy_service
    USING      (id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_unit ON organization_members TO tenancy_service
    USING      (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');

-- The webhook bookkeeping belongs to service units alone: no policy admits anyone else.
DROP POLICY tenant_isolation ON membership_tombstones;
DROP POLICY tenant_isolation ON webhook_deliveries;
DROP POLICY prune_expired ON webhook_deliveries;
DROP FUNCTION tenancy_webhook_prune_before();

CREATE POLICY service_unit ON membership_tombstones TO tenancy_service
    USING      (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_unit ON webhook_deliveries TO tenancy_service
    USING      (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()) AND (SELECT tenancy_current_org_role()) = 'service');
-- Pruning old delivery records, across organizations: a service unit entered without an
-- organization may read and delete them, nothing else.
CREATE POLICY service_prune_read ON webhook_deliveries FOR SELECT TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
CREATE POLICY service_prune_delete ON webhook_deliveries FOR DELETE TO tenancy_service
    USING ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');

-- Nothing in this schema is meant for PUBLIC to execute beyond what the roles need; entering
-- functions check their callers themselves.

-- ---------------------------------------------------------------------------------------------
-- Hardened mode (opt-in): inside a unit for organization A, SQL that calls set_config or SET
-- LOCAL (an injection) still cannot reach organization B's rows.
--
-- The application holds a key the database roles that serve requests cannot read. For each unit
-- it signs (kind, organization, user, role, how the role applies, expiry) with HMAC-SHA-256 and
-- enters through tenancy_enter_signed. A SECURITY DEFINER function checks that signature, then
-- seals the settings the unit runs with (bound to the transaction and the expiry) with the
-- same key. In hardened mode the context functions verify the seal on every statement: a
-- setting an injection changed no longer matches, and the context is NULL (no rows, no writes).
--
-- Off until the owner runs `SELECT tenancy_enable_hardened_mode('\x<32+ random bytes>')`;
-- `tenancy_disable_hardened_mode()` goes back. Both are the owner's alone. The service entry and
-- authorize's lookup below serve both modes.

-- The key, as HMAC's inner and outer padded blocks. No grant to anyone: only the SECURITY
-- DEFINER functions below (owned by the owner) read it.
CREATE TABLE tenancy_context_key (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    ikey bytea   NOT NULL CHECK (length(ikey) = 64),
    okey bytea   NOT NULL CHECK (length(okey) = 64)
);
REVOKE ALL ON tenancy_context_key FROM PUBLIC;

CREATE FUNCTION tenancy_hmac(message text) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    k record;
BEGIN
    -- PL/pgSQL rather than SQL: its plan for the key lookup is cached per session (a SQL
    -- function that reads a table is planned at every call before PostgreSQL 18).
    SELECT ikey, okey INTO k FROM tenancy_context_key;
    RETURN pg_catalog.encode(pg_catalog.sha256(k.okey
           || pg_catalog.sha256(k.ikey || pg_catalog.convert_to(message, 'UTF8'))), 'hex');
END
$$;
REVOKE ALL ON FUNCTION tenancy_hmac(text) FROM PUBLIC;

-- Whether hardened mode is on (TenantPool refuses to serve unsigned units when it is).
CREATE FUNCTION tenancy_hardened_mode() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT 1 FROM tenancy_context_key) $$;

-- The seal over the settings a unit runs with: valid only in its transaction, until its expiry.
CREATE FUNCTION tenancy_context_seal() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT pg_catalog.concat_ws('|',
                 pg_catalog.current_setting('app.current_unit', true),
                 pg_catalog.current_setting('app.current_org_id', true),
                 pg_catalog.current_setting('app.current_user_id', true),
                 pg_catalog.current_setting('app.current_org_role', true),
                 pg_catalog.current_setting('app.context_expiry', true)) $$;

-- Per statement (hardened mode): the settings are the ones the signed entry sealed, in this
-- transaction, and not expired.
CREATE FUNCTION tenancy_context_is_sealed() RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    expiry bigint;
BEGIN
    IF pg_catalog.current_setting('app.current_unit', true)
       IS DISTINCT FROM pg_catalog.transaction_timestamp()::text THEN
        RETURN false;
    END IF;
    expiry := NULLIF(pg_catalog.current_setting('app.context_expiry', true), '')::bigint;
    IF expiry IS NULL OR expiry < extract(epoch FROM pg_catalog.statement_timestamp()) THEN
        RETURN false;
    END IF;
    RETURN tenancy_hmac('seal|' || tenancy_context_seal())
           = pg_catalog.current_setting('app.context_seal', true);
END
$$;

-- Seals the settings as they stand. Only the functions below call it.
CREATE FUNCTION tenancy_seal(expiry bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    ignored text;
BEGIN
    ignored := pg_catalog.set_config('app.context_expiry', expiry::text, true);
    ignored := pg_catalog.set_config('app.context_seal', tenancy_hmac('seal|' || tenancy_context_seal()), true);
END
$$;
REVOKE ALL ON FUNCTION tenancy_seal(bigint) FROM PUBLIC;

-- The signed entry, for every request unit: `kind` is 'member' (tenancy_enter's checks),
-- 'user' (the switcher) or 'new' (bootstrap). The application's signature covers the kind, the
-- organization, the user, the required role, how it applies and the expiry. Runs as the owner
-- (it reads the key), so the caller's session is checked first by tenancy_enter_signed.
-- TNC06: hardened mode is off, or the signature is bad or expired.
CREATE FUNCTION tenancy_enter_sealed(kind text, org uuid, member text, required text,
                                     act_as_required boolean, expiry bigint, signature text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    found_role text;
    ignored    text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenancy_context_key) THEN
        RAISE EXCEPTION 'tenancy: hardened mode is not enabled' USING ERRCODE = 'TNC06';
    END IF;
    IF expiry < extract(epoch FROM pg_catalog.statement_timestamp())
       OR tenancy_hmac(pg_catalog.concat_ws('|', 'enter', kind, coalesce(org::text, ''), member,
                                            coalesce(required, ''), act_as_required::text, expiry::text))
          IS DISTINCT FROM signature THEN
        RAISE EXCEPTION 'tenancy: bad or expired context signature' USING ERRCODE = 'TNC06';
    END IF;
    PERFORM tenancy_set_context(org, member, NULL);
    PERFORM tenancy_seal(expiry);
    IF kind = 'user' THEN
        RETURN;
    ELSIF kind = 'new' THEN
        IF EXISTS (SELECT 1 FROM organizations WHERE id = org) THEN
            RAISE EXCEPTION 'tenancy: organization exists' USING ERRCODE = 'TNC04';
        END IF;
        found_role := 'owner';
    ELSIF kind = 'member' THEN
        SELECT m.role INTO found_role FROM organization_members m
         WHERE m.organization_id = org AND m.user_id = member;
        IF found_role IS NULL THEN
            RAISE EXCEPTION 'tenancy: not a member of this organization' USING ERRCODE = 'TNC01';
        END IF;
        IF tenancy_role_rank(found_role) < tenancy_role_rank(required) THEN
            RAISE EXCEPTION 'tenancy: role below the required role'
                USING ERRCODE = 'TNC02', DETAIL = found_role;
        END IF;
        IF act_as_required THEN
            found_role := required;
        END IF;
    ELSE
        RAISE EXCEPTION 'tenancy: unknown entry %', kind USING ERRCODE = '22023';
    END IF;
    ignored := pg_catalog.set_config('app.current_org_role', found_role, true);
    PERFORM tenancy_seal(expiry);
END
$$;

CREATE PROCEDURE tenancy_enter_signed(kind text, org uuid, member text, required text,
                                      act_as_required boolean, search_path_now text,
                                      search_path_expected text, expiry bigint, signature text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    PERFORM tenancy_assert_clean_session(search_path_now, search_path_expected);
    PERFORM tenancy_enter_sealed(kind, org, member, required, act_as_required, expiry, signature);
END
$$;

-- Service units in hardened mode: sealed for a member of tenancy_service (checked on the
-- session's login, since this runs as the owner), for a short expiry.
CREATE FUNCTION tenancy_seal_service() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(session_user, 'tenancy_service', 'USAGE') THEN
        RAISE EXCEPTION 'tenancy: % is not a member of tenancy_service', session_user
            USING ERRCODE = 'TNC07';
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy_context_key)
       AND pg_catalog.current_setting('app.current_org_role', true) = 'service' THEN
        PERFORM tenancy_seal((extract(epoch FROM pg_catalog.statement_timestamp()) + 300)::bigint);
    END IF;
END
$$;

-- A service unit: only a member of `tenancy_service` may enter. With an organization, the
-- service policies admit that organization's rows; without one (NULL), only the cross-
-- organization maintenance policies apply (pruning webhook deliveries). In hardened mode it
-- is sealed by tenancy_seal_service.
CREATE PROCEDURE tenancy_enter_service(org uuid, search_path_now text, search_path_expected text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(current_user, 'tenancy_service', 'USAGE') THEN
        RAISE EXCEPTION 'tenancy: % is not a member of tenancy_service', current_user
            USING ERRCODE = 'TNC07';
    END IF;
    PERFORM tenancy_assert_clean_session(search_path_now, search_path_expected);
    PERFORM tenancy_set_context(org, NULL, 'service');
    PERFORM tenancy_seal_service();
END
$$;

-- Membership lookup for TenantPool::authorize (one autocommit round trip). It sets the
-- context for its own lookup (sealed in hardened mode: it runs as the owner to do so) and
-- restores the previous values before returning. It answers only the role of the
-- (organization, user) pair it is asked about.
CREATE OR REPLACE FUNCTION tenancy_member_role(org uuid, member text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    found_role text;
    names      text[] := ARRAY['app.current_unit', 'app.current_org_id', 'app.current_user_id',
                               'app.current_org_role', 'app.context_expiry', 'app.context_seal'];
    previous   text[];
    ignored    text;
BEGIN
    SELECT pg_catalog.array_agg(coalesce(pg_catalog.current_setting(n, true), '') ORDER BY o)
      INTO previous FROM pg_catalog.unnest(names) WITH ORDINALITY AS t(n, o);
    PERFORM tenancy_set_context(org, member, NULL);
    IF EXISTS (SELECT 1 FROM tenancy_context_key) THEN
        PERFORM tenancy_seal((extract(epoch FROM pg_catalog.statement_timestamp()) + 60)::bigint);
    END IF;
    SELECT m.role INTO found_role FROM organization_members m
     WHERE m.organization_id = org AND m.user_id = member;
    FOR i IN 1..6 LOOP
        ignored := pg_catalog.set_config(names[i], previous[i], true);
    END LOOP;
    RETURN found_role;
END
$$;

-- Switching modes stores or forgets the key and rewrites the context functions
-- (tenancy_install_context_functions), so users' own policies written with them follow.
CREATE FUNCTION tenancy_enable_hardened_mode(key bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    block bytea := '\x'::bytea;
    ipad  bytea;
    opad  bytea;
BEGIN
    IF key IS NULL OR pg_catalog.length(key) < 32 THEN
        RAISE EXCEPTION 'tenancy: the context key needs at least 32 bytes' USING ERRCODE = '22023';
    END IF;
    block := CASE WHEN pg_catalog.length(key) > 64 THEN pg_catalog.sha256(key) ELSE key END;
    block := block || pg_catalog.decode(pg_catalog.repeat('00', 64 - pg_catalog.length(block)), 'hex');
    ipad := block;
    opad := block;
    FOR i IN 0..63 LOOP
        ipad := pg_catalog.set_byte(ipad, i, pg_catalog.get_byte(block, i) # 54);
        opad := pg_catalog.set_byte(opad, i, pg_catalog.get_byte(block, i) # 92);
    END LOOP;
    DELETE FROM tenancy_context_key;
    INSERT INTO tenancy_context_key (ikey, okey) VALUES (ipad, opad);
    PERFORM tenancy_install_context_functions(true);
END
$$;

CREATE FUNCTION tenancy_disable_hardened_mode() RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
BEGIN
    DELETE FROM tenancy_context_key;
    PERFORM tenancy_install_context_functions(false);
END
$$;

REVOKE ALL ON FUNCTION tenancy_enable_hardened_mode(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy_disable_hardened_mode() FROM PUBLIC;

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
