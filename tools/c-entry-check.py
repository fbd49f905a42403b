#!/usr/bin/env python3
"""Checks that the prototype C entry (`extension/pg_tenancy_entry`, `tenancy_enter_c`) behaves
as the shipped PL/pgSQL `tenancy_enter`: same SQLSTATE and message, same settings, same rows.

    python3 tools/c-entry-check.py [--repo DIR]

Needs the extension installed into the PostgreSQL the tools use (`pg_config`): as root,
`make -C extension/pg_tenancy_entry && make -C extension/pg_tenancy_entry install` (it installs
into that PostgreSQL's lib and extension directories). Starts a throwaway server as
tools/entry-instructions.py does (same migrations, example migrations and seed), runs
`CREATE EXTENSION pg_tenancy_entry SCHEMA public` as the superuser, adds a few memberships, then
runs each case below twice in a fresh session as the application role `app` (neither superuser
nor BYPASSRLS), once with `tenancy_enter` and once with `tenancy_enter_c`, the entry called as
TenantPool calls it (`BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE \\; CALL ...` in one
message, the expected session settings read by the session at its start). For each it records
the first error's SQLSTATE, message and detail, the context settings and `lock_timeout` inside
the unit, the rows of `projects` the unit sees, and the settings after its ROLLBACK; prints
each case; and exits 1 on any difference between the two entries, when a case's expected
outcome (the SQLSTATE named below, or success) is not what both entries gave, when the
positive control does not see exactly its organization's rows (as the superuser counts them),
or when the lock cases did not wait ~2 s (a superuser session holds ACCESS EXCLUSIVE on
organization_members for 6 s).
"""
import argparse, importlib.util, os, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("entry_instructions",
                                              os.path.join(ROOT, "tools", "entry-instructions.py"))
ei = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ei)

BEGIN = ei.BEGIN


def org(i):
    return f"00000000-0000-0000-0000-{i:012d}"


ORG = org(1000)          # user_1000 is its admin (the seed); admin grants org:projects:read
ORG_MEMBER = org(1001)   # member_1001 is a plain member
ORG_DELETED = org(1002)  # deleted; user_1002 is still its admin
ORG_KEYED = org(1003)    # user_1003 is an admin whose role key is org:billing

FIXTURES = f"""
SET session_replication_role = replica;
INSERT INTO organization_members (organization_id, user_id, role)
    VALUES ('{ORG_MEMBER}', 'member_1001', 'member');
UPDATE organizations SET deleted_at = now() WHERE id = '{ORG_DELETED}';
SELECT tenancy_set_role_permissions('org:billing', ARRAY['org:invoices:read', 'org:projects:read']);
UPDATE organization_members SET role_key = 'org:billing'
 WHERE organization_id = '{ORG_KEYED}' AND user_id = 'user_1003';
CREATE ROLE other;
GRANT other TO app;
CREATE EXTENSION pg_tenancy_entry SCHEMA public;
"""


def call(entry, args):
    return f"CALL public.{entry}({args})"


def lit(x):
    if x is None:
        return "NULL"
    if isinstance(x, bool):
        return "true" if x else "false"
    return "'" + x.replace("'", "''") + "'"


def enter_args(o, user, required, act, expected=":'expected'"):
    return ", ".join([lit(o), lit(user), lit(required), lit(act), expected])


OK = [ORG, "user_1000", "admin", True]

