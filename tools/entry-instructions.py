#!/usr/bin/env python3
"""Server instructions per unit of work, counted by valgrind: deterministic, so that a change to
the entry or the policies can be measured on a busy machine where timings are noise.

    python3 tools/entry-instructions.py [--repo DIR] [--transactions N] [--floors] [--c-entry]

Starts a throwaway PostgreSQL (`$TENANCY_PG_BINDIR`, else `pg_config --bindir`; as
root, the server runs as the `postgres` user), applies DIR's migrations and example migrations
(default: this checkout; point it at an older checkout to compare), seeds 1,000 organizations
with one admin and 20 projects each, then runs N and 3N units of each kind in a single-user
backend under `valgrind --tool=callgrind` and prints the difference per unit (so that start-up
cancels out):

    entry-instructions: <unit> = <thousands of instructions> kIr/unit

Units (each `BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE`, one point query on
`projects`, `COMMIT`):
- plain_tx: a role with BYPASSRLS, the query filtered by organization explicitly;
- context_without_rls: the same role and query after `CALL tenancy_enter(...)` in the BEGIN
  batch (the entry, its lookup without policies);
- write_unit: the application role, `CALL tenancy_enter(...)` as TenantPool sends it, the query
  filtered by the policy;
- hardened_write: the same in hardened mode (`CALL tenancy_enter_signed(...)`, signed here);
- permission_unit (where the migrations have permissions): write_unit's query on a copy of
  `projects` whose policy asks for a permission (`tenancy_current_org_id_with(...)`), which the
  members' role grants.
- floor_empty_call, floor_set, floor_lookup_definer, floor_lookup_rls (with `--floors`): the
  floors of any entry written as a PL/pgSQL procedure `CALL`ed in the BEGIN batch, as the
  application role with write_unit's query: an empty procedure (no context: the query finds
  nothing); one that only sets the five context settings; one that also looks the membership
  and live organization up without row security (`SECURITY DEFINER`, owned by the BYPASSRLS
  role); the same lookup under the policies (the context set first, as the entry does).
- c_write_unit (with `--c-entry`): write_unit with `CALL tenancy_enter_c(...)`, the prototype C
  entry of `extension/pg_tenancy_entry` (installed first: `make -C extension/pg_tenancy_entry
  install` as root; the tool runs `CREATE EXTENSION pg_tenancy_entry SCHEMA public`).
The point query is a prepared statement (as sqlx sends it) except in hardened mode, whose entry
refuses SQL-level prepared statements: there both units are measured with the query as text
(`write_unit_text`). Needs valgrind (Debian: `apt-get install valgrind`). Takes a few minutes.
"""
import argparse, hashlib, hmac, os, pwd, re, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The settings older checkouts sent with every entry (newer ones read tenancy_session_settings()).
SETTINGS = ("pg_catalog.concat_ws('|', pg_catalog.current_setting('statement_timeout'), "
            "pg_catalog.current_setting('lock_timeout'), "
            "pg_catalog.current_setting('idle_in_transaction_session_timeout'), "
            "pg_catalog.current_setting('idle_session_timeout'), "
            "pg_catalog.current_setting('row_security'), "
            "pg_catalog.current_setting('synchronous_commit'), "
            "pg_catalog.current_setting('search_path'))")
BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE"
KEY = bytes(range(32))
RLS_QUERY = "SELECT name FROM projects WHERE id = $1 AND $2::uuid IS NOT NULL"
PLAIN_QUERY = "SELECT name FROM projects WHERE organization_id = $2 AND id = $1"
PERMITTED_QUERY = "SELECT name FROM projects_permitted WHERE id = $1 AND $2::uuid IS NOT NULL"


def bindir():
    if os.environ.get("TENANCY_PG_BINDIR"):
        return os.environ["TENANCY_PG_BINDIR"]
    if shutil.which("pg_config"):
        return subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return os.path.dirname(os.path.realpath(shutil.which("postgres")))


class Server:
    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="tenancy-ir-")
        self.data = os.path.join(self.dir, "data")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def run(self, args, **kw):
        if self.as_root:
            args = ["su", "postgres", "-c", " ".join(_quote(a) for a in args)]
        return subprocess.run(args, check=True, **kw)

    def start(self):
        self.run([f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres"],
                 capture_output=True)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = ''\nunix_socket_directories = '{self.dir}'\n"
                    "fsync = off\n")
        self.run([f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-l",
                  os.path.join(self.dir, "log"), "start"], capture_output=True)

    def stop(self):
        self.run([f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop"],
                 capture_output=True)

    def close(self):
        """Stops the server if it runs, and removes its directory."""
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, db, user, sql=None, file=None):
        args = [f"{self.bin}/psql", "-h", self.dir, "-U", user, "-d", db, "-v",
                "ON_ERROR_STOP=1", "-qAt"]
        args += ["-f", file] if file else ["-c", sql]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def single(self, db, script):
        args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                f"{self.bin}/postgres", "--single", "-D", self.data, db]
        if self.as_root:
            args = ["su", "postgres", "-c", " ".join(_quote(a) for a in args)]
        out = subprocess.run(args, input=script, capture_output=True, text=True)
        text = out.stdout + out.stderr
        if "ERROR" in text:
            raise SystemExit("unit failed: " + next(l for l in text.splitlines() if "ERROR" in l))
        return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def _quote(a):
    return "'" + a.replace("'", "'\\''") + "'"


