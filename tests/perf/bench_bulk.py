"""Bulk loads and pgbench's own TPC-B with the toolkit and without it (issue 15).

    .venv/bin/python tests/perf/bench_bulk.py [--rows 1000000] [--runs 3] [--pgbench-seconds 10]

Two databases with the same bytes, in one throwaway cluster: `bulk_base` (100,000
customers, 1,000,000 orders with a foreign key to them, `pgbench -i -s 10` plus 400
accounts past the ones pgbench draws from) and `bulk_tk`, a copy with the toolkit
installed, `orders` protected `--via customer_id`, `pgbench_accounts` a subject type
and `pgbench_history` protected by `aid`. In `bulk_tk`, 1% of customers are held and
1% restricted, and the 400 extra accounts are 200 held and 200 restricted: holds and
restrictions are active, as in production, on subjects the workloads do not touch.

Workloads, alternating databases:
- COPY of ROWS new orders (customers without hold or restriction) into `orders`, as the
  tables' owner: PostgreSQL refuses COPY FROM into a table with row-level security to
  every role the policies apply to ("COPY FROM not supported with row-level
  security"), so a loader that uses COPY is one that bypasses them (the owner, or
  BYPASSRLS); the toolkit's triggers mark (and, for a restricted subject, refuse) its
  rows all the same;
- INSERT ... SELECT of ROWS new orders from generate_series, as the application role
  (plain LOGIN, DML grants), which is how an application loads through a staging table;
  each in a transaction that is rolled back (all the work of the load is done, and the
  data stays the same from run to run; both databases are vacuumed after each run);
- pgbench's built-in `tpcb-like` script, `-c 2 -j 2 -M prepared`, unchanged.
Prints each run's time (or TPS) and the median ratio toolkit / baseline (for loads:
baseline seconds over toolkit seconds, so that 1.0 is "costs nothing" in both).
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import subprocess
import time

import psycopg

from pyctl import install
from pyctl.cluster import Cluster, start_cluster

SHOP = """
create table customers (id integer primary key, name text not null);
create table orders (id bigserial primary key, customer_id integer not null references customers (id),
                     placed_on date not null, total integer not null);
insert into customers select g, 'customer ' || g from generate_series(1, 100000) g;
insert into orders (customer_id, placed_on, total)
select 1 + (g::bigint * 7919) % 100000, date '2026-01-01' + g % 300, g % 1000 from generate_series(1, 1000000) g;
create index on orders (customer_id);
insert into pgbench_accounts (aid, bid, abalance, filler) select g, 1, 0, '' from generate_series(1000001, 1000400) g;
create role app login;
grant select, insert, update, delete on all tables in schema public to app;
grant usage on all sequences in schema public to app;
"""
PROTECT = """
select privacy.add_subject_type('customer', 'public.customers', 'id');
select privacy.protect_via('public.orders', 'customer_id');
select privacy.add_subject_type('account', 'public.pgbench_accounts', 'aid');
select privacy.protect('public.pgbench_history', 'account', 'aid');
"""
HOLDS = """
select count(*) from privacy.place_holds('customer', array(select g::text from generate_series(1, 100000) g where g % 100 = 1),
                                         'BULK-1', 'bench');
select count(*) from privacy.place_restrictions('customer', array(select g::text from generate_series(1, 100000) g where g % 100 = 2),
                                                'accuracy', 'bench');
select count(*) from privacy.place_holds('account', array(select g::text from generate_series(1000001, 1000200) g), 'BULK-2', 'bench');
select count(*) from privacy.place_restrictions('account', array(select g::text from generate_series(1000201, 1000400) g),
                                                'accuracy', 'bench');
