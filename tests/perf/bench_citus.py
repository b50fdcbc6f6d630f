"""What the toolkit costs on a Citus cluster (issue 20): a distributed TPC-B-like
workload through the coordinator, toolkit vs. the same schema without it, same run.

A coordinator and two workers on this machine (pyctl.cluster.CitusCluster). Two
databases with the same pgbench schema and data (`pgbench -i`), distributed alike:
pgbench_accounts by aid, pgbench_history by aid (co-located), pgbench_tellers by tid,
pgbench_branches by bid. In `bench_tk` the toolkit is installed, subject type `account`
is pgbench_accounts.aid, pgbench_history is protected by aid, and 0.1% of the accounts
are held and 0.1% restricted (aid % 1000 = 0 and = 500); the workload never picks those
(it would be refused), in both databases. Each transaction is pgbench's TPC-B-like
(`-b tpcb-like`, its own script) with aid drawn from the unmarked accounts: an UPDATE
and a SELECT of the account (router queries to the account's shard, whose triggers and
policy run on its worker), UPDATEs of a teller and a branch (other shards, often on
the other worker: two-phase commit), and an INSERT into the history (the toolkit's
INSERT trigger reads the account's row FOR SHARE on the same worker).

The runs alternate the databases; the ratio is median TPS (toolkit) over median TPS
(without). Usage:
    .venv/bin/python tests/perf/bench_citus.py [--runs 5] [--duration 10] [--scale 1] [--clients 4]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from pyctl import install
from pyctl.cluster import CitusCluster, start_citus_cluster

DISTRIBUTE = """
set citus.multi_shard_modify_mode = 'sequential';
select create_distributed_table('pgbench_accounts', 'aid');
select create_distributed_table('pgbench_history', 'aid', colocate_with => 'pgbench_accounts');
select create_distributed_table('pgbench_tellers', 'tid', colocate_with => 'none');
select create_distributed_table('pgbench_branches', 'bid', colocate_with => 'pgbench_tellers');
select truncate_local_data_after_distributing_table('pgbench_accounts');
select truncate_local_data_after_distributing_table('pgbench_tellers');
select truncate_local_data_after_distributing_table('pgbench_branches');
grant select, insert, update, delete on pgbench_accounts, pgbench_history, pgbench_tellers, pgbench_branches to bench_app
"""

TOOLKIT = """
select privacy.add_subject_type('account', 'public.pgbench_accounts', 'aid');
select privacy.protect('public.pgbench_history', 'account', 'aid')
"""

# pgbench's tpcb-like, with aid drawn from the accounts that are neither held nor restricted.
SCRIPT = """\\set a random(0, :scale * 100 - 1)
\\set off random(1, 499)
\\set aid :a * 1000 + :off
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
"""


def run_sql(conn: psycopg.Connection, sql: str) -> None:
    for statement in sql.split(";\n"):
        if statement.strip():
            conn.execute(statement.encode())


def build(citus: CitusCluster, name: str, scale: int, toolkit: bool) -> None:
    citus.create_database(name, owner="bench_owner")
    coord = citus.coordinator
    subprocess.run([coord.bin("pgbench"), "-h", "127.0.0.1", "-p", str(coord.port), "-U", "bench_owner", "-i", "-q",
                    "-s", str(scale), "-I", "dtgp", name], capture_output=True, text=True, check=True)
    with psycopg.connect(coord.dsn(name, user="bench_owner"), autocommit=True) as owner:
        run_sql(owner, DISTRIBUTE)
    if toolkit:
        install.install(coord.dsn(name, user="bench_owner"))
        with psycopg.connect(coord.dsn(name, user="bench_owner"), autocommit=True) as owner:
            run_sql(owner, TOOLKIT)
            n = scale * 100
            holds = [str(i * 1000) for i in range(1, n)]
            restrictions = [str(i * 1000 + 500) for i in range(n)]
            start = time.monotonic()
            owner.execute("select privacy.place_holds('account', %s, 'BENCH-1', 'benchmark')", (holds,))
            owner.execute("select privacy.place_restrictions('account', %s, 'accuracy', 'benchmark')", (restrictions,))
            print(f"{name}: placed {len(holds)} holds and {len(restrictions)} restrictions in "
                  f"{time.monotonic() - start:.1f} s", file=sys.stderr)
            owner.execute("vacuum analyze")
        # The toolkit is really on: the application role is refused a held account's row.
        with psycopg.connect(coord.dsn(name, user="bench_app"), autocommit=True) as app:
            try:
                app.execute("update pgbench_accounts set abalance = 0 where aid = 1000")
            except psycopg.Error as exc:
                assert exc.sqlstate == "PV001", exc
            else:
                raise SystemExit("a held account's row was changed: the toolkit is not enforcing")
    else:
        with psycopg.connect(coord.dsn(name, user="bench_owner"), autocommit=True) as owner:
            owner.execute("vacuum analyze")


def pgbench(citus: CitusCluster, name: str, scale: int, clients: int, duration: int) -> float:
    coord = citus.coordinator
    script = Path("/tmp/bench_citus_tpcb.sql")
    script.write_text(SCRIPT, encoding="utf-8")
    out = subprocess.run([coord.bin("pgbench"), "-h", "127.0.0.1", "-p", str(coord.port), "-U", "bench_app", "-n",
                          "-c", str(clients), "-j", str(clients), "-T", str(duration), "-D", f"scale={scale}",
                          "-f", str(script), name], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed on {name}:\n{out.stdout}\n{out.stderr}")
    m = re.search(r"^tps = ([\d.]+) \(without", out.stdout, re.M)
    assert m, out.stdout
    return float(m.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    citus = start_citus_cluster(settings={"autovacuum": "off", "shared_buffers": "'256MB'"})
    try:
        citus.sql_all("create role bench_owner login createrole; create role bench_app login")
        build(citus, "bench_base", args.scale, toolkit=False)
        build(citus, "bench_tk", args.scale, toolkit=True)
        tps: dict[str, list[float]] = {"bench_base": [], "bench_tk": []}
        for i in range(args.runs):
            for name in (("bench_base", "bench_tk") if i % 2 == 0 else ("bench_tk", "bench_base")):
                tps[name].append(pgbench(citus, name, args.scale, args.clients, args.duration))
                print(f"run {i + 1} {name}: {tps[name][-1]:.0f} tps", file=sys.stderr)
        base, tk = statistics.median(tps["bench_base"]), statistics.median(tps["bench_tk"])
        print(f"TPC-B-like through the Citus coordinator (2 workers, 4 shards per table), scale {args.scale}, "
              f"pgbench -c {args.clients}, {args.runs} runs x {args.duration} s per database, alternating")
        print("| database | median TPS | runs |")
        print("|---|---|---|")
        print(f"| without the toolkit | {base:.0f} | {', '.join(f'{x:.0f}' for x in tps['bench_base'])} |")
        print(f"| with the toolkit | {tk:.0f} | {', '.join(f'{x:.0f}' for x in tps['bench_tk'])} |")
        print(f"ratio (toolkit / without): {tk / base:.3f}")
    finally:
        citus.destroy()


if __name__ == "__main__":
    main()
