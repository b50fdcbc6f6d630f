#!/usr/bin/env python3
"""What a preservation export costs (issue 5): `pyctl export` against a raw COPY of the same rows.

    .venv/bin/python tests/perf/bench_export.py                    # 1,000,000 rows, about 2 minutes
    .venv/bin/python tests/perf/bench_export.py --rows 100000      # smoke test

Starts a throwaway PostgreSQL cluster (pyctl.cluster) with a shop whose customer 1 owns
ROWS rows spread over four protected tables (customers, orders, order_items via orders,
activity_log by its own column), among other customers' rows. Installs the toolkit as
the tables' owner and protects the shop. Then, alternating, RUNS times each (default 5):

- raw: `psql -c "COPY (SELECT ...) TO STDOUT (FORMAT csv, HEADER)"` of the same rows
  (hand-written queries, one per table) into a file: the fastest way to get the bytes out;
- export: `pyctl export 1 --out DIR` as a steward, in its own process: one REPEATABLE READ
  snapshot, sha256 of every file, fsync, manifest, ledger entry, rename.

Reports rows per second of each (median of the runs), the median of the runs' ratios, and the export
process's peak resident memory (os.wait4). Budget: ratio >= 0.5, peak < 200 MB; the
exit status is 1 when a budget is missed. --formats also times the other formats and
--zip once each, for information.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

import pyctl
from pyctl import install
from pyctl.cluster import Cluster, start_cluster

PYCTL = str(Path(sys.executable).with_name("pyctl"))
RATIO_BUDGET = 0.5
MEMORY_BUDGET_MB = 200.0

SCHEMA = """
create table customers (
    id         integer primary key,
    name       text not null,
    email      text not null,
    created_at timestamptz not null
);
create table orders (
    id          bigint primary key,
    customer_id integer not null references customers (id),
    placed_on   date not null,
    total       integer not null,
    status      text not null
);
create index on orders (customer_id);
create table order_items (
    id         bigint primary key,
    order_id   bigint not null references orders (id),
    product_id integer not null,
    quantity   integer not null,
    price      integer not null,
    note       text
);
create index on order_items (order_id);
create table activity_log (
    customer_id integer,
    happened_at timestamptz not null,
    what        text not null
);
create index on activity_log (customer_id);
"""

# Customer 1 owns: 1 customer row, O orders, 6 items per order, A activity rows: O + 6 O + A + 1 = ROWS.
# Customers 2..101 own as many rows again between them, so that the queries must select.
LOAD = """
insert into customers
select g, 'customer ' || g, 'c' || g || '@example.com', timestamptz '2020-01-01' + g * interval '7 minutes'
  from generate_series(1, 101) g;
insert into orders
select g, case when g <= {orders} then 1 else 2 + g % 100 end, date '2020-01-01' + (g % 2000),
       500 + (g * 7919) % 20000, case when g % 17 = 0 then 'cancelled' else 'shipped' end
  from generate_series(1, 2 * {orders}) g;
insert into order_items
select g, (g - 1) % (2 * {orders}) + 1, 1 + (g * 31) % 5000, 1 + g % 4, 100 + (g * 13) % 9900,
       case when g % 5 = 0 then 'gift wrap, "fragile", deliver after 6pm' end
  from generate_series(1, 12 * {orders}) g;
insert into activity_log
select case when g <= {activity} then 1 else 2 + g % 100 end, timestamptz '2024-01-01' + g * interval '1 second',
       case g % 3 when 0 then 'login' when 1 then 'viewed product ' || (g % 5000) else 'logout' end
  from generate_series(1, 2 * {activity}) g;
