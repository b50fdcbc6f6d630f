"""Placing and releasing holds and restrictions while pgbench drives the application.

    .venv/bin/python tests/perf/bench_load.py [--cycles 1000] [--customers 20000]

pgbench (2 clients, as the application role) reads, updates and inserts orders of
random customers, skipping held customers the way an application's job would
(privacy.is_held); meanwhile a steward places and releases CYCLES holds and as many
restrictions. Reports the application's transactions and every error pgbench met
(a refusal of a race the application's own check lost is documented behaviour;
anything else is not), deadlocks, placement/release latency under load, and checks
that the ledger holds exactly the events the cycles made and still verifies.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from pyctl import install
from pyctl.cluster import start_cluster

SCRIPT = """\\set c random(1, {customers})
\\set o random(1, {orders})
select total from orders where id = :o;
update orders set total = total + 1 where id = :o and not privacy.is_held('customer', customer_id);
insert into orders (customer_id, total) select :c, 1 where not privacy.is_restricted('customer', :c);
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=20000)
    args = parser.parse_args()
    orders = args.customers * 10
    cluster = start_cluster({"shared_buffers": "'256MB'", "max_connections": "50"})
    try:
        dsn = cluster.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"""
                create table customers (id int primary key, name text);
                create table orders (id bigserial primary key, customer_id int not null references customers, total int not null);
                create index on orders (customer_id);
                insert into customers select g, 'c' || g from generate_series(1, {args.customers}) g;
                insert into orders (customer_id, total) select 1 + g % {args.customers}, 1 from generate_series(1, {orders}) g;
                create role app login; create role steward login;
                grant select, insert, update, delete on all tables in schema public to app;
                grant usage on all sequences in schema public to app;
            """)
            conn.execute("vacuum analyze")
        install.install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select privacy.add_subject_type('customer', 'public.customers', 'id')")
            conn.execute("select privacy.protect_via('public.orders', 'customer_id')")
            conn.execute("grant privacy_steward to steward")
            ledger_before = conn.execute("select count(*) from privacy.ledger").fetchone()[0]  # type: ignore[index]
        script = Path(tempfile.mkdtemp()) / "app.sql"
        script.write_text(SCRIPT.format(customers=args.customers, orders=orders))
        script.parent.chmod(0o755)
        script.chmod(0o644)

        stop = threading.Event()
        runs: list[str] = []

        def load() -> None:
            while not stop.is_set():
                proc = subprocess.run([cluster.bin("pgbench"), "-n", "-c", "2", "-j", "2", "-T", "5", "--max-tries", "10",
                                       "-f", str(script), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "app", "postgres"],
                                      capture_output=True, text=True, check=False)
                runs.append(proc.stdout + proc.stderr)

        loader = threading.Thread(target=load)
        loader.start()
        timings: dict[str, list[float]] = {"hold place": [], "hold release": [], "restrict place": [], "restrict release": []}
        started = time.monotonic()
        with psycopg.connect(cluster.dsn("postgres", user="steward"), autocommit=True) as steward:
            for i in range(args.cycles):
                key = str(1 + (i * 7919) % args.customers)
                t = time.perf_counter()
                hid = steward.execute("select privacy.place_hold('customer', %s, 'LOAD', 'load test')", (key,)).fetchone()[0]  # type: ignore[index]
                timings["hold place"].append(time.perf_counter() - t)
                t = time.perf_counter()
                rid = steward.execute("select privacy.place_restriction('customer', %s, 'unlawful', 'load test')", (key,)).fetchone()[0]  # type: ignore[index]
                timings["restrict place"].append(time.perf_counter() - t)
                t = time.perf_counter()
                steward.execute("select privacy.release_hold(%s, 'load test over', 'bench')", (hid,))
                timings["hold release"].append(time.perf_counter() - t)
                t = time.perf_counter()
                steward.execute("select privacy.release_restriction(%s, 'load test over', true)", (rid,))
                timings["restrict release"].append(time.perf_counter() - t)
        elapsed = time.monotonic() - started
        stop.set()
        loader.join()

        output = "\n".join(runs)
        transactions = sum(int(m) for m in re.findall(r"number of transactions actually processed: (\d+)", output))
        failed = sum(int(m) for m in re.findall(r"number of failed transactions: (\d+)", output))
        retried = sum(int(m) for m in re.findall(r"number of transactions retried: (\d+)", output))
        errors = re.findall(r"client \d+ (?:script \d+ )?aborted.*|ERROR:.*", output)
        refusals = [e for e in errors if "privacy:" in e]
        other = [e for e in errors if "privacy:" not in e and "aborted" not in e]
        deadlocks = output.count("deadlock")
        with psycopg.connect(dsn, autocommit=True) as conn:
            ledger_after = conn.execute("select count(*) from privacy.ledger").fetchone()[0]  # type: ignore[index]
            broken = conn.execute("select * from privacy.verify_ledger()").fetchall()
        expected_events = args.cycles * 5  # hold placed + digested, restriction placed, two releases
        print(f"{args.cycles} cycles (a hold and a restriction placed and released each) in {elapsed:.1f} s, "
              f"{args.customers:,} customers, {orders:,} orders, pgbench 2 clients in {len(runs)} runs of 5 s")
        print(f"application: {transactions:,} transactions, {failed} failed, {retried} retried after serialization/deadlock")
        print(f"application errors: {len(refusals)} documented refusals (privacy: ...), {len(other)} other, {deadlocks} deadlock mentions")
        for e in (refusals + other)[:5]:
            print("   ", e.strip()[:200])
        for name, values in timings.items():
            ordered = sorted(values)
            print(f"{name:17s} p50 {statistics.median(ordered) * 1000:6.2f} ms   p99 {ordered[int(len(ordered) * 0.99) - 1] * 1000:6.2f} ms")
        print(f"ledger: {ledger_after - ledger_before} new entries, expected {expected_events}; verify_ledger: {broken or 'ok'}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
