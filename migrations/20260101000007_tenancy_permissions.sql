-- pg-tenancy 7/7: permissions. Which permissions each role grants, as the database holds them
-- now (Clerk: `org:<feature>:<permission>` keys, custom roles beside `org:admin` and
-- `org:member`), so that a policy can ask for a permission at the moment of the write.
--
-- Provides the tables `tenancy_roles` (a role key and the permissions it grants, instance-wide:
-- no organization's data) and `tenancy_permissions` (the identity provider's permission ids and
-- keys, for its `permission.*` events, which name a permission by id only), written by service
-- units entered without an organization (the Clerk sync's `role.*` and `permission.*` events,
-- or `tenancy_set_role_permissions` for applications without Clerk). Every entry sets the unit's
-- permissions with its context (`app.current_permissions`, same round trip): those of the
-- membership's role key (`organization_members.role_key`, else its `role`), read in the entry's
-- membership query through `tenancy_role_permissions(key)`: a function that the table's writes
-- rebuild (below) as one inlined expression over the definitions, so that the entry scans no
-- second table. Policies read them through the context functions of file 2:
--     organization_id = (SELECT tenancy_current_org_id_with('org:invoices:write'))
-- (one per-statement value, still an index condition), and `tenancy_current_permissions()`.
--
-- A unit that acts with a lower role than its membership holds (an OrgContext claiming less)
-- gets no permissions: the database does not know which the lower role's key would grant.
--
-- No GRANT is needed: this file grants reading role definitions to everyone (the entries read
-- them as the application role) and writing them to `tenancy_service`.
--
-- Every writer of the definitions below first takes a SHARE ROW EXCLUSIVE lock on tenancy_roles
-- (tenancy_lock_roles): concurrent deliveries apply one after the other, each seeing what the
-- previous one committed (no version check can be passed by two at once). Entries only read
-- the table and never wait for it.

-- Functions below capture a search_path (SET search_path FROM CURRENT), which the end of this
-- file pins to pg_catalog first, then this schema, then pg_temp (tenancy_pin_search_path). The
-- caller's value is saved here and restored at the end of the file.
SELECT pg_catalog.set_config('tenancy.migration_search_path',
                             pg_catalog.current_setting('search_path'), false);
SELECT pg_catalog.set_config('search_path',
    pg_catalog.format('%I, pg_catalog, pg_temp', pg_catalog.current_schema()), false);

