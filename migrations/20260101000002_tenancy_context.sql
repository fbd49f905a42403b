-- pg-tenancy 2/7: the tenant context and the entries that set it.
--
-- Provides:
-- - the context functions every policy calls, `tenancy_current_org_id()`,
--   `tenancy_current_user_id()`, `tenancy_current_org_role()`, `tenancy_switcher_user_id()`,
--   `tenancy_current_org_id_at_least(role)`, `tenancy_current_org_id_with(permission)` and
--   `tenancy_current_permissions()`:
--   each value counts only inside the transaction that set it (`app.current_unit` =
--   `transaction_timestamp()`), so a value left at session level is void in every later
--   transaction, and an unset value is NULL (no rows, no writes);
-- - the entries, called in the `BEGIN` round trip of every unit: `tenancy_enter` (a member
--   unit: checks the session, the membership of a live organization and the role, then sets the
--   context transaction-locally), `tenancy_enter_user` (the organization switcher) and
--   `tenancy_enter_new_organization` (bootstrap);
-- - `tenancy_member_access` (and `tenancy_member_role`), the lookup behind `TenantPool::authorize`;
-- - `tenancy_propagate_context()`, which every entry calls last: nothing on one server, and on
--   Citus (after src/citus.sql) the context sent on to the workers.
-- Every function pins its name resolution (this schema, pg_catalog, pg_temp last).

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

-- Pins every function of this schema that captured the migrations' search_path (schema first,
-- for creating objects) to pg_catalog first, then the schema, then pg_temp. Each file calls it
-- at its end. The owner's alone.
CREATE FUNCTION tenancy_pin_search_path() RETURNS void
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    schema  text := pg_catalog.current_schema();
    routine regprocedure;
BEGIN
    FOR routine IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) schema::pg_catalog.regnamespace
           AND p.proconfig OPERATOR(pg_catalog.@>) ARRAY[pg_catalog.format('search_path=%I, pg_catalog, pg_temp', schema)]
    LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = pg_catalog, %I, pg_temp',
                                  routine, schema);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION tenancy_pin_search_path() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- The context, as policies read it.

CREATE OR REPLACE FUNCTION tenancy_current_unit_is_live() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.current_setting('app.current_unit', true)
                 = pg_catalog.transaction_timestamp()::text $$;

-- The order of the roles (NULL for anything else, 'service' included).
CREATE FUNCTION tenancy_role_rank(role text) RETURNS int
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN role OPERATOR(pg_catalog.=) 'owner' THEN 3
                      WHEN role OPERATOR(pg_catalog.=) 'admin' THEN 2
                      WHEN role OPERATOR(pg_catalog.=) 'member' THEN 1 END $$;

-- Writes the context functions every policy calls, for one mode: in the default mode
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
--   policies: one InitPlan where `org IS NULL AND user_id = user` needs two);
-- - tenancy_current_org_id_at_least(role): the organization, only while the unit acts with at
--   least `role` (NULL otherwise): a role-guarded policy as one per-statement value,
--   `organization_id = (SELECT tenancy_current_org_id_at_least('admin'))`, still an index
--   condition, where `AND (SELECT tenancy_current_org_role()) IN (...)` is a filter evaluated
--   on every row (docs/benchmarks.md, `ratio.policy.role_policy_vs_rls`);
-- - tenancy_current_org_id_with(permission): the organization, only while the unit holds
--   `permission` (the permissions of its membership's role, ..._07_tenancy_permissions.sql; NULL
--   otherwise): a permission-guarded policy, `organization_id = (SELECT
--   tenancy_current_org_id_with('org:invoices:write'))`, the same per-statement value;
-- - tenancy_current_permissions(): the unit's permissions, as text[] ('{}' for none).
-- The crate's schema, quoted: for the functions that write functions there. (A pinned
-- search_path puts pg_catalog first, so current_schema() would name pg_catalog.)
CREATE FUNCTION tenancy_own_schema() RETURNS text
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
    AS $$ SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_proc p
            JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
           WHERE p.oid = 'tenancy_own_schema()'::pg_catalog.regprocedure $$;

