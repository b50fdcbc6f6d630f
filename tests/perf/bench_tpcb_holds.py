"""What holds and restrictions cost pgbench's own TPC-B, statement by statement (issue 15).

    .venv/bin/python tests/perf/bench_tpcb_holds.py [--runs 6] [--seconds 5]

Three databases in one throwaway cluster, built as `bench_bulk.py` builds its two:
`bulk_base` (no toolkit), `tk_none` (the toolkit, `pgbench_accounts` a subject type,
`pgbench_history` protected by `aid`, no hold or restriction) and `tk_active` (a copy of
`tk_none` with 1,000 customers held, 1,000 restricted, and 200 accounts held and 200
restricted past the ones pgbench draws from). Runs, as the application role, pgbench's
built-in `tpcb-like` and each of the statements it is made of that touch a protected
table, rotating the order of the databases, and prints each database's median TPS over the
baseline's: the difference between `tk_none` and `tk_active` is what active holds and
restrictions cost, measured in the same run (separate runs of one benchmark on this VM
differ by more than that).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
from pathlib import Path

import bench_bulk
import psycopg

from pyctl import install
from pyctl.cluster import Cluster, start_cluster

STATEMENTS = {
    "accounts UPDATE": "\\set aid random(1, 1000000)\n\\set delta random(-5000, 5000)\n"
                       "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n",
    "accounts SELECT": "\\set aid random(1, 1000000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
    "history INSERT": "\\set aid random(1, 1000000)\n\\set delta random(-5000, 5000)\n"
                      "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);\n",
    "tpcb-like": None,
}
DATABASES = ("bulk_base", "tk_none", "tk_active")


def pgbench(cluster: Cluster, db: str, script: Path | None, seconds: int) -> float:
    args = ["-b", "tpcb-like"] if script is None else ["-f", str(script)]
    out = subprocess.run([cluster.bin("pgbench"), "-n", "-c", "2", "-j", "2", "-M", "prepared", "-T", str(seconds), *args,
                          "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "app", db], capture_output=True, text=True, check=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    assert match, out.stdout + out.stderr
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6, help="a multiple of 3")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    cluster = start_cluster({"shared_buffers": "'2GB'", "max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'",
                             "autovacuum": "off"})
    try:
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database bulk_base")
        subprocess.run([cluster.bin("pgbench"), "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-p", str(cluster.port),
                        "-U", cluster.superuser, "bulk_base"], capture_output=True, check=True)
        with psycopg.connect(cluster.dsn("bulk_base"), autocommit=True) as su:
            su.execute(bench_bulk.SHOP)
            su.execute("vacuum analyze")
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database tk_none template bulk_base")
        install.install(cluster.dsn("tk_none"))
        with psycopg.connect(cluster.dsn("tk_none"), autocommit=True) as su:
            su.execute(bench_bulk.PROTECT)
            su.execute("vacuum analyze")
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database tk_active template tk_none")
        with psycopg.connect(cluster.dsn("tk_active"), autocommit=True) as su:
            su.execute(bench_bulk.HOLDS)
            su.execute("vacuum analyze")
        scripts: dict[str, Path | None] = {}
        for name, text in STATEMENTS.items():
            if text is None:
                scripts[name] = None
                continue
            path = cluster.base / (name.replace(" ", "_") + ".sql")
            path.write_text(text, encoding="utf-8")
            path.chmod(0o644)
            scripts[name] = path
        results: dict[str, dict[str, list[float]]] = {}
        for run in range(args.runs):
            for name, script in scripts.items():
                # Each database takes each place in the order once every three runs (the first
                # of a run is measurably faster on this VM: the others follow its writes).
                for db in DATABASES[run % 3:] + DATABASES[:run % 3]:
                    tps = pgbench(cluster, db, script, args.seconds)
                    results.setdefault(name, {}).setdefault(db, []).append(tps)
                    print(f"  run {run + 1} {name:16s} {db:9s} {tps:10.1f}", flush=True)
        print()
        print("| statement (pgbench -c 2, prepared, app role) | baseline TPS | toolkit, nothing active "
              "| toolkit, 400 accounts and 2,000 customers held or restricted |")
        print("| --- | --- | --- | --- |")
        for name, per_db in results.items():
            base = statistics.median(per_db["bulk_base"])
            print(f"| {name} | {base:.0f} | {statistics.median(per_db['tk_none']) / base:.3f} | "
                  f"{statistics.median(per_db['tk_active']) / base:.3f} |")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