CREATE TABLE tenancy_roles (
    -- The role key (Clerk: `org:admin`, `org:billing`; without Clerk: `owner`, `admin`,
    -- `member`, the ordered roles' names, or any key the service path writes on memberships).
    key                 text        PRIMARY KEY CHECK (key <> ''),
    -- The permissions the role grants, as the entries set them: `,a,b,` (a leading and a
    -- trailing comma, so that a policy finds `,a,` with one strpos), '' for none. Keys hold no
    -- comma and no white space. Write it with tenancy_set_role_permissions.
    permissions         text        NOT NULL DEFAULT ''
                        CHECK (permissions = '' OR permissions ~ '^(,[^,[:space:]]+)+,$'),
    -- The identity provider's role id (Clerk: `role_...`) and the `updated_at` (unix ms) of the
    -- state the row holds: an older event never overwrites newer state.
    external_id         text        UNIQUE,
    external_updated_at bigint,
    -- Set when the provider deleted the role: the row stays (a late event for its id changes
    -- nothing) and grants nothing. A new role that takes its key moves it aside first, under
    -- its id as the key (tenancy_retire_key), so the id's deletion is never lost.
    deleted_at          timestamptz,
    -- The provider's permission ids the role grants (NULL for a definition set by SQL):
    -- `permissions` is their current keys, recomputed when one is renamed or deleted.
    permission_ids      text[]
);

CREATE TABLE tenancy_permissions (
    -- The identity provider's permission id (Clerk: `perm_...`) and key.
    external_id         text        PRIMARY KEY,
    key                 text        NOT NULL CHECK (key ~ '^[^,[:space:]]+$'),
    external_updated_at bigint,
    -- Set when the provider deleted the permission: a late role event that still lists it does
    -- not grant it again.
    deleted_at          timestamptz
);

ALTER TABLE tenancy_roles       ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy_roles       FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenancy_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy_permissions FORCE  ROW LEVEL SECURITY;

-- Role definitions are the instance's configuration, the same for every organization: anyone
-- reads them (the entries do, as the application role). Only a service unit entered without an
-- organization writes them (or reads the permission ids).
GRANT SELECT ON tenancy_roles TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenancy_roles, tenancy_permissions TO tenancy_service;
CREATE POLICY read_all ON tenancy_roles FOR SELECT USING (true);
COMMENT ON POLICY read_all ON tenancy_roles IS
    'tenancy-audit: allow. Role definitions are instance-wide configuration, no organization''s data: every unit reads them (the entries look the unit''s permissions up here).';
CREATE POLICY service_maintenance ON tenancy_roles TO tenancy_service
    USING      ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
COMMENT ON POLICY service_maintenance ON tenancy_roles IS
    'tenancy-audit: allow. Service units entered without an organization write the instance''s role definitions (tenancy_service only).';
CREATE POLICY service_maintenance ON tenancy_permissions TO tenancy_service
    USING      ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service')
    WITH CHECK ((SELECT tenancy_current_org_id()) IS NULL AND (SELECT tenancy_current_org_role()) = 'service');
COMMENT ON POLICY service_maintenance ON tenancy_permissions IS
    'tenancy-audit: allow. Service units entered without an organization keep the identity provider''s permission ids (tenancy_service only).';

-- Serializes the writers of role definitions (above). Waits at most 5 s (55P03: a retried
-- delivery applies later).
-- Only in READ COMMITTED: the statements after the lock then see every definition committed
-- before it (a REPEATABLE READ snapshot, taken before the lock, would not: 40001).
CREATE FUNCTION tenancy_lock_roles() RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    SET lock_timeout = '5s'
    AS $$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
        RAISE EXCEPTION 'tenancy: role definitions are written in READ COMMITTED transactions only'
            USING ERRCODE = '40001';
    END IF;
    LOCK TABLE tenancy_roles, tenancy_permissions IN SHARE ROW EXCLUSIVE MODE;
END
$$;

-- The stored form of a set of permissions: sorted, distinct, `,a,b,` ('' for none). NULL
-- elements and empty keys are dropped; a key with a comma or white space fails the table's
-- check.
CREATE FUNCTION tenancy_permission_list(permissions text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path FROM CURRENT
    AS $$ SELECT coalesce(',' || pg_catalog.string_agg(DISTINCT p, ',' ORDER BY p) || ',', '')
            FROM pg_catalog.unnest(permissions) AS t(p) WHERE p <> '' $$;

-- The other way: the permissions a stored list holds ('{}' for '' or NULL).
CREATE FUNCTION tenancy_permission_array(list text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path FROM CURRENT
    AS $$ SELECT pg_catalog.string_to_array(pg_catalog.btrim(coalesce(list, ''), ','), ',') $$;

-- The current keys of the provider's permissions `ids`, as a stored list (deleted ones left
-- out): what a provider's role grants.
CREATE FUNCTION tenancy_granted(ids text[]) RETURNS text
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
    AS $$ SELECT tenancy_permission_list(pg_catalog.array_agg(p.key)) FROM tenancy_permissions p
           WHERE p.external_id = ANY (ids) AND p.deleted_at IS NULL $$;

-- Moves a deleted provider role's row out of `key`'s way, under its id as the key: the key
-- is free for a new definition, and the id's deletion stays (a late event for it changes
-- nothing).
CREATE FUNCTION tenancy_retire_key(key text) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path FROM CURRENT
    AS $$ UPDATE tenancy_roles r SET key = r.external_id
           WHERE r.key = tenancy_retire_key.key AND r.deleted_at IS NOT NULL
             AND r.external_id IS NOT NULL AND r.key <> r.external_id $$;

-- Sets the permissions `key` grants (for applications without Clerk, and for Clerk's roles
-- that existed before the sync ran: its events only carry changes). In a service unit entered
-- without an organization (`ServicePool::set_role_permissions`); a role the provider deleted
-- is defined again (its id's deletion kept aside). Takes effect at the next unit's entry.
CREATE FUNCTION tenancy_set_role_permissions(key text, permissions text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
BEGIN
    PERFORM tenancy_lock_roles();
    PERFORM tenancy_retire_key(key);
    INSERT INTO tenancy_roles AS cur (key, permissions)
    VALUES (key, tenancy_permission_list(permissions))
    ON CONFLICT ON CONSTRAINT tenancy_roles_pkey DO UPDATE
    SET permissions = EXCLUDED.permissions, permission_ids = NULL;
END
$$;

-- The identity provider's role event (`role.created` / `role.updated`): the role `id` now has
-- `key` and grants the permissions `permission_ids` (with their keys and versions), as of
-- `updated_at` (unix ms). Applied when newer than the row's state; a deleted role's id, or a
-- deleted permission, stays deleted. Returns whether the role changed.
CREATE FUNCTION tenancy_sync_role(id text, key text, permission_ids text[],
                                  permission_keys text[], permission_versions bigint[],
                                  updated_at bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    granted text;
    n       bigint;
BEGIN
    IF pg_catalog.cardinality(permission_ids) IS DISTINCT FROM pg_catalog.cardinality(permission_keys)
       OR pg_catalog.cardinality(permission_ids) IS DISTINCT FROM pg_catalog.cardinality(permission_versions) THEN
        RAISE EXCEPTION 'tenancy: permission ids, keys and versions differ in number'
            USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy_lock_roles();
    -- An event not newer than the role's state, or for a deleted role, changes nothing (and
    -- teaches nothing about its permissions' keys). Nor does one that would move the role onto
    -- a key another live role of the provider holds (the event that frees it is on its way).
    IF EXISTS (SELECT 1 FROM tenancy_roles r
                WHERE r.external_id = id
                  AND (r.deleted_at IS NOT NULL OR r.external_updated_at >= updated_at))
       OR EXISTS (SELECT 1 FROM tenancy_roles r
                   WHERE r.key = tenancy_sync_role.key AND r.external_id <> id
                     AND r.deleted_at IS NULL) THEN
        RETURN false;
    END IF;
    -- The role event names each permission's id: remember its key (for permission.deleted,
    -- which names the id only), unless a newer version is known. A permission the provider
    -- deleted stays deleted, and is not granted.
    INSERT INTO tenancy_permissions AS cur (external_id, key, external_updated_at)
    SELECT DISTINCT ON (i) i, k, v
      FROM ROWS FROM (pg_catalog.unnest(permission_ids), pg_catalog.unnest(permission_keys),
                     pg_catalog.unnest(permission_versions)) AS t(i, k, v)
     ORDER BY i, v DESC
    ON CONFLICT (external_id) DO UPDATE
    SET key = EXCLUDED.key, external_updated_at = EXCLUDED.external_updated_at
    WHERE cur.deleted_at IS NULL
      AND (cur.external_updated_at IS NULL OR cur.external_updated_at <= EXCLUDED.external_updated_at);
    -- What the role grants: each listed permission's latest known key (not the event's, which
    -- may be older than a rename), unless deleted; kept as ids, so that a later rename or
    -- deletion of one of them recomputes it.
    granted := tenancy_granted(permission_ids);
    -- The id's older row under another key (the role's key changed) goes; a deleted role's row
    -- on the key moves aside.
    DELETE FROM tenancy_roles r WHERE r.external_id = id AND r.key <> tenancy_sync_role.key;
    PERFORM tenancy_retire_key(key);
    INSERT INTO tenancy_roles AS cur (key, permissions, external_id, external_updated_at,
                                      permission_ids)
    VALUES (key, coalesce(granted, ''), id, updated_at, permission_ids)
    ON CONFLICT ON CONSTRAINT tenancy_roles_pkey DO UPDATE
    SET permissions = EXCLUDED.permissions, external_id = EXCLUDED.external_id,
        external_updated_at = EXCLUDED.external_updated_at,
        permission_ids = EXCLUDED.permission_ids
    WHERE cur.external_id IS NULL
       OR (cur.external_id = EXCLUDED.external_id
           AND cur.external_updated_at < EXCLUDED.external_updated_at);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;

-- `role.deleted`: the role grants nothing any more; its row stays as the id's tombstone. When
-- the deletion arrives before the role (any order), the tombstone is a row of its own, under
-- the id as its key (the event names no key), so that the late creation changes nothing.
CREATE FUNCTION tenancy_sync_role_deleted(id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tenancy_lock_roles();
    UPDATE tenancy_roles SET permissions = '', deleted_at = pg_catalog.now()
     WHERE external_id = id AND deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 AND NOT EXISTS (SELECT 1 FROM tenancy_roles WHERE external_id = id) THEN
        INSERT INTO tenancy_roles (key, external_id, deleted_at)
        VALUES (id, id, pg_catalog.now())
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    RETURN n > 0;
END
$$;

-- `permission.created` / `permission.updated`: the permission `id` has `key`. When its key
-- changed, every provider role that grants the id grants the new key (definitions set by SQL,
-- which name keys, not ids, are not the provider's to change).
CREATE FUNCTION tenancy_sync_permission(id text, key text, updated_at bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tenancy_lock_roles();
    INSERT INTO tenancy_permissions AS cur (external_id, key, external_updated_at)
    VALUES (id, key, updated_at)
    ON CONFLICT (external_id) DO UPDATE
    SET key = EXCLUDED.key, external_updated_at = EXCLUDED.external_updated_at
    WHERE cur.deleted_at IS NULL
      AND (cur.external_updated_at IS NULL OR cur.external_updated_at < EXCLUDED.external_updated_at);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM tenancy_regrant(id);
    RETURN n > 0;
END
$$;

-- `permission.deleted`: no role grants it any more, and a late role event that still lists it
-- does not grant it again.
CREATE FUNCTION tenancy_sync_permission_deleted(id text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tenancy_lock_roles();
    INSERT INTO tenancy_permissions AS cur (external_id, key, deleted_at)
    VALUES (id, '-', pg_catalog.now())
    ON CONFLICT (external_id) DO UPDATE SET deleted_at = pg_catalog.now()
    WHERE cur.deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM tenancy_regrant(id);
    RETURN n > 0;
END
$$;

-- Recomputes what every provider role granting the permission `id` grants, from the ids' keys.
CREATE FUNCTION tenancy_regrant(id text) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path FROM CURRENT
    AS $$ UPDATE tenancy_roles r SET permissions = coalesce(tenancy_granted(r.permission_ids), '')
           WHERE tenancy_regrant.id = ANY (r.permission_ids) AND r.deleted_at IS NULL
             AND r.permissions IS DISTINCT FROM coalesce(tenancy_granted(r.permission_ids), '') $$;

-- ---------------------------------------------------------------------------------------------
-- The definitions as the entries read them: `tenancy_role_permissions(key)`, the permissions
-- `key` grants ('' for none), one CASE over the live definitions, inlined into the entry's
-- membership query (no scan of tenancy_roles per unit; the entries' cached plans are replanned
-- when it changes). Every statement that writes tenancy_roles rebuilds it, in the same
-- transaction (a statement trigger, as the owner: the function is the owner's), so it is never
-- other than the committed table. Its body names pg_catalog's `=` (inlined, it is parsed on the
-- caller's search_path). One comparison per defined role: an instance with tens of roles costs
-- tens of comparisons per unit; more than 100 live definitions are refused (54000). The rebuild
-- takes the writers' lock (tenancy_lock_roles: READ COMMITTED, so that it reads every committed
-- definition, not a snapshot older than the last writer's), and fires on a logical-replication
-- subscriber too.
CREATE FUNCTION tenancy_role_permissions(key text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT ''::pg_catalog.text $$;

CREATE FUNCTION tenancy_build_role_permissions() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    s    text := tenancy_own_schema();
    body text;
    n    bigint;
BEGIN
    PERFORM tenancy_lock_roles();
    SELECT pg_catalog.count(*),
           'SELECT CASE '
           || pg_catalog.string_agg(pg_catalog.format('WHEN $1 OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN %L::pg_catalog.text',
                                                      r.key, r.permissions), ' ' ORDER BY r.key)
           || ' ELSE ''''::pg_catalog.text END'
      INTO n, body
      FROM tenancy_roles r WHERE r.permissions <> '';
    IF n > 100 THEN
        RAISE EXCEPTION 'tenancy: more than 100 roles grant permissions (every entry compares each)'
            USING ERRCODE = '54000';
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE OR REPLACE FUNCTION %s.tenancy_role_permissions(key text) RETURNS text '
        'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
        s, coalesce(body, 'SELECT ''''::pg_catalog.text'));
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy_build_role_permissions() FROM PUBLIC;

CREATE TRIGGER tenancy_build_role_permissions
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy_roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_build_role_permissions();
ALTER TABLE tenancy_roles ENABLE ALWAYS TRIGGER tenancy_build_role_permissions;

SELECT tenancy_pin_search_path();

-- The caller's search_path back, and no trace of the saved value.
SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('tenancy.migration_search_path'), false);
RESET tenancy.migration_search_path;