"""
# Rows of customers with neither hold nor restriction (id % 100 not in (1, 2)).
ROWS_SQL = ("select c, date '2026-06-01' + g % 30, g % 1000 from generate_series(1, {rows}) g "
            "cross join lateral (select (3 + (g::bigint * 7919) % 99990)::integer as c0) x cross join lateral "
            "(select case when x.c0 % 100 in (1, 2) then x.c0 + 2 else x.c0 end as c) y")


def pgbench(cluster: Cluster, db: str, seconds: int) -> float:
    out = subprocess.run([str(cluster.bindir / "pgbench"), "-n", "-c", "2", "-j", "2", "-M", "prepared", "-T", str(seconds),
                          "-b", "tpcb-like", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "app", db],
                         capture_output=True, text=True, check=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    assert match, out.stdout + out.stderr
    return float(match.group(1))


def timed_load(cluster: Cluster, db: str, how: str, rows: int, data: bytes) -> float:
    with psycopg.connect(cluster.dsn(db, user="postgres" if how == "copy" else "app")) as conn:
        started = time.monotonic()
        with conn.cursor() as cur:
            if how == "copy":
                with cur.copy("copy orders (customer_id, placed_on, total) from stdin") as copy:
                    copy.write(data)
            else:
                cur.execute("insert into orders (customer_id, placed_on, total) " + ROWS_SQL.format(rows=rows))
        elapsed = time.monotonic() - started
        conn.rollback()
    with psycopg.connect(cluster.dsn(db), autocommit=True) as su:
        su.execute("vacuum orders")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--only", default="copy,insert_select,tpcb", help="comma-separated workloads")
    parser.add_argument("--no-holds", action="store_true", help="place no hold or restriction in the toolkit's database")
    args = parser.parse_args()
    cluster = start_cluster({"shared_buffers": "'2GB'", "max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'",
                             "autovacuum": "off"})
    try:
        started = time.monotonic()
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database bulk_base")
        subprocess.run([str(cluster.bindir / "pgbench"), "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-p", str(cluster.port),
                        "-U", cluster.superuser, "bulk_base"], capture_output=True, check=True)
        with psycopg.connect(cluster.dsn("bulk_base"), autocommit=True) as su:
            su.execute(SHOP)
            su.execute("vacuum analyze")
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database bulk_tk template bulk_base")
        install.install(cluster.dsn("bulk_tk"))
        with psycopg.connect(cluster.dsn("bulk_tk"), autocommit=True) as su:
            su.execute(PROTECT)
            if not args.no_holds:
                su.execute(HOLDS)
            su.execute("vacuum analyze")
        print(f"built both databases in {time.monotonic() - started:.0f} s; "
              + ("no hold or restriction" if args.no_holds else "1,000 customers held, 1,000 restricted, 200 accounts held, 200 restricted"))
        with psycopg.connect(cluster.dsn("bulk_base"), autocommit=True) as su:
            buf = io.StringIO()
            for row in su.execute(ROWS_SQL.format(rows=args.rows)):
                buf.write(f"{row[0]}\t{row[1]}\t{row[2]}\n")
        data = buf.getvalue().encode()

        results: dict[str, dict[str, list[float]]] = {}
        for run in range(args.runs):
            order = ("bulk_tk", "bulk_base") if run % 2 == 0 else ("bulk_base", "bulk_tk")
            for workload in [w for w in ("copy", "insert_select", "tpcb") if w in args.only.split(",")]:
                for db in order:
                    if workload == "tpcb":
                        value = pgbench(cluster, db, args.pgbench_seconds)
                    else:
                        value = timed_load(cluster, db, "copy" if workload == "copy" else "insert", args.rows, data)
                    results.setdefault(workload, {}).setdefault(db, []).append(value)
                    print(f"  run {run + 1} {workload:13s} {db:9s} {value:10.2f}", flush=True)
        print()
        print("| workload | toolkit (runs) | baseline (runs) | ratio | budget |")
        print("| --- | --- | --- | --- | --- |")
        names = {"copy": f"COPY of {args.rows:,} orders, as the owner (s)",
                 "insert_select": f"INSERT ... SELECT of {args.rows:,} orders, app role (s)",
                 "tpcb": "pgbench built-in tpcb-like, app role (TPS)"}
        budgets = {"copy": 0.80, "insert_select": 0.80, "tpcb": 0.90}
        for workload, per_db in results.items():
            tk, base = statistics.median(per_db["bulk_tk"]), statistics.median(per_db["bulk_base"])
            ratio = tk / base if workload == "tpcb" else base / tk
            print(f"| {names[workload]} | {' '.join(f'{v:.2f}' for v in per_db['bulk_tk'])} | "
                  f"{' '.join(f'{v:.2f}' for v in per_db['bulk_base'])} | {ratio:.3f} | >= {budgets[workload]:.2f} "
                  f"{'met' if ratio >= budgets[workload] else 'MISSED'} |")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
