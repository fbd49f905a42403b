#!/usr/bin/env python3
"""Timed throughput of the plain transaction, the SQL entry's unit and the prototype C entry's
unit, with pgbench: the figures of docs/benchmarks.md, "An entry in C, measured".

    python3 tools/c-entry-throughput.py [--repo DIR] [--clients 16] [--seconds 5] [--rounds 3]
                                        [--mode prepared|simple|both]

Needs the extension installed (as root: `make -C extension/pg_tenancy_entry install`, into the
PostgreSQL of `pg_config`). Starts a throwaway PostgreSQL 15 seeded as
tools/entry-instructions.py seeds it (1,000 organizations, one admin and 20 projects each),
creates the extension in `public`, then runs three pgbench arms, each `--clients` clients and
as many threads, `--seconds` seconds, interleaved (plain, SQL, C, plain, ...), `--rounds` times,
first with `-M prepared`, then with `-M simple` (`--mode both`, the default). Each arm's
transaction picks an organization and one of its projects at random:
- plain: the role `bypass` (BYPASSRLS), `BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE`,
  the point query filtered by organization explicitly, `COMMIT`;
- sql_unit: the application role `app`, `BEGIN ...` and `CALL tenancy_enter(...)`, the point
  query under the policy, `COMMIT`. pgbench refuses a compound command (`\\;`) with
  `-M prepared`, so there the CALL is a message of its own (one round trip more than
  TenantPool's `BEGIN ...; CALL ...`); with `-M simple` the two are one message, as TenantPool
  sends them, but every statement of every arm is then parsed and planned on each run;
- c_unit: the same with `CALL tenancy_enter_c(...)`.
Prints each run's tps and, per round, the ratios unit/plain, then the medians:

    c-entry-throughput: -M <mode> round <r> <arm> = <tps> tps
    c-entry-throughput: -M <mode> median <arm> = <tps> tps, ...; sql_unit/plain = <x>;
        c_unit/plain = <y>; c_unit/sql_unit = <z> (medians of the rounds' ratios)
"""
import argparse, importlib.util, os, re, shutil, statistics, subprocess, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("entry_instructions",
                                              os.path.join(ROOT, "tools", "entry-instructions.py"))
ei = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ei)

PICK = """\\set i random(1000, 1999)
\\set p (:i - 1000) + 1000 * random(0, 19)
"""
ORG = "('00000000-0000-0000-0000-00000000' || :i)::uuid"
PROJECT = "('10000000-0000-0000-0000-' || lpad((:p)::text, 12, '0'))::uuid"


def arms(expected, mode):
    quoted = "'" + expected.replace("'", "''") + "'"
    # pgbench refuses `\;` with -M prepared ("cannot insert multiple commands into a prepared
    # statement"): there the CALL is its own message, one round trip more than TenantPool's.
    joiner = " \\;" if mode == "simple" else ";\n"

    def unit(entry):
        return (PICK
                + f"{ei.BEGIN}{joiner} CALL public.{entry}({ORG}, 'user_' || :i, 'admin', true, {quoted});\n"
                + f"SELECT name FROM projects WHERE id = {PROJECT} AND {ORG} IS NOT NULL;\n"
                + "COMMIT;\n")

    return {
        "plain": ("bypass", PICK + f"{ei.BEGIN};\n"
                  + f"SELECT name FROM projects WHERE organization_id = {ORG} AND id = {PROJECT};\n"
                  + "COMMIT;\n"),
        "sql_unit": ("app", unit("tenancy_enter")),
        "c_unit": ("app", unit("tenancy_enter_c")),
    }


def pgbench(server, role, file, clients, seconds, mode):
    out = subprocess.run([f"{server.bin}/pgbench", "-h", server.dir, "-U", role, "-n",
                          "-M", mode, "-c", str(clients), "-j", str(clients),
                          "-T", str(seconds), "-f", file, "t"],
                         capture_output=True, text=True)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if out.returncode != 0 or not failed or failed.group(1) != "0":
        raise SystemExit(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    return float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout).group(1))


def run_mode(server, files, expected, mode, a):
    paths = {}
    for name, (role, text) in arms(expected, mode).items():
        paths[name] = (role, os.path.join(files, f"{mode}-{name}.sql"))
        with open(paths[name][1], "w") as f:
            f.write(text)
    os.chmod(files, 0o755)
    tps = {name: [] for name in paths}
    for r in range(1, a.rounds + 1):
        for name, (role, path) in paths.items():
            tps[name].append(pgbench(server, role, path, a.clients, a.seconds, mode))
            print(f"c-entry-throughput: -M {mode} round {r} {name} = {tps[name][-1]:.0f} tps", flush=True)
        print(f"c-entry-throughput: -M {mode} round {r} sql_unit/plain = {tps['sql_unit'][-1] / tps['plain'][-1]:.3f}; "
              f"c_unit/plain = {tps['c_unit'][-1] / tps['plain'][-1]:.3f}", flush=True)
    med = {name: statistics.median(v) for name, v in tps.items()}
    ratios = {name: statistics.median(t / p for t, p in zip(tps[name], tps["plain"]))
              for name in ("sql_unit", "c_unit")}
    c_vs_sql = statistics.median(c / q for c, q in zip(tps["c_unit"], tps["sql_unit"]))
    print(f"c-entry-throughput: -M {mode} median " + ", ".join(f"{n} = {v:.0f} tps" for n, v in med.items())
          + f"; sql_unit/plain = {ratios['sql_unit']:.3f}; c_unit/plain = {ratios['c_unit']:.3f}"
          + f"; c_unit/sql_unit = {c_vs_sql:.3f} (medians of the {a.rounds} rounds' ratios)", flush=True)



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=ROOT)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", choices=["prepared", "simple", "both"], default="both")
    a = ap.parse_args()
    server = ei.Server(ei.bindir())
    files = tempfile.mkdtemp(prefix="tenancy-pgbench-")
    try:
        server.start()
        expected = ei.setup(server, os.path.abspath(a.repo), c_entry=True)[0]
        for mode in (["prepared", "simple"] if a.mode == "both" else [a.mode]):
            run_mode(server, files, expected, mode, a)
    finally:
        server.close()
        shutil.rmtree(files, ignore_errors=True)


if __name__ == "__main__":
    main()