CREATE FUNCTION tenancy_install_context_functions(hardened boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    s        text := tenancy_own_schema();
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
        CREATE OR REPLACE FUNCTION %1$s.tenancy_current_org_id_at_least(role text) RETURNS uuid
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                                AND %1$s.tenancy_role_rank(pg_catalog.current_setting('app.current_org_role', true))
                                    OPERATOR(pg_catalog.>=) %1$s.tenancy_role_rank(role)
                               THEN NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::uuid END $b$;
        CREATE OR REPLACE FUNCTION %1$s.tenancy_current_org_id_with(permission text) RETURNS uuid
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                                AND pg_catalog.strpos(pg_catalog.current_setting('app.current_permissions', true),
                                                      pg_catalog.concat(',', permission, ','))
                                    OPERATOR(pg_catalog.>) 0
                               THEN NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::uuid END $b$;
        CREATE OR REPLACE FUNCTION %1$s.tenancy_current_permissions() RETURNS text[]
            LANGUAGE sql STABLE %3$s
            AS $b$ SELECT CASE WHEN %1$s.%2$s
                               THEN pg_catalog.string_to_array(pg_catalog.btrim(
                                        coalesce(pg_catalog.current_setting('app.current_permissions', true), ''),
                                        ','), ',') END $b$;
    $f$, s, live, parallel);
END
$$;
REVOKE ALL ON FUNCTION tenancy_install_context_functions(boolean) FROM PUBLIC;

SELECT tenancy_install_context_functions(false);

