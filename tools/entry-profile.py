#!/usr/bin/env python3
"""Where a unit's server instructions go: tools/entry-instructions.py's units under callgrind,
per function, as the difference between N and 3N units divided by 2N (start-up cancels out).

    python3 tools/entry-profile.py [--repo DIR] [--transactions N] [--c-entry] [--top K]
                                   UNIT [UNIT ...] [--functions F ...]

UNIT is one of entry-instructions.py's unit names (plain_tx, write_unit, c_write_unit with
--c-entry, ...). Prints, per unit, the K functions with the most inclusive instructions per
unit (or only those named by --functions), as

    entry-profile: <unit> <thousands of instructions> kIr/unit <function>

Inclusive counts overlap (a function's include its callees'); the names are callgrind's
(`callgrind_annotate --inclusive=yes`). Needs valgrind.
"""
import argparse, importlib.util, os, re, shutil, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("entry_instructions",
                                              os.path.join(ROOT, "tools", "entry-instructions.py"))
ei = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ei)


def inclusive(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        # Lines naming a call count ("f (150x)") are callers' views: skipped.
        if m and not re.search(r"\(\d[\d,]*x\)", m.group(2)):
            name = m.group(2).split(" [")[0].split(":")[-1]
            # (A function listed twice, under two spellings of its file: the larger.)
            costs[name] = max(costs.get(name, 0), int(m.group(1).replace(",", "")))
    return costs


def profile(server, db, script, out):
    args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            f"{server.bin}/postgres", "--single", "-D", server.data, db]
    if server.as_root:
        args = ["su", "postgres", "-c", " ".join(ei._quote(a) for a in args)]
    result = subprocess.run(args, input=script, capture_output=True, text=True)
    if "ERROR" in result.stdout + result.stderr:
        raise SystemExit("unit failed: " + next(l for l in (result.stdout + result.stderr).splitlines()
                                                if "ERROR" in l))
    return inclusive(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("units", nargs="+")
    ap.add_argument("--repo", default=ROOT)
    ap.add_argument("--transactions", type=int, default=50)
    ap.add_argument("--c-entry", action="store_true")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--functions", nargs="*")
    a = ap.parse_args()
    server = ei.Server(ei.bindir())
    try:
        server.start()
        expected, enter_args, signed_args, has_permissions = ei.setup(
            server, os.path.abspath(a.repo), a.c_entry)
        server.stop()
        units = ei.units(expected, enter_args, signed_args, has_permissions, a.c_entry)
        for name in a.units:
            db, role, begin, query, prepared = units[name]
            n = a.transactions
            counts = []
            for k in (n, 3 * n):
                out = os.path.join(server.dir, f"callgrind-{name}-{k}.out")
                open(out, "w").close()
                os.chmod(out, 0o666)
                counts.append(profile(server, db, ei.script(role, begin, query, prepared, k), out))
            per_unit = {f: (counts[1].get(f, 0) - counts[0].get(f, 0)) / (2 * n) / 1000
                        for f in counts[1]}
            rows = sorted(per_unit.items(), key=lambda kv: -kv[1])
            if a.functions:
                rows = [(f, per_unit.get(f, 0.0)) for f in a.functions]
            else:
                rows = rows[:a.top]
            for f, v in rows:
                print(f"entry-profile: {name} {v:.1f} kIr/unit {f}", flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