# The floor procedures of `--floors` (see the docstring).
FLOOR_CONTEXT = """pg_catalog.set_config('app.current_unit', pg_catalog.transaction_timestamp()::text, true)
            || pg_catalog.set_config('app.current_org_id', org::text, true)
            || pg_catalog.set_config('app.current_user_id', member, true)"""
FLOOR_LOOKUP = """SELECT m.role INTO found_role
      FROM public.organization_members m JOIN public.organizations o ON o.id = m.organization_id
     WHERE m.organization_id = org AND m.user_id = member AND o.id = org AND o.deleted_at IS NULL;
    IF found_role IS NULL THEN RAISE EXCEPTION 'not a member' USING ERRCODE = 'TNC01'; END IF;"""
FLOORS = f"""
CREATE PROCEDURE public.floor_empty(org uuid, member text) LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE PROCEDURE public.floor_set(org uuid, member text) LANGUAGE plpgsql AS $$
DECLARE ignored text;
BEGIN
    ignored := {FLOOR_CONTEXT}
            || pg_catalog.set_config('app.current_org_role', 'admin', true)
            || pg_catalog.set_config('app.current_permissions', '', true);
END $$;
CREATE PROCEDURE public.floor_lookup_rls(org uuid, member text) LANGUAGE plpgsql AS $$
DECLARE ignored text; found_role text;
BEGIN
    ignored := {FLOOR_CONTEXT};
    {FLOOR_LOOKUP}
    ignored := pg_catalog.set_config('app.current_org_role', found_role, true)
            || pg_catalog.set_config('app.current_permissions', '', true);
END $$;
CREATE PROCEDURE public.floor_lookup_definer(org uuid, member text) LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE ignored text; found_role text;
BEGIN
    {FLOOR_LOOKUP}
    ignored := {FLOOR_CONTEXT}
            || pg_catalog.set_config('app.current_org_role', found_role, true)
            || pg_catalog.set_config('app.current_permissions', '', true);
END $$;
ALTER PROCEDURE public.floor_lookup_definer(uuid, text) OWNER TO bypass;
"""


def setup(server, repo, c_entry=False, floors=False):
    p = server.psql
    p("postgres", "postgres", "CREATE ROLE owner LOGIN; CREATE ROLE app LOGIN; "
      "CREATE ROLE bypass LOGIN BYPASSRLS; CREATE ROLE tenancy_service NOLOGIN")
    for db in ("t", "h"):
        p("postgres", "postgres", f"CREATE DATABASE {db} OWNER owner")
        p(db, "postgres", "GRANT CREATE ON SCHEMA public TO owner")
        files = sorted(os.listdir(f"{repo}/migrations"))
        # (Checkouts before the example table moved out have `projects` in the migrations.)
        examples = f"{repo}/examples/migrations"
        extra = sorted(f"{examples}/{f}" for f in os.listdir(examples)) if os.path.isdir(examples) else []
        for f in [f"{repo}/migrations/{f}" for f in files if f.endswith(".sql")] + extra:
            p(db, "owner", file=f)
        p(db, "postgres", """
GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, organization_members, projects TO app, bypass;
SET session_replication_role = replica;
INSERT INTO organizations (id, name, slug) SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'org' || i, 'org-' || i FROM generate_series(1000, 1999) i;
INSERT INTO organization_members (organization_id, user_id, role) SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'user_' || i, 'admin' FROM generate_series(1000, 1999) i;
INSERT INTO projects (organization_id, id, name) SELECT ('00000000-0000-0000-0000-' || lpad((1000 + i % 1000)::text, 12, '0'))::uuid, ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'p' || i FROM generate_series(0, 19999) i;
ANALYZE;""")
    has_permissions = p("t", "owner", "SELECT count(*) FROM pg_proc WHERE proname = 'tenancy_current_org_id_with'") != "0"
    if has_permissions:
        p("t", "postgres", """
CREATE TABLE projects_permitted AS SELECT * FROM projects;
ALTER TABLE projects_permitted ADD PRIMARY KEY (organization_id, id);
ALTER TABLE projects_permitted ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects_permitted FORCE ROW LEVEL SECURITY;
CREATE POLICY permitted ON projects_permitted
    USING (organization_id = (SELECT tenancy_current_org_id_with('org:projects:read')));
GRANT SELECT ON projects_permitted TO app;
SELECT tenancy_set_role_permissions('admin', ARRAY['org:projects:read']);
ANALYZE projects_permitted;""")
    if c_entry:
        p("t", "postgres", "CREATE EXTENSION pg_tenancy_entry SCHEMA public")
    if floors:
        p("t", "postgres", FLOORS)
    p("h", "owner", f"SELECT tenancy_enable_hardened_mode('\\x{KEY.hex()}')")
    has_fn = p("t", "owner", "SELECT count(*) FROM pg_proc WHERE proname = 'tenancy_session_settings'")
    expected = p("t", "app", "SELECT tenancy_session_settings()" if has_fn != "0" else f"SELECT {SETTINGS}")
    nargs = lambda name: int(p("t", "owner", f"SELECT pronargs FROM pg_proc WHERE proname = '{name}'"))
    return expected, nargs("tenancy_enter"), nargs("tenancy_enter_signed"), has_permissions


