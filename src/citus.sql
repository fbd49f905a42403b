-- pg-tenancy on Citus: run once on the coordinator, after the migrations, as the role that ran
-- them (`pg_tenancy::citus::SETUP`). Refuses without Citus, and in hardened mode.
--
-- Placement: the crate's own tables (organizations, organization_members and the bookkeeping
-- tables) stay plain tables on the coordinator, where the entries read them: their policies
-- hold subqueries and some have UNIQUE keys without organization_id, which Citus refuses on
-- distributed and reference tables. A tenant table is distributed by organization_id, colocated
-- with the others (`tenancy_distribute`, below); its policies must use the bare form
-- `organization_id = tenancy_current_org_id()`.
--
-- Context: policies on distributed tables run on the workers, in the shard queries. The
-- entries' `set_config(..., true)` never leaves the coordinator; a `SET LOCAL` with
-- `citus.propagate_set_commands = 'local'` reaches every worker the transaction opens. So the
-- entries call `tenancy_propagate_context()` last (nothing on one server), which this file
-- replaces with one that re-issues the context, and the session settings the entry checked,
-- as SET LOCALs. A worker's transaction never has the coordinator's transaction_timestamp(),
-- so the unit's liveness check takes, in a backend that Citus opened for another node (its
-- application_name), the propagated marker, in the distributed transaction it was propagated
-- in only (Citus's distributed transaction id, the same on every node).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'tenancy: Citus is not installed in this database'
            USING ERRCODE = '0A000';
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy_context_key) THEN
        RAISE EXCEPTION 'tenancy: hardened mode is not supported on Citus (the seal is not verified on the workers)'
            USING ERRCODE = '0A000';
    END IF;
END
$$;

-- The current distributed transaction, as Citus identifies it on every node it reaches:
-- initiator node, transaction number and stamp (as epoch seconds: no TimeZone or DateStyle in
-- it), or NULL outside one. Citus assigns it on the coordinator at the transaction's first
-- distributed execution, and on a worker in the `BEGIN` batch of every remote transaction
-- (`assign_distributed_transaction_id`, after the propagated SET LOCALs); it ends with the
-- transaction. PL/pgSQL: its query is planned once per session, where the worker runs it for
-- every shard query.
CREATE OR REPLACE FUNCTION tenancy_distributed_transaction() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
DECLARE
    t record;
BEGIN
    SELECT * INTO t FROM pg_catalog.get_current_transaction_id();
    IF t.transaction_number OPERATOR(pg_catalog.=) 0 THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.concat_ws(':', t.initiator_node_identifier, t.transaction_number,
                                EXTRACT(epoch FROM t.transaction_stamp));
END
$$;

-- The default mode's liveness check, Citus-aware. On the coordinator (and on one server) as
-- before: the marker is this transaction's timestamp. In a backend Citus opened for another
-- node's transaction, the marker that node's unit propagated with SET LOCAL, only in the
-- distributed transaction the unit propagated it in: `app.current_transaction`, which the
-- entry sets to its own distributed transaction, must name the worker's current one. A value
-- SQL in a unit leaves at session level on a worker connection names that unit's transaction,
-- which no later one has (a number Citus never hands out twice, and a stamp to the
-- microsecond).
-- (Written with this schema's name: an inlined body resolves names on the caller's
-- search_path, which SQL in a unit can leave changed on a worker connection.)
DO $do$
BEGIN
    EXECUTE pg_catalog.replace($f$
CREATE OR REPLACE FUNCTION @schema@.tenancy_current_unit_is_live() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN pg_catalog.current_setting('app.current_unit', true)
                           OPERATOR(pg_catalog.=) pg_catalog.transaction_timestamp()::pg_catalog.text
                      THEN true
                      ELSE pg_catalog.starts_with(pg_catalog.current_setting('application_name'),
                                                  'citus_internal gpid=')
                           AND pg_catalog.current_setting('app.current_unit', true)
                               OPERATOR(pg_catalog.<>) ''
                           AND pg_catalog.current_setting('app.current_transaction', true)
                               OPERATOR(pg_catalog.=) @schema@.tenancy_distributed_transaction() END $$
$f$, '@schema@', pg_catalog.quote_ident(pg_catalog.current_schema()));
END
$do$;