-- The session-level settings that would change how another organization's unit runs if a unit
-- left them changed on its pooled connection: timeouts (its statements would fail),
-- `row_security` (its queries would error), `synchronous_commit` (its commits would not be
-- durable), `exit_on_error` (its first error would close the connection), how dates, times,
-- intervals and bytes are written (`TimeZone`, `DateStyle`, `IntervalStyle`, `bytea_output`:
-- its values would read differently), how literals are read (`standard_conforming_strings`: with
-- it off a backslash in a string literal escapes, so text another unit writes could end a
-- literal early, and on Citus, which writes bound parameters into the shard queries as
-- literals, run as SQL; `array_nulls`: `NULL` in an array's text would be the string), how
-- floats are written (`extra_float_digits`: on Citus, which writes a bound float into the
-- shard query as text, the next units' floats would be stored rounded), `transaction_timeout`
-- (PostgreSQL 17 and later: it would end the next unit's connection; NULL before 17, which
-- concat_ws skips) and `search_path` (names would resolve elsewhere), as one text. The pool reads it
-- when it starts; `tenancy_enter` compares the session's with it on every unit (TNC05).
-- (`default_transaction_read_only`, `_isolation` and `_deferrable` need no check: every `BEGIN`
-- names its mode.) `search_path` last: the one value that may hold `|`. Inlinable SQL with
-- qualified names and no SET clause, so that it reads the caller's session and PL/pgSQL plans
-- it into the entry once per session. The other entries, which pin their own search_path,
-- receive the same text evaluated by their caller (src/pool/entry.rs, `SESSION_SETTINGS`: a
-- test keeps the two equal).
CREATE FUNCTION tenancy_session_settings() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.concat_ws('|',
                     pg_catalog.current_setting('statement_timeout'),
                     pg_catalog.current_setting('lock_timeout'),
                     pg_catalog.current_setting('idle_in_transaction_session_timeout'),
                     pg_catalog.current_setting('idle_session_timeout'),
                     pg_catalog.current_setting('row_security'),
                     pg_catalog.current_setting('synchronous_commit'),
                     pg_catalog.current_setting('exit_on_error'),
                     pg_catalog.current_setting('TimeZone'),
                     pg_catalog.current_setting('DateStyle'),
                     pg_catalog.current_setting('IntervalStyle'),
                     pg_catalog.current_setting('bytea_output'),
                     pg_catalog.current_setting('standard_conforming_strings'),
                     pg_catalog.current_setting('array_nulls'),
                     pg_catalog.current_setting('extra_float_digits'),
                     pg_catalog.current_setting('transaction_timeout', true),
                     pg_catalog.current_setting('search_path')) $$;

-- Called last by every entry, at the end of its last set_config expression as
-- `|| coalesce(tenancy_propagate_context()::text, '')`: nothing on one server (an immutable
-- constant, folded with the coalesce when the expression is planned: no call at all; a bare
-- `|| f()::text` would fold the whole strict concatenation to NULL, set_config calls and all).
-- On Citus, src/citus.sql (run once after the migrations) replaces it with one that sends the
-- unit's context to the workers, where the policies of distributed tables run (replacing it
-- invalidates the entries' cached plans).
CREATE FUNCTION tenancy_propagate_context() RETURNS void
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT NULL::void';

-- ---------------------------------------------------------------------------------------------
-- Entering a unit: procedures, called as `BEGIN; CALL tenancy_enter(...)` in one round trip
-- (a CALL skips the planner and the row description a SELECT would cost). Raised SQLSTATEs:
--   TNC01 not a member of a live organization     TNC02 role below the required role
--   TNC04 organization already exists (bootstrap)  TNC05 session not clean: close the connection
--   TNC06 wrong entry for this database's mode     TNC07 not a service role
--   TNC08 signed context expired (hardened mode)  TNC09 this transaction already entered a unit
--   TNC10 the context changed inside a statement (a trigger refuses to act under it)
--
-- Every entry refuses a transaction that has already entered (TNC09): SQL running inside a
-- unit cannot enter again as another user, with another role, or in another organization.

-- A member unit: `member` must be a member of the live organization `org` with at least
-- `required`. The unit then acts as `required` when `act_as_required` (an OrgContext's role:
-- never more than the application claimed), else as the membership's role (with_member).
--
-- First, what a unit may not find on its session: a changed role, changed settings
-- (tenancy_session_settings(), read here in the caller's session, against `session_expected`,
-- the value the pool read when it started: `Units` in src/pool/entry.rs), or temporary
-- objects (which shadow unqualified table names). TNC05; the pool
-- closes such a connection. Then the membership lookup waits at most 2 s for a lock (a unit
-- that locks organization_members cannot stall every organization's entry): lock_timeout is
-- set for the lookup only, and put back. SQL-level prepared statements (which can replace a driver's cached statement)
-- are looked for by the other entries and by the signed entry of hardened mode, not here: the
-- scan materializes every statement of the session (the driver's cache included) and cost
-- about 0.09 of saturated throughput, and in the default mode the SQL that could plant one
-- can already switch its own context with set_config (docs/security.md).
--
-- This runs once per unit, so it is kept cheap: the session check is one simple expression
-- (no query) evaluated here rather than sent as an argument (a CALL's arguments are parsed,
-- analysed and planned on every call: sent, the seven settings cost a fifth of a unit's server
-- instructions, docs/benchmarks.md), names are schema-qualified when the function is created
-- (no SET clause to save and restore, and the session's search_path is what it reads), and the
-- membership and the organization's liveness are one join of two primary-key lookups. (A deleted organization also keeps no memberships, by
-- tenancy_forget_members; the entry does not rely on it.)
DO $do$
BEGIN
EXECUTE pg_catalog.format($fn$
CREATE PROCEDURE tenancy_enter(org uuid, member text, required text, act_as_required boolean,
                               session_expected text)
    LANGUAGE plpgsql
    AS $body$
DECLARE
    found_role  text;
    found_perms text;
    ignored     text;
    lock_before text := pg_catalog.current_setting('lock_timeout');
BEGIN
    -- Every operator and type here is pg_catalog's by name: this runs on the session's own
    -- search_path, which is what it checks.
    IF current_user OPERATOR(pg_catalog.<>) session_user
       OR NOT coalesce(%1$I.tenancy_session_settings() OPERATOR(pg_catalog.=) session_expected,
                       false)
       OR pg_catalog.pg_my_temp_schema() OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
       OR pg_catalog.current_setting('app.current_unit', true)
          OPERATOR(pg_catalog.=) pg_catalog.transaction_timestamp()::pg_catalog.text THEN
        IF pg_catalog.current_setting('app.current_unit', true)
           OPERATOR(pg_catalog.=) pg_catalog.transaction_timestamp()::pg_catalog.text THEN
            RAISE EXCEPTION 'tenancy: this transaction already entered a unit'
                USING ERRCODE = 'TNC09';
        END IF;
        RAISE EXCEPTION 'tenancy: session not clean (role, settings or temporary objects)'
            USING ERRCODE = 'TNC05';
    END IF;
    -- One expression per step: PL/pgSQL prepares each expression once per transaction.
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', org::text, true)
            || pg_catalog.set_config('app.current_user_id', member, true)
            || pg_catalog.set_config('lock_timeout', '2s', true);
    SELECT m.role, %1$I.tenancy_role_permissions(coalesce(m.role_key, m.role))
      INTO found_role, found_perms
      FROM %1$I.organization_members m JOIN %1$I.organizations o ON o.id = m.organization_id
     WHERE m.organization_id = org AND m.user_id = member AND o.id = org AND o.deleted_at IS NULL;
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
    -- The permissions of the membership's role, unless the unit acts with a lower role.
    ignored := pg_catalog.set_config('app.current_org_role',
                                     CASE WHEN act_as_required THEN required ELSE found_role END, true)
            || pg_catalog.set_config('app.current_permissions',
                                     CASE WHEN act_as_required
                                               AND required OPERATOR(pg_catalog.<>) found_role THEN ''
                                          ELSE coalesce(found_perms, '') END, true)
            || pg_catalog.set_config('lock_timeout', lock_before, true)
            || coalesce(%1$I.tenancy_propagate_context()::text, '');
END
$body$
$fn$, pg_catalog.current_schema());
END
$do$;

-- The session check alone, for the other entries (switcher, bootstrap, service, and every
-- signed entry of hardened mode), prepared statements included, and the re-entry check.
CREATE FUNCTION tenancy_assert_clean_session(session_now text, session_expected text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF current_user <> session_user
       OR session_now IS DISTINCT FROM session_expected
       OR pg_catalog.pg_my_temp_schema() <> 0
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN
        RAISE EXCEPTION 'tenancy: session not clean (role, settings, temporary objects or prepared statements)'
            USING ERRCODE = 'TNC05';
    END IF;
    PERFORM tenancy_assert_not_entered();
END
$$;

-- TNC09 when this transaction already entered a unit.
CREATE FUNCTION tenancy_assert_not_entered() RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path FROM CURRENT
    AS $$
BEGIN
    IF pg_catalog.current_setting('app.current_unit', true)
       = pg_catalog.transaction_timestamp()::text THEN
        RAISE EXCEPTION 'tenancy: this transaction already entered a unit' USING ERRCODE = 'TNC09';
    END IF;
END
$$;

-- Sets the context settings for the current transaction (no permissions). Not executable by request
-- roles (SQL inside a unit must not switch its context through it): only the SECURITY
-- DEFINER entries call it, after their checks; the others write the same lines inline.
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
    ignored := pg_catalog.set_config('app.current_permissions', '', true);
END
$$;
REVOKE ALL ON FUNCTION tenancy_set_context(uuid, text, text) FROM PUBLIC;

-- A user unit without an organization (the organization switcher): only the user is set, so
-- only the switcher policies apply.
CREATE PROCEDURE tenancy_enter_user(member text, session_now text, session_expected text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
DECLARE
    ignored text;
BEGIN
    PERFORM tenancy_assert_clean_session(session_now, session_expected);
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', '', true)
            || pg_catalog.set_config('app.current_user_id', member, true)
            || pg_catalog.set_config('app.current_org_role', '', true)
            || pg_catalog.set_config('app.current_permissions', '', true)
            || coalesce(tenancy_propagate_context()::text, '');
END
$$;

-- Organization bootstrap (TenantPool::create_organization): `member` creates `org` and
-- becomes its owner. Refused (TNC04) when an organization with that id exists, a deleted one
-- included: request units never hard-delete an organization (..._03_tenancy_roles.sql), and
-- a purge keeps its row (tenancy_purge_organization), so an id is never free again.
CREATE PROCEDURE tenancy_enter_new_organization(org uuid, member text, session_now text,
                                               session_expected text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
DECLARE
    ignored     text;
    lock_before text := pg_catalog.current_setting('lock_timeout');
BEGIN
    PERFORM tenancy_assert_clean_session(session_now, session_expected);
    -- The check waits at most 2 s for a lock, like tenancy_enter's lookup: a unit holding
    -- `LOCK TABLE organizations` stalls no bootstrap for longer (55P03).
    ignored := pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', org::text, true)
            || pg_catalog.set_config('app.current_user_id', member, true)
            || pg_catalog.set_config('app.current_org_role', '', true)
            || pg_catalog.set_config('app.current_permissions', '', true)
            || pg_catalog.set_config('lock_timeout', '2s', true);
    IF EXISTS (SELECT 1 FROM organizations WHERE id = org) THEN
        RAISE EXCEPTION 'tenancy: organization exists' USING ERRCODE = 'TNC04';
    END IF;
    ignored := pg_catalog.set_config('app.current_org_role', 'owner', true)
            || pg_catalog.set_config('lock_timeout', lock_before, true)
            || coalesce(tenancy_propagate_context()::text, '');
END
$$;

-- Membership lookup for TenantPool::authorize (one autocommit round trip). It sets the
-- context for its own lookup (sealed in hardened mode: it runs as the owner to do so) and
-- restores the previous values before returning. It answers only the role of the
-- (organization, user) pair it is asked about, in a live organization, and never inside a
-- unit (TNC09): SQL running in one organization's unit cannot ask about another's members.
-- In hardened mode it also needs the application's signature over ('role', org, member,
-- expiry), like the entries (TNC06; TNC08 once expired): SQL that cleared its unit's marker to
-- pass the check above still cannot sign. Like tenancy_enter's, its lookup waits at most 2 s
-- for a lock (a unit holding `LOCK TABLE organization_members` stalls no `authorize` for
-- longer; 55P03): a SET clause, which the function's search_path already makes it pay for.
--
-- It answers the membership's role and the permissions that role grants (NULLs for no
-- membership); tenancy_member_role answers the role alone.
CREATE FUNCTION tenancy_member_access(org uuid, member text, expiry bigint DEFAULT NULL,
                                      signature text DEFAULT NULL,
                                      OUT role text, OUT permissions text[])
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path FROM CURRENT
    SET lock_timeout = '2s'
    AS $$
DECLARE
    found_role  text;
    found_perms text;
    names      text[] := ARRAY['app.current_unit', 'app.current_org_id', 'app.current_user_id',
                               'app.current_org_role', 'app.current_permissions',
                               'app.context_expiry', 'app.context_seal'];
    previous   text[];
    ignored    text;
BEGIN
    PERFORM tenancy_assert_not_entered();
    IF EXISTS (SELECT 1 FROM tenancy_context_key) THEN
        IF signature IS NULL
           OR tenancy_hmac(tenancy_signed_field('role') || '|' || tenancy_signed_field(org::text)
                           || '|' || tenancy_signed_field(member)
                           || '|' || tenancy_signed_field(expiry::text))
              IS DISTINCT FROM signature THEN
            RAISE EXCEPTION 'tenancy: bad lookup signature' USING ERRCODE = 'TNC06';
        END IF;
        IF expiry < extract(epoch FROM pg_catalog.statement_timestamp()) THEN
            RAISE EXCEPTION 'tenancy: expired lookup signature' USING ERRCODE = 'TNC08';
        END IF;
    END IF;
    SELECT pg_catalog.array_agg(coalesce(pg_catalog.current_setting(n, true), '') ORDER BY o)
      INTO previous FROM pg_catalog.unnest(names) WITH ORDINALITY AS t(n, o);
    PERFORM tenancy_set_context(org, member, NULL);
    IF EXISTS (SELECT 1 FROM tenancy_context_key) THEN
        PERFORM tenancy_seal((extract(epoch FROM pg_catalog.statement_timestamp()) + 60)::bigint);
    END IF;
    SELECT m.role, tenancy_role_permissions(coalesce(m.role_key, m.role))
      INTO found_role, found_perms
      FROM organization_members m JOIN organizations o ON o.id = m.organization_id
     WHERE m.organization_id = org AND m.user_id = member AND o.id = org AND o.deleted_at IS NULL;
    FOR i IN 1..7 LOOP
        ignored := pg_catalog.set_config(names[i], previous[i], true);
    END LOOP;
    role := found_role;
    permissions := CASE WHEN found_role IS NOT NULL
                        THEN tenancy_permission_array(found_perms)
                   END;
END
$$;

CREATE FUNCTION tenancy_member_role(org uuid, member text, expiry bigint DEFAULT NULL,
                                    signature text DEFAULT NULL) RETURNS text
    LANGUAGE sql VOLATILE
    SET search_path FROM CURRENT
    AS $$ SELECT a.role FROM tenancy_member_access(org, member, expiry, signature) AS a $$;

-- (tenancy_seal and tenancy_context_key are hardened mode's, in ..._06_tenancy_hardened.sql;
-- tenancy_role_permissions and tenancy_permission_array are the permissions', in
-- ..._07_tenancy_permissions.sql; PL/pgSQL resolves them when called.)

SELECT tenancy_pin_search_path();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
