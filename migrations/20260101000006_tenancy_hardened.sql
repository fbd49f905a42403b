-- pg-tenancy 6/7: hardened mode (opt-in). Inside a unit for organization A, SQL that calls
-- set_config or SET LOCAL (an injection) still cannot reach organization B's rows.
--
-- The application holds a key the database roles that serve requests cannot read. For each unit
-- it signs (kind, organization, user, role, how the role applies, expiry) with HMAC-SHA-256 and
-- enters through tenancy_enter_signed. A SECURITY DEFINER function checks that signature, then
-- seals the settings the unit runs with (bound to the transaction and the expiry) with the
-- same key. In hardened mode the context functions verify the seal on every statement: a
-- setting an injection changed no longer matches, and the context is NULL (no rows, no writes).
--
-- Off until the owner runs `SELECT tenancy_enable_hardened_mode('\x<32+ random bytes>')`;
-- `tenancy_disable_hardened_mode()` goes back. Both are the owner's alone. The service entry
-- (file 4) and authorize's lookup (file 2) serve both modes: they call tenancy_seal_service and
-- tenancy_seal, below, which seal only when the key is there.

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

-- The key, as HMAC's inner and outer padded blocks. No grant to anyone: only the SECURITY
-- DEFINER functions below (owned by the owner) read it.
CREATE TABLE tenancy_context_key (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    ikey bytea   NOT NULL CHECK (length(ikey) = 64),
    okey bytea   NOT NULL CHECK (length(okey) = 64)
);
REVOKE ALL ON tenancy_context_key FROM PUBLIC;
-- Out of reach whatever request roles are granted (`GRANT SELECT ON ALL TABLES IN SCHEMA ...`
-- included): row security on, with no policy and not forced, so every role but the owner
-- reads no row; the owner's SECURITY DEFINER functions below read it. TenantPool::hardened
-- refuses a role that can read it, and the audit reports one as an error.
ALTER TABLE tenancy_context_key ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE tenancy_context_key IS
    'tenancy-audit: allow. Hardened mode''s key: row security with no policy, read only by its owner''s SECURITY DEFINER functions.';

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

-- Whether the calling role can read the key: it may SELECT the table and row security does not
-- hide its rows from it (off, or the role owns the table, or bypasses row security).
-- TenantPool::hardened refuses such a role (Error::ContextKeyReadable).
CREATE FUNCTION tenancy_context_key_readable() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
    AS $$ SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT')
                 AND (NOT c.relrowsecurity
                      OR pg_catalog.pg_has_role(c.relowner, 'USAGE')
                      OR r.rolbypassrls OR r.rolsuper)
            FROM pg_catalog.pg_class c, pg_catalog.pg_roles r
           WHERE c.oid = 'tenancy_context_key'::pg_catalog.regclass AND r.rolname = current_user $$;

-- Whether hardened mode is on (TenantPool refuses to serve unsigned units when it is).
CREATE FUNCTION tenancy_hardened_mode() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT 1 FROM tenancy_context_key) $$;