def field(x):
    return f"{len(x.encode())}:{x}"


def units(expected, enter_args, signed_args, has_permissions, c_entry=False, floors=False):
    session = (f"{SETTINGS}, '{expected}'" if enter_args == 6 else f"'{expected}'")
    signed_session = (f"{SETTINGS}, '{expected}'" if signed_args == 9 else f"'{expected}'")

    def enter(org, user):
        return f"{BEGIN}; CALL \"public\".tenancy_enter('{org}', '{user}', 'admin', true, {session})"

    def enter_c(org, user):
        return f"{BEGIN}; CALL \"public\".tenancy_enter_c('{org}', '{user}', 'admin', true, '{expected}')"

    def floor(name):
        return lambda org, user: f"{BEGIN}; CALL public.{name}('{org}', '{user}')"

    def signed(org, user):
        expiry = str(int(time.time()) + 7200)
        msg = "|".join(field(x) for x in ["enter", "member", org, user, "admin", "true", expiry])
        sig = hmac.new(KEY, msg.encode(), hashlib.sha256).hexdigest()
        return (f"{BEGIN}; CALL \"public\".tenancy_enter_signed('member', '{org}', '{user}', "
                f"'admin', true, {signed_session}, {expiry}, '{sig}')")

    # name: (database, role, begin, query, prepared)
    return {
        "plain_tx": ("t", "bypass", lambda o, u: BEGIN, PLAIN_QUERY, True),
        "context_without_rls": ("t", "bypass", enter, PLAIN_QUERY, True),
        "write_unit": ("t", "app", enter, RLS_QUERY, True),
        "write_unit_text": ("t", "app", enter, RLS_QUERY, False),
        "hardened_write": ("h", "app", signed, RLS_QUERY, False),
        **({"permission_unit": ("t", "app", enter, PERMITTED_QUERY, True)} if has_permissions else {}),
        **({"c_write_unit": ("t", "app", enter_c, RLS_QUERY, True)} if c_entry else {}),
        **({name: ("t", "app", floor(name), RLS_QUERY, True)
            for name in ("floor_empty", "floor_set", "floor_lookup_definer", "floor_lookup_rls")}
           if floors else {}),
    }


def script(role, begin, query, prepared, n):
    lines = [f"SET SESSION AUTHORIZATION {role}"]
    if prepared:
        lines.append(f"PREPARE q(uuid, uuid) AS {query}")
    for k in range(n):
        i = 1000 + (k * 37) % 1000
        org = f"00000000-0000-0000-0000-00000000{i}"
        project = f"10000000-0000-0000-0000-{i - 1000 + 1000 * (k % 20):012d}"
        lines.append(begin(org, f"user_{i}"))
        if prepared:
            lines.append(f"EXECUTE q('{project}', '{org}')")
        else:
            lines.append(query.replace("$1", f"'{project}'::uuid").replace("$2", f"'{org}'::uuid"))
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=ROOT)
    ap.add_argument("--transactions", type=int, default=100)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--floors", action="store_true",
                    help="also measure the floors of an entry written in PL/pgSQL")
    ap.add_argument("--c-entry", action="store_true",
                    help="also measure c_write_unit (the prototype C entry, installed first)")
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found (Debian: apt-get install valgrind)")
    server = Server(bindir())
    try:
        server.start()
        expected, enter_args, signed_args, has_permissions = setup(server, os.path.abspath(a.repo),
                                                                     a.c_entry, a.floors)
        server.stop()
        for name, (db, role, begin, query, prepared) in units(expected, enter_args, signed_args,
                                                              has_permissions, a.c_entry,
                                                              a.floors).items():
            if a.only and name not in a.only:
                continue
            n = a.transactions
            small = server.single(db, script(role, begin, query, prepared, n))
            large = server.single(db, script(role, begin, query, prepared, 3 * n))
            print(f"entry-instructions: {name} = {(large - small) / (2 * n) / 1000:.1f} kIr/unit",
                  flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