-- Re-issues the unit's context settings (its permissions included) as SET LOCAL, which Citus
-- sends to every worker the transaction opens (and to those it has open). Every entry calls it
-- after setting the context, the switcher's and the bootstrap's empty values included, so that
-- a unit always overrides whatever a worker connection holds.
--
-- Then the session settings the entry has just checked on the coordinator
-- (tenancy_session_settings()), re-asserted the same way: a coordinator backend keeps its
-- worker connections between transactions, and SQL in a unit can leave a value at session
-- level on them (`SELECT set_config('statement_timeout', '1', false) FROM <distributed table>`
-- runs on the shards), which the entry, reading the coordinator's session, does not see; the
-- next unit's shard queries run with the pool's values instead. Two are left out: Citus never
-- propagates `exit_on_error` (its list of settings unsafe to propagate), and
-- `idle_session_timeout` applies between transactions only, where no SET LOCAL reaches.
-- `search_path` is the entry's own: the session's for tenancy_enter, the pinned path for the
-- entries with a SET clause (a SET LOCAL in those reverts on the coordinator at their end, and
-- reaches the workers all the same). Shard queries name every object with its schema either way.
-- (Written with this schema's name, which the session's search_path need not hold.)
DO $do$
BEGIN
    EXECUTE pg_catalog.replace($f$
CREATE OR REPLACE FUNCTION @schema@.tenancy_propagate_context() RETURNS void
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    ignored     text := pg_catalog.set_config('citus.propagate_set_commands', 'local', true);
    distributed text;
    setting     text;
BEGIN
    -- A coordinator session that calls itself a Citus-internal one (SQL in a unit can set its
    -- application_name at session level) would fail every distributed query of every later
    -- unit on the connection, or (the rebalancer's name) make Citus drop its worker
    -- connections after every transaction: refused as unclean, and the pool closes the
    -- connection. (Citus's prefixes: CitusBackendPrefixes in its backend_data.c.)
    IF pg_catalog.starts_with(pg_catalog.current_setting('application_name'), 'citus_internal')
       OR pg_catalog.starts_with(pg_catalog.current_setting('application_name'), 'citus_rebalancer')
       OR pg_catalog.starts_with(pg_catalog.current_setting('application_name'), 'citus_run_command') THEN
        RAISE EXCEPTION 'tenancy: session not clean (application_name)' USING ERRCODE = 'TNC05';
    END IF;
    -- The unit's distributed transaction, made to exist now (Citus would assign it at the
    -- unit's first distributed execution, after the entry): create_intermediate_result starts
    -- Citus's coordinated transaction first of all (the result's file is named after it), then
    -- parses its query. Given one that does not parse, it stops there: the transaction has its
    -- id, and no file is written (writing and removing an empty result cost 0.2-0.45 ms per
    -- unit, docs/scaling.md). Only that syntax error is caught; should a later Citus parse
    -- first, the id is missing and the entry fails below, closed. No round trip.
    BEGIN
        PERFORM pg_catalog.create_intermediate_result('tenancy_unit', '(');
    EXCEPTION WHEN syntax_error THEN
        NULL;
    END;
    distributed := @schema@.tenancy_distributed_transaction();
    IF distributed IS NULL THEN
        RAISE EXCEPTION 'tenancy: Citus assigned this transaction no distributed transaction id';
    END IF;
    EXECUTE pg_catalog.format('SET LOCAL app.current_transaction = %L', distributed);
    EXECUTE pg_catalog.format('SET LOCAL app.current_unit = %L',
                              pg_catalog.current_setting('app.current_unit', true));
    EXECUTE pg_catalog.format('SET LOCAL app.current_org_id = %L',
                              pg_catalog.current_setting('app.current_org_id', true));
    EXECUTE pg_catalog.format('SET LOCAL app.current_user_id = %L',
                              pg_catalog.current_setting('app.current_user_id', true));
    EXECUTE pg_catalog.format('SET LOCAL app.current_org_role = %L',
                              pg_catalog.current_setting('app.current_org_role', true));
    EXECUTE pg_catalog.format('SET LOCAL app.current_permissions = %L',
                              pg_catalog.current_setting('app.current_permissions', true));
    FOREACH setting IN ARRAY ARRAY['statement_timeout', 'lock_timeout',
                                   'idle_in_transaction_session_timeout', 'row_security',
                                   'synchronous_commit', 'TimeZone', 'DateStyle',
                                   'IntervalStyle', 'bytea_output',
                                   'standard_conforming_strings', 'array_nulls',
                                   'extra_float_digits', 'transaction_timeout',
                                   'transaction_read_only'] LOOP
        -- (transaction_timeout exists from PostgreSQL 17 on: skipped where it does not.)
        IF pg_catalog.current_setting(setting, true) IS NOT NULL THEN
            EXECUTE pg_catalog.format('SET LOCAL %s = %L', setting,
                                      pg_catalog.current_setting(setting));
        END IF;
    END LOOP;
    -- A list of names, each sent as a string literal, which the list takes as it is: a quoted
    -- name unquoted here ("" inside it is one "; `""` is the empty name), an unquoted one in
    -- lower case, as PostgreSQL reads it (an unquoted name in the setting may hold any
    -- character but a comma or a space); the list empty as ''.
    EXECUTE 'SET LOCAL search_path = ' || coalesce(
        (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(
                    CASE WHEN pg_catalog.starts_with(m[1], '"')
                         THEN pg_catalog.replace(pg_catalog.substr(m[1], 2,
                                                     pg_catalog.length(m[1]) OPERATOR(pg_catalog.-) 2),
                                                 '""', '"')
                         ELSE pg_catalog.lower(m[1]) END), ', ')
           FROM pg_catalog.regexp_matches(pg_catalog.current_setting('search_path'),
                                          '("(?:[^"]|"")*"|[^,[:space:]]+)', 'g') AS m),
        '''''');
END
$$
$f$, '@schema@', pg_catalog.quote_ident(pg_catalog.current_schema()));
END
$do$;

-- Distributes a tenant table by its tenant column (organization_id), colocated with the other tenant tables (Citus's
-- default colocation: same column type, same shard count). Its foreign keys to organizations
-- are dropped first: Citus cannot enforce a key from a distributed table to a coordinator
-- table (the WITH CHECK policy still admits only the unit's organization, which the entry
-- found live). Its policies must be in the bare form (Citus refuses a subquery in them).
CREATE OR REPLACE FUNCTION tenancy_distribute(tenant_table regclass,
                                              tenant_column name DEFAULT 'organization_id')
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    fk name;
BEGIN
    IF EXISTS (SELECT 1 FROM tenancy_context_key) THEN
        RAISE EXCEPTION 'tenancy: hardened mode is not supported on Citus'
            USING ERRCODE = '0A000';
    END IF;
    FOR fk IN SELECT conname FROM pg_catalog.pg_constraint
               WHERE conrelid = tenant_table AND contype = 'f'
                 AND confrelid = 'organizations'::regclass LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', tenant_table, fk);
    END LOOP;
    PERFORM create_distributed_table(tenant_table, tenant_column);
END
$$;
REVOKE ALL ON FUNCTION tenancy_distribute(regclass, name) FROM PUBLIC;

-- Hardened mode stays off on Citus: enabling it (tenancy_enable_hardened_mode writes the key)
-- is refused here, loudly, rather than leaving units that see nothing on the workers.
CREATE OR REPLACE FUNCTION tenancy_refuse_hardened_mode() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'tenancy: hardened mode is not supported on Citus (the seal is not verified on the workers)'
        USING ERRCODE = '0A000';
END
$$;
DROP TRIGGER IF EXISTS tenancy_refuse_hardened_mode ON tenancy_context_key;
CREATE TRIGGER tenancy_refuse_hardened_mode BEFORE INSERT ON tenancy_context_key
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_refuse_hardened_mode();

-- Purging on Citus. tenancy_purge_organization (the service path, ServicePool::
-- purge_organization) finds the tables to purge by their foreign key to organizations
-- (tenancy_purge_fk_targets), which a distributed tenant table no longer has
-- (tenancy_distribute drops it). Its list here also holds every hash-distributed table with
-- forced Row-Level Security (a tenant table, as tenancy_distribute leaves it), by its
-- distribution column, except those with a foreign key to another hash-distributed table
-- (their parent's ON DELETE CASCADE reaches them, as on one server). The DELETEs run in the
-- service unit, under the tables' policies on the workers: only the organization's rows.
CREATE OR REPLACE FUNCTION tenancy_purge_targets(OUT tbl regclass, OUT col name)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    AS $$ SELECT tbl, col FROM tenancy_purge_fk_targets()
          UNION
          SELECT p.logicalrelid::regclass,
                 pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)::name
            FROM pg_catalog.pg_dist_partition p
            JOIN pg_catalog.pg_class r ON r.oid = p.logicalrelid
           WHERE p.partmethod = 'h' AND r.relforcerowsecurity
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f
                              JOIN pg_catalog.pg_dist_partition q ON q.logicalrelid = f.confrelid
                             WHERE f.conrelid = p.logicalrelid AND f.contype = 'f'
                               AND q.partmethod = 'h' AND f.confrelid <> f.conrelid) $$;