-- What a signature or a seal covers, encoded so that no field can stand for another's
-- boundary: each field as `<octets>:<text>` (this function), the fields joined with '|'. A NULL
-- field makes the whole message NULL (`||` is strict), and no signature verifies a NULL
-- message. (The application encodes its signed entries the same way: `hardened::encode`.)
-- One expression, so that the planner inlines it: the seal is verified on every statement.
CREATE FUNCTION tenancy_signed_field(field text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.octet_length(field)::text || ':' || field $$;

-- The seal over the settings a unit runs with: valid only in its transaction, until its expiry.
-- A setting never set reads as '' (an unset context is empty either way).
CREATE FUNCTION tenancy_context_seal() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT tenancy_signed_field('seal')
                 || '|' || tenancy_signed_field(coalesce(pg_catalog.current_setting('app.current_unit', true), ''))
                 || '|' || tenancy_signed_field(coalesce(pg_catalog.current_setting('app.current_org_id', true), ''))
                 || '|' || tenancy_signed_field(coalesce(pg_catalog.current_setting('app.current_user_id', true), ''))
                 || '|' || tenancy_signed_field(coalesce(pg_catalog.current_setting('app.current_org_role', true), ''))
                 || '|' || tenancy_signed_field(coalesce(pg_catalog.current_setting('app.current_permissions', true), ''))
                 || '|' || tenancy_signed_field(coalesce(pg_catalog.current_setting('app.context_expiry', true), '')) $$;

-- Per statement (hardened mode): the settings are the ones the signed entry sealed, in this
-- transaction. Settings that are not (an injection changed one, or none were sealed) give
-- false: the context is NULL, no rows, no writes. A genuine seal past its expiry raises TNC08:
-- a unit that outlives its context fails loudly rather than silently reading nothing. The
-- expiry is in the database's clock (the pool measures its offset when it starts).
-- (The HMAC is computed here rather than by calling tenancy_hmac: one SECURITY DEFINER call,
-- with its settings saved and restored, per check instead of two.)
CREATE FUNCTION tenancy_context_is_sealed() RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    k record;
BEGIN
    IF pg_catalog.current_setting('app.current_unit', true)
       IS DISTINCT FROM pg_catalog.transaction_timestamp()::text THEN
        RETURN false;
    END IF;
    SELECT ikey, okey INTO k FROM tenancy_context_key;
    IF NOT FOUND
       OR pg_catalog.encode(pg_catalog.sha256(k.okey || pg_catalog.sha256(
              k.ikey || pg_catalog.convert_to(tenancy_context_seal(), 'UTF8'))), 'hex')
          IS DISTINCT FROM pg_catalog.current_setting('app.context_seal', true) THEN
        RETURN false;
    END IF;
    IF pg_catalog.current_setting('app.context_expiry')::bigint
       < extract(epoch FROM pg_catalog.statement_timestamp()) THEN
        RAISE EXCEPTION 'tenancy: the unit outlived its signed context'
            USING ERRCODE = 'TNC08',
                  HINT = 'Keep units shorter than the context lifetime (TenantPool::with_context_ttl).';
    END IF;
    RETURN true;
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
    ignored := pg_catalog.set_config('app.context_seal', tenancy_hmac(tenancy_context_seal()), true);
END
$$;
REVOKE ALL ON FUNCTION tenancy_seal(bigint) FROM PUBLIC;

-- The signed entry, for every request unit: `kind` is 'member' (tenancy_enter's checks),
-- 'user' (the switcher) or 'new' (bootstrap). The application's signature covers the kind, the
-- organization, the user, the required role, how it applies and the expiry. Runs as the owner
-- (it reads the key), so the caller's session is checked first by tenancy_enter_signed.
-- TNC06: hardened mode is off, or the signature is bad; TNC08: it has expired (in the
-- database's clock). Like tenancy_enter, it waits at most 2 s for a lock (55P03): a unit
-- holding `LOCK TABLE organization_members` stalls no other organization's signed entry for
-- longer (a SET clause, restored when the function returns).
--
-- Per unit, it reads the key once and computes the HMACs itself: the signature's, then the
-- seal's, once when the unit's role is known before the lookup (an OrgContext's unit acts as
-- its claimed role, which the lookup then checks against the membership: if the check fails
-- the transaction fails with it, and its role grants no permissions), twice otherwise
-- (with_member acts as the membership's role; bootstrap as the new owner; the permissions of
-- the membership's role are known after the lookup).
CREATE FUNCTION tenancy_enter_sealed(kind text, org uuid, member text, required text,
                                     act_as_required boolean, expiry bigint, signature text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    SET lock_timeout = '2s'
    AS $$
DECLARE
    k           record;
    found_role  text;
    found_perms text;
    ignored     text;
BEGIN
    PERFORM tenancy_assert_not_entered();
    SELECT ikey, okey INTO k FROM tenancy_context_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: hardened mode is not enabled' USING ERRCODE = 'TNC06';
    END IF;
    -- Fields the signature does not pin down are refused before it is checked: a known kind, a
    -- user, a flag and an expiry; a role only where the kind takes one, and a known one.
    IF kind IS NULL OR kind NOT IN ('member', 'user', 'new') OR member IS NULL
       OR act_as_required IS NULL OR expiry IS NULL OR signature IS NULL
       OR (kind = 'member') <> (required IS NOT NULL)
       OR (required IS NOT NULL AND tenancy_role_rank(required) IS NULL)
       OR (kind = 'user') <> (org IS NULL) THEN
        RAISE EXCEPTION 'tenancy: malformed signed entry' USING ERRCODE = 'TNC06';
    END IF;
    IF pg_catalog.encode(pg_catalog.sha256(k.okey || pg_catalog.sha256(k.ikey || pg_catalog.convert_to(
           tenancy_signed_field('enter') || '|' || tenancy_signed_field(kind)
           || '|' || tenancy_signed_field(coalesce(org::text, ''))
           || '|' || tenancy_signed_field(member)
           || '|' || tenancy_signed_field(coalesce(required, ''))
           || '|' || tenancy_signed_field(act_as_required::text)
           || '|' || tenancy_signed_field(expiry::text), 'UTF8'))), 'hex')
       IS DISTINCT FROM signature THEN
        RAISE EXCEPTION 'tenancy: bad context signature' USING ERRCODE = 'TNC06';
    END IF;
    IF expiry < extract(epoch FROM pg_catalog.statement_timestamp()) THEN
        RAISE EXCEPTION 'tenancy: expired context signature' USING ERRCODE = 'TNC08';
    END IF;
    -- The context, sealed: with the claimed role when it is known now, else none yet.
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', coalesce(org::text, ''), true)
            || pg_catalog.set_config('app.current_user_id', member, true)
            || pg_catalog.set_config('app.current_org_role',
                                     CASE WHEN kind = 'member' AND act_as_required THEN required
                                          ELSE '' END, true)
            || pg_catalog.set_config('app.current_permissions', '', true)
            || pg_catalog.set_config('app.context_expiry', expiry::text, true);
    ignored := pg_catalog.set_config('app.context_seal',
                   pg_catalog.encode(pg_catalog.sha256(k.okey || pg_catalog.sha256(
                       k.ikey || pg_catalog.convert_to(tenancy_context_seal(), 'UTF8'))), 'hex'),
                   true);
    IF kind = 'user' THEN
        RETURN;
    ELSIF kind = 'new' THEN
        IF EXISTS (SELECT 1 FROM organizations WHERE id = org) THEN
            RAISE EXCEPTION 'tenancy: organization exists' USING ERRCODE = 'TNC04';
        END IF;
        found_role := 'owner';
    ELSE
        SELECT m.role, tenancy_role_permissions(coalesce(m.role_key, m.role))
          INTO found_role, found_perms
          FROM organization_members m JOIN organizations o ON o.id = m.organization_id
         WHERE m.organization_id = org AND m.user_id = member AND o.id = org
           AND o.deleted_at IS NULL;
        IF found_role IS NULL THEN
            RAISE EXCEPTION 'tenancy: not a member of this organization' USING ERRCODE = 'TNC01';
        END IF;
        IF tenancy_role_rank(found_role) < tenancy_role_rank(required) THEN
            RAISE EXCEPTION 'tenancy: role below the required role'
                USING ERRCODE = 'TNC02', DETAIL = found_role;
        END IF;
        -- The membership role's permissions, unless the unit acts with a lower role; sealed
        -- again only when there are any.
        IF act_as_required THEN
            IF required <> found_role OR coalesce(found_perms, '') = '' THEN
                RETURN;
            END IF;
            found_role := required;
        END IF;
        ignored := pg_catalog.set_config('app.current_permissions', coalesce(found_perms, ''), true);
    END IF;
    ignored := pg_catalog.set_config('app.current_org_role', found_role, true);
    ignored := pg_catalog.set_config('app.context_seal',
                   pg_catalog.encode(pg_catalog.sha256(k.okey || pg_catalog.sha256(
                       k.ikey || pg_catalog.convert_to(tenancy_context_seal(), 'UTF8'))), 'hex'),
                   true);
END
$$;

-- The procedure every signed entry calls. Like tenancy_enter, it checks the caller's session
-- itself (role, tenancy_session_settings() against the pool's, temporary objects, and
-- SQL-level prepared statements, which could replace a statement the driver has cached for
-- the next unit), with names qualified when it is created and no SET clause, so that what it
-- reads is the session's own. TNC09 first when the transaction already entered.
DO $do$
BEGIN
EXECUTE pg_catalog.format($fn$
CREATE PROCEDURE tenancy_enter_signed(kind text, org uuid, member text, required text,
                                      act_as_required boolean, session_expected text,
                                      expiry bigint, signature text)
    LANGUAGE plpgsql
    AS $body$
BEGIN
    -- Every operator and type here is pg_catalog's by name: this runs on the session's own
    -- search_path, which is what it checks.
    IF current_user OPERATOR(pg_catalog.<>) session_user
       OR NOT coalesce(%1$I.tenancy_session_settings() OPERATOR(pg_catalog.=) session_expected,
                       false)
       OR pg_catalog.pg_my_temp_schema() OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
       OR pg_catalog.current_setting('app.current_unit', true)
          OPERATOR(pg_catalog.=) pg_catalog.transaction_timestamp()::pg_catalog.text
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN
        IF pg_catalog.current_setting('app.current_unit', true)
           OPERATOR(pg_catalog.=) pg_catalog.transaction_timestamp()::pg_catalog.text THEN
            RAISE EXCEPTION 'tenancy: this transaction already entered a unit'
                USING ERRCODE = 'TNC09';
        END IF;
        RAISE EXCEPTION 'tenancy: session not clean (role, settings, temporary objects or prepared statements)'
            USING ERRCODE = 'TNC05';
    END IF;
    PERFORM %1$I.tenancy_enter_sealed(kind, org, member, required, act_as_required, expiry,
                                      signature);
END
$body$
$fn$, pg_catalog.current_schema());
END
$do$;

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

SELECT tenancy_pin_search_path();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