# name: (expected SQLSTATE or None, statements before BEGIN, entry arguments, statements in the
#        unit after the CALL, whether another session holds a lock on organization_members)
CASES = {
    "member (positive control)": (None, "", enter_args(*OK), "", False),
    "member, acting as its membership (act_as_required false)":
        (None, "", enter_args(ORG, "user_1000", "member", False), "", False),
    "act_as_required below the membership: no permissions":
        (None, "", enter_args(ORG, "user_1000", "member", True), "", False),
    "membership with a role key: the key's permissions":
        (None, "", enter_args(ORG_KEYED, "user_1003", "admin", False), "", False),
    "member, with a session lock_timeout (put back after the lookup)":
        (None, "SET lock_timeout = '3s';\nSELECT tenancy_session_settings() AS expected \\gset",
         enter_args(*OK), "", False),
    "member, with a session-level unit marker left (not an entered unit)":
        (None, "SELECT set_config('app.current_unit', '2020-01-01 00:00:00+00', false) AS left_marker \\gset",
         enter_args(*OK), "", False),
    "act_as_required NULL: as false":
        (None, "", enter_args(ORG, "user_1000", "member", None), "", False),
    "non-member": ("TNC01", "", enter_args(ORG, "user_1001", "member", True), "", False),
    "deleted organization": ("TNC01", "", enter_args(ORG_DELETED, "user_1002", "admin", True), "", False),
    "unknown organization": ("TNC01", "", enter_args(org(5), "user_1000", "member", True), "", False),
    "NULL organization": ("TNC01", "", enter_args(None, "user_1000", "admin", True), "", False),
    "NULL member": ("TNC01", "", enter_args(ORG, None, "admin", True), "", False),
    "role below required": ("TNC02", "", enter_args(ORG_MEMBER, "member_1001", "admin", True), "", False),
    "unknown role": ("22023", "", enter_args(ORG, "user_1000", "superadmin", True), "", False),
    "NULL required role": ("22023", "", enter_args(ORG, "user_1000", None, True), "", False),
    "unknown role, non-member (TNC01 first)":
        ("TNC01", "", enter_args(ORG, "user_1001", "superadmin", True), "", False),
    "re-entry": ("TNC09", "", enter_args(*OK), "{call};", False),
    "re-entry with a changed setting (TNC09 before TNC05)":
        ("TNC09", "", enter_args(*OK), "SET LOCAL statement_timeout = '7s';\n{call};", False),
    "changed setting": ("TNC05", "SET statement_timeout = '5s';", enter_args(*OK), "", False),
    "changed search_path": ("TNC05", "SET search_path = public;", enter_args(*OK), "", False),
    "changed TimeZone": ("TNC05", "SET TimeZone = 'Asia/Tokyo';", enter_args(*OK), "", False),
    "temporary table": ("TNC05", "CREATE TEMP TABLE scratch (x int);", enter_args(*OK), "", False),
    "SET ROLE": ("TNC05", "SET ROLE other;", enter_args(*OK), "", False),
    "NULL session_expected": ("TNC05", "", enter_args(*OK, expected="NULL"), "", False),
    "lock held on organization_members": ("55P03", "", enter_args(*OK), "", True),
    "lock held, NULL member (the tables are locked whatever the arguments)":
        ("55P03", "", enter_args(ORG, None, "admin", True), "", True),
}

INSIDE = ("SELECT 'inside: ' || concat_ws(' | ', "
          "'unit live=' || coalesce((current_setting('app.current_unit', true) "
          "= transaction_timestamp()::text)::text, 'null'), "
          "'org=' || coalesce(current_setting('app.current_org_id', true), '<unset>'), "
          "'user=' || coalesce(current_setting('app.current_user_id', true), '<unset>'), "
          "'role=' || coalesce(current_setting('app.current_org_role', true), '<unset>'), "
          "'permissions=' || coalesce(current_setting('app.current_permissions', true), '<unset>'), "
          "'tenancy_current_org_id()=' || coalesce(tenancy_current_org_id()::text, 'null'), "
          "'lock_timeout=' || current_setting('lock_timeout'));\n"
          "SELECT 'rows: ' || count(*) || ' of ' || coalesce(string_agg(DISTINCT organization_id::text, ','), '-') "
          "|| ' ' || md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) FROM projects;\n")
AFTER = ("SELECT 'after: ' || concat_ws(' | ', "
         "'org=' || coalesce(nullif(current_setting('app.current_org_id', true), ''), '<unset>'), "
         "'lock_timeout=' || current_setting('lock_timeout'), "
         "'settings same=' || (tenancy_session_settings() = :'expected')::text);\n")