-- Pinned as the migrations pin theirs: pg_catalog first, then this schema, pg_temp last.
DO $$
BEGIN
    EXECUTE pg_catalog.format('ALTER FUNCTION tenancy_purge_targets() '
                              'SET search_path = pg_catalog, %I, pg_temp', pg_catalog.current_schema());
END
$$;

-- The context functions a tenant table's policy calls, not inlined on Citus. Citus sends every
-- shard statement to the worker as an unnamed statement, which the worker plans again each time
-- (and the coordinator plans a distributed statement's custom plan again too): an inlinable SQL
-- function's body is parsed, analysed and folded into the plan on every execution there. As
-- PL/pgSQL, compiled once per session, the call costs the plan nothing to build, and it is
-- evaluated once per scan where the policy is the index condition (the tenant column is
-- indexed: the audit's `no_tenant_index`). Where the policy is a filter instead (a
-- sequential scan), it runs per row, about 1.5 times the inlined form's per-row cost
-- (docs/scaling.md, "The context functions in PL/pgSQL"). Same values as the one-server functions
-- (tenancy_install_context_functions, default mode: hardened mode is refused on Citus).
DO $$
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION %1$I.tenancy_current_org_id() RETURNS pg_catalog.uuid
            LANGUAGE plpgsql STABLE PARALLEL SAFE
            AS $b$ BEGIN
%2$s                RETURN CASE WHEN %1$I.tenancy_current_unit_is_live()
                            THEN NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::pg_catalog.uuid END;
            END $b$;
        CREATE OR REPLACE FUNCTION %1$I.tenancy_current_org_id_at_least(role pg_catalog.text)
            RETURNS pg_catalog.uuid
            LANGUAGE plpgsql STABLE PARALLEL SAFE
            AS $b$ BEGIN
%2$s                RETURN CASE WHEN %1$I.tenancy_current_unit_is_live()
                             AND %1$I.tenancy_role_rank(pg_catalog.current_setting('app.current_org_role', true))
                                 OPERATOR(pg_catalog.>=) %1$I.tenancy_role_rank(role)
                            THEN NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::pg_catalog.uuid END;
            END $b$;
        CREATE OR REPLACE FUNCTION %1$I.tenancy_current_org_id_with(permission pg_catalog.text)
            RETURNS pg_catalog.uuid
            LANGUAGE plpgsql STABLE PARALLEL SAFE
            AS $b$ BEGIN
%2$s                RETURN CASE WHEN %1$I.tenancy_current_unit_is_live()
                             AND pg_catalog.strpos(pg_catalog.current_setting('app.current_permissions', true),
                                                   pg_catalog.concat(',', permission, ','))
                                 OPERATOR(pg_catalog.>) 0
                            THEN NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::pg_catalog.uuid END;
            END $b$;
    $f$, pg_catalog.current_schema(),
    -- In a backend Citus opened for another node, two things SQL in a unit can leave there at
    -- session level that the entry cannot re-assert. An application_name that is no longer
    -- Citus's: the liveness check would not know the backend for Citus's, and the next units
    -- would see no rows and have every write refused, without an error; recognised by the
    -- unit's own distributed transaction (which only a unit's propagation names, and which is
    -- compared last: the coordinator's unit marker is this transaction's timestamp, so the
    -- coordinator never gets that far). And its client_encoding must be the database's.
    -- Citus connects with it, and does not propagate a SET LOCAL of it, so a value SQL in a
    -- unit leaves there at session level would hold for the next units' shard queries, whose
    -- bound values Citus writes into the query text: their text would be stored converted
    -- twice. Refused instead, and the backend ends with the error (exit_on_error, for this
    -- transaction): Citus drops the broken connection from its cache, so the unit fails and
    -- the next one gets a new, clean worker connection. (Written into each function: a call
    -- of another PL/pgSQL function would cost each evaluation.)
    pg_catalog.format($i$
                IF (CASE WHEN pg_catalog.starts_with(pg_catalog.current_setting('application_name'),
                                                    'citus_internal gpid=')
                        THEN pg_catalog.current_setting('client_encoding')
                             OPERATOR(pg_catalog.<>) pg_catalog.current_setting('server_encoding')
                        ELSE pg_catalog.current_setting('app.current_unit', true)
                             OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp()::pg_catalog.text
                         AND pg_catalog.current_setting('app.current_transaction', true)
                             OPERATOR(pg_catalog.=) %1$I.tenancy_distributed_transaction() END) THEN
                    PERFORM pg_catalog.set_config('exit_on_error', 'on', true);
                    RAISE EXCEPTION 'tenancy: session not clean (application_name or client_encoding on a worker connection)'
                        USING ERRCODE = 'TNC05';
                END IF;
$i$, pg_catalog.current_schema()));
END
$$;