"""

PROTECT = """
select privacy.add_subject_type('customer', 'public.customers', 'id');
select privacy.protect_via('public.orders', 'customer_id');
select privacy.protect_via('public.order_items', 'order_id');
select privacy.protect('public.activity_log', 'customer', 'customer_id');
"""

RAW = [
    "select id, name, email, created_at from customers where id = 1",
    "select id, customer_id, placed_on, total, status from orders where customer_id = 1",
    "select i.id, i.order_id, i.product_id, i.quantity, i.price, i.note from order_items i "
    "where i.order_id in (select o.id from orders o where o.customer_id = 1)",
    "select customer_id, happened_at, what from activity_log where customer_id = 1",
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sizes(rows: int) -> tuple[int, int]:
    """(orders, activity rows) of customer 1 such that 1 + 7 * orders + activity == rows."""
    orders = (rows - 1) * 2 // 15
    return orders, rows - 1 - 7 * orders


def setup(cluster: Cluster, rows: int) -> str:
    su = cluster.dsn("postgres")
    with psycopg.connect(su, autocommit=True) as conn:
        conn.execute("create role shop_owner login createrole")
        conn.execute("create role steward_user login")
        conn.execute("create database shop owner shop_owner")
    with psycopg.connect(cluster.dsn("shop"), autocommit=True) as conn:
        conn.execute("alter schema public owner to shop_owner")
    orders, activity = sizes(rows)
    owner = cluster.dsn("shop", user="shop_owner")
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(LOAD.format(orders=orders, activity=activity))
    install.install(owner)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(PROTECT)
        conn.execute("grant privacy_steward to steward_user")
        conn.execute("vacuum analyze")
        count = conn.execute(
            "select (select count(*) from customers where id = 1) + (select count(*) from orders where customer_id = 1) + "
            "(select count(*) from order_items where order_id in (select id from orders where customer_id = 1)) + "
            "(select count(*) from activity_log where customer_id = 1)").fetchone()
        assert count is not None and count[0] == rows, count
    return cluster.dsn("shop", user="steward_user")


def run_raw(cluster: Cluster, target: Path) -> dict[str, float]:
    args = [cluster.bin("psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "steward_user", "-d", "shop"]
    for query in RAW:
        args += ["-c", f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER true)"]
    start = time.perf_counter()
    with open(target, "wb") as f:
        subprocess.run(args, stdout=f, check=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": target.stat().st_size}


def run_export(dsn: str, target: Path, *extra: str) -> dict[str, Any]:
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen([PYCTL, "--dsn", dsn, "--json", "export", "1", "--out", str(target), *extra],
                                stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        out = proc.stdout.read()  # the JSON summary, at the end
        _, status, usage = os.wait4(proc.pid, 0)  # the resource usage of this process alone
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"pyctl export failed: {errors.read().decode()}")
    result = json.loads(out)["exports"][0]
    return {"seconds": seconds, "bytes": result["bytes"], "rows": result["rows"], "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the exported subject (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs of each (default 5)")
    parser.add_argument("--formats", action="store_true", help="also time json, ndjson, sql and --zip once each")
    parser.add_argument("--output", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args()

    log(f"starting a throwaway cluster; loading {args.rows:,} rows of customer 1 (and as many of others)")
    cluster = start_cluster({"shared_buffers": "1GB", "work_mem": "64MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"})
    work = Path(tempfile.mkdtemp(prefix="pyctl-bench-export-"))
    try:
        dsn = setup(cluster, args.rows)
        log("warming up")
        run_raw(cluster, work / "warm.csv")
        run_export(dsn, work / "warm")
        raw_runs: list[dict[str, float]] = []
        export_runs: list[dict[str, Any]] = []
        for i in range(args.runs):
            # Alternating which goes first; each pair shares the machine's state of the moment.
            if i % 2 == 0:
                raw = run_raw(cluster, work / f"raw-{i}.csv")
                exp = run_export(dsn, work / f"export-{i}")
            else:
                exp = run_export(dsn, work / f"export-{i}")
                raw = run_raw(cluster, work / f"raw-{i}.csv")
            assert exp["rows"] == args.rows, exp
            raw_runs.append(raw)
            export_runs.append(exp)
            log(f"run {i + 1}: raw COPY {args.rows / raw['seconds']:,.0f} rows/s, export {args.rows / exp['seconds']:,.0f} rows/s, "
                f"export peak {exp['peak_rss_mb']:.1f} MB")
            (work / f"raw-{i}.csv").unlink()
            shutil.rmtree(work / f"export-{i}")
        raw_s = statistics.median(r["seconds"] for r in raw_runs)
        exp_s = statistics.median(r["seconds"] for r in export_runs)
        ratio = statistics.median(r["seconds"] / e["seconds"] for r, e in zip(raw_runs, export_runs, strict=True))
        peak = max(r["peak_rss_mb"] for r in export_runs)
        others = {}
        if args.formats:
            for label, extra in (("json", ["--format", "json"]), ("ndjson", ["--format", "ndjson"]),
                                 ("sql", ["--format", "sql"]), ("csv --zip", ["--zip"])):
                target = work / ("other.zip" if "--zip" in extra else "other")
                r = run_export(dsn, target, *extra)
                others[label] = {"rows_per_s": args.rows / r["seconds"], "ratio": raw_s / r["seconds"], "bytes": r["bytes"],
                                 "peak_rss_mb": r["peak_rss_mb"]}
                _ = shutil.rmtree(target) if target.is_dir() else target.unlink()
        result = {
            "rows": args.rows, "runs": args.runs, "pyctl": pyctl.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "raw_copy": {"median_s": raw_s, "rows_per_s": args.rows / raw_s, "bytes": raw_runs[0]["bytes"],
                         "mb_per_s": raw_runs[0]["bytes"] / raw_s / 1e6},
            "export": {"median_s": exp_s, "rows_per_s": args.rows / exp_s, "bytes": export_runs[0]["bytes"],
                       "mb_per_s": export_runs[0]["bytes"] / exp_s / 1e6, "peak_rss_mb": peak},
            "ratio": ratio, "budget": {"ratio": RATIO_BUDGET, "peak_rss_mb": MEMORY_BUDGET_MB},
            "other_formats": others,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        cluster.destroy()

    ok = ratio >= RATIO_BUDGET and peak < MEMORY_BUDGET_MB
    print(f"rows exported:          {args.rows:,} (customer 1, 4 tables; median of {args.runs} runs)")
    print(f"raw COPY (psql):        {result['raw_copy']['rows_per_s']:>12,.0f} rows/s  {result['raw_copy']['mb_per_s']:7.1f} MB/s  "
          f"{raw_s:6.2f} s")
    print(f"pyctl export (csv):     {result['export']['rows_per_s']:>12,.0f} rows/s  {result['export']['mb_per_s']:7.1f} MB/s  "
          f"{exp_s:6.2f} s")
    print(f"throughput ratio:       {ratio:.2f} (median of the runs' export/raw ratios; budget >= {RATIO_BUDGET})")
    print(f"export peak memory:     {peak:.1f} MB resident (budget < {MEMORY_BUDGET_MB:.0f} MB)")
    for label, r in others.items():
        print(f"  {label:<20} {r['rows_per_s']:>12,.0f} rows/s  ratio {r['ratio']:.2f}  peak {r['peak_rss_mb']:.1f} MB")
    print("within budget" if ok else "OVER BUDGET")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