def run_case(server, entry, pre, args, inside):
    c = call(entry, args)
    script = ("\\set VERBOSITY verbose\n"
              "SELECT tenancy_session_settings() AS expected \\gset\n"
              f"{pre}\n"
              f"{BEGIN} \\; {c};\n"
              f"{inside.format(call=c)}\n"
              f"{INSIDE}ROLLBACK;\nRESET ROLE;\n{AFTER}")
    start = time.monotonic()
    out = subprocess.run([f"{server.bin}/psql", "-h", server.dir, "-U", "app", "-d", "t", "-qAt",
                          "-v", "ON_ERROR_STOP=0", "-f", "-"],
                         input=script, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    error = None
    lines = out.stderr.splitlines()
    for k, line in enumerate(lines):
        if "ERROR:" in line:
            error = line.split("ERROR:", 1)[1].strip()
            if k + 1 < len(lines) and lines[k + 1].startswith("DETAIL:"):
                error += " / " + lines[k + 1]
            break
    return error, out.stdout.strip().splitlines(), elapsed


def hold_lock(server):
    """A superuser session holding ACCESS EXCLUSIVE on organization_members for 6 s."""
    holder = subprocess.Popen([f"{server.bin}/psql", "-h", server.dir, "-U", "postgres", "-d", "t",
                               "-qAt", "-c", "BEGIN", "-c",
                               "LOCK TABLE organization_members IN ACCESS EXCLUSIVE MODE",
                               "-c", "SELECT pg_sleep(6)", "-c", "COMMIT"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        held = server.psql("t", "postgres",
                           "SELECT count(*) FROM pg_locks WHERE relation = 'organization_members'::regclass "
                           "AND mode = 'AccessExclusiveLock' AND granted")
        if held == "1":
            return holder
        time.sleep(0.05)
    holder.kill()
    raise SystemExit("could not take the lock")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=ROOT)
    a = ap.parse_args()
    server = ei.Server(ei.bindir())
    failures = 0
    try:
        server.start()
        ei.setup(server, os.path.abspath(a.repo))
        server.psql("t", "postgres", FIXTURES)
        own = server.psql("t", "postgres",
                          "SELECT count(*) || ' of ' || organization_id || ' ' "
                          "|| md5(string_agg(id::text, ',' ORDER BY id)) FROM projects "
                          f"WHERE organization_id = '{ORG}' GROUP BY organization_id")
        for name, (want, pre, args, inside, lock) in CASES.items():
            results = {}
            for entry in ("tenancy_enter", "tenancy_enter_c"):
                holder = hold_lock(server) if lock else None
                results[entry] = run_case(server, entry, pre, args, inside)
                if holder:
                    holder.wait()
            (sql_err, sql_out, sql_t), (c_err, c_out, c_t) = results.values()
            problems = []
            if (sql_err, sql_out) != (c_err, c_out):
                problems.append("the entries differ")
            got = [e.split(":", 1)[0] if e else None for e in (sql_err, c_err)]
            if got != [want, want]:
                problems.append(f"expected {want or 'success'}")
            if name.startswith("member (positive"):
                if f"rows: {own}" not in sql_out or f"rows: {own}" not in c_out:
                    problems.append(f"positive control does not see exactly its organization's rows ({own})")
            if lock and not all(1.8 <= t < 5 for t in (sql_t, c_t)):
                problems.append(f"lock wait not ~2 s ({sql_t:.1f} s, {c_t:.1f} s)")
            status = "DIFFERENT" if problems else "same"
            print(f"c-entry-check: {name}: {status}" + (f" ({'; '.join(problems)})" if problems else ""))
            for entry, (err, out, t) in results.items():
                print(f"    {entry:16} {('ERROR ' + err) if err else 'ok'}" +
                      (f" (after {t:.1f} s)" if lock else ""))
                for line in out:
                    print(f"    {'':16} {line}")
            failures += bool(problems)
    finally:
        server.close()
    print(f"c-entry-check: {len(CASES) - failures} of {len(CASES)} cases the same"
          + ("" if not failures else f", {failures} DIFFERENT"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
