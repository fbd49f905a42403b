-- tenancy core schema: organizations, memberships, the reference tenant table `projects`,
-- and the Row-Level Security policies that isolate them.
--
-- Runs as a non-superuser database owner on an empty database (sqlx::migrate!, sqlx-cli, or
-- `psql -f` in file-name order). Creates no roles. The owner is subject to the policies too:
-- every table is FORCE ROW LEVEL SECURITY.

-- The tenant context, read from transaction-local settings. An unset or empty setting is NULL,
-- and `column = NULL` matches nothing: no context means no rows and no writes.
-- STABLE and called as `(select f())` in policies, so the planner evaluates it once per
-- statement (an InitPlan) and compares the bare indexed column with a constant.
CREATE FUNCTION tenancy_current_org_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.current_org_id', true), '')::uuid $$;

CREATE FUNCTION tenancy_current_user_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.current_user_id', true), '') $$;


CREATE TABLE organizations (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    -- NULL once the organization is deleted (frees the slug) or when the identity provider
    -- has slugs turned off.
    slug        text        UNIQUE,
    -- The identity provider's id (Clerk: `org_...`). `id` is derived from it (UUIDv5), so
    -- request authorization and webhook sync agree without a lookup.
    external_id text        UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when the organization is deleted. The row stays as a tombstone (an identity
    -- provider's late events cannot bring it back); nobody is admitted to it any more.
    deleted_at  timestamptz
);

CREATE TABLE organization_members (
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         text        NOT NULL CHECK (user_id <> ''),
    role            text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
-- Serves the organization switcher's policy (a user's own memberships).
CREATE INDEX organization_members_user_id_idx ON organization_members (user_id);

CREATE TABLE projects (
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    name            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- organization_id first: the primary key's index serves the policy, and the key is
    -- ready for Citus distribution by organization_id.
    PRIMARY KEY (organization_id, id)
);

ALTER TABLE organizations        ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations        FORCE  ROW LEVEL SECURITY;
ALTER TABLE organization_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_members FORCE  ROW LEVEL SECURITY;
ALTER TABLE projects             ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects             FORCE  ROW LEVEL SECURITY;

-- Tenant isolation: the bare column against the per-statement constant.
CREATE POLICY tenant_isolation ON organizations
    USING      (id = (SELECT tenancy_current_org_id()))
    WITH CHECK (id = (SELECT tenancy_current_org_id()));

CREATE POLICY tenant_isolation ON organization_members
    USING      (organization_id = (SELECT tenancy_current_org_id()))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()));

CREATE POLICY tenant_isolation ON projects
    USING      (organization_id = (SELECT tenancy_current_org_id()))
    WITH CHECK (organization_id = (SELECT tenancy_current_org_id()));

-- Organization switcher: with a user set and *no* organization chosen, a user may read their
-- own memberships and the organizations they belong to. SELECT only; it never applies once an
-- organization is chosen, so inside an organization a query still sees that organization alone.
CREATE POLICY own_memberships ON organization_members FOR SELECT
    USING ((SELECT tenancy_current_org_id()) IS NULL
           AND user_id = (SELECT tenancy_current_user_id()));

CREATE POLICY own_organizations ON organizations FOR SELECT
    USING ((SELECT tenancy_current_org_id()) IS NULL
           AND id IN (SELECT m.organization_id FROM organization_members m
                      WHERE m.user_id = (SELECT tenancy_current_user_id())));

-- The current user's role in the current organization, read from the membership itself rather
-- than from anything the application claims: a policy that uses it cannot be escalated by a
-- stale or forged role. NULL without a membership. Call it as `(SELECT tenancy_current_org_role())`
-- in policies of other tables (on organization_members itself it would recurse).
CREATE FUNCTION tenancy_current_org_role() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
        SELECT m.role FROM organization_members m
         WHERE m.organization_id = tenancy_current_org_id()
           AND m.user_id = tenancy_current_user_id()
    $$;

-- Membership check for `TenantPool::authorize` (one round trip, no bypass). It sets the context
-- transaction-locally for its own lookup and restores the previous values before returning, so
-- it never switches the context of a transaction it is called from.
CREATE FUNCTION tenancy_member_role(org uuid, member text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    found_role text;
    prev_org   text := coalesce(current_setting('app.current_org_id', true), '');
    prev_user  text := coalesce(current_setting('app.current_user_id', true), '');
BEGIN
    PERFORM set_config('app.current_org_id', org::text, true);
    PERFORM set_config('app.current_user_id', member, true);
    SELECT m.role INTO found_role
      FROM organization_members m JOIN organizations o ON o.id = m.organization_id
     WHERE m.organization_id = org AND m.user_id = member AND o.deleted_at IS NULL;
    PERFORM set_config('app.current_org_id', prev_org, true);
    PERFORM set_config('app.current_user_id', prev_user, true);
    RETURN found_role;
END
$$;

-- Membership check inside a unit of work (`TenantPool::with_member`): runs in the same round
-- trip as BEGIN, after the context is set. Raises TNC01 for a non-member and TNC02 for a role
-- below `min_role`.
CREATE FUNCTION tenancy_require_member(min_role text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    found_role text;
    rank_of    CONSTANT jsonb := '{"member": 1, "admin": 2, "owner": 3}';
BEGIN
    SELECT m.role INTO found_role
      FROM organization_members m JOIN organizations o ON o.id = m.organization_id
     WHERE m.organization_id = tenancy_current_org_id()
       AND m.user_id = tenancy_current_user_id()
       AND o.deleted_at IS NULL;
    IF found_role IS NULL THEN
        RAISE EXCEPTION 'tenancy: not a member of this organization' USING ERRCODE = 'TNC01';
    END IF;
    IF (rank_of ->> min_role) IS NULL THEN
        RAISE EXCEPTION 'tenancy: unknown role %', min_role USING ERRCODE = '22023';
    END IF;
    IF (rank_of ->> found_role)::int < (rank_of ->> min_role)::int THEN
        RAISE EXCEPTION 'tenancy: role below the required role'
            USING ERRCODE = 'TNC02', DETAIL = found_role;
    END IF;
END
$$;
