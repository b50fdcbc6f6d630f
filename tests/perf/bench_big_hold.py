"""Who waits while a hold is placed on a very large subject (issue 15, "nothing waits").

    .venv/bin/python tests/perf/bench_big_hold.py [--rows 1000000] [--customers 10000]

One customer owns ROWS orders (the others 10 each). While a steward places a legal hold
on that customer (and then computes its proof, in the next transaction), two other
sessions keep working: a steward placing and releasing
restrictions on other customers, and the application (the restricted role) updating and
inserting other customers' orders. Prints the placement's duration and the p50/p99/max
latency of each of the others during it ("during") and during the proof ("proof"), against
the same operations measured before the placement (the machine's own noise).
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

import psycopg

from pyctl import install
from pyctl.cluster import start_cluster

SCHEMA = """
create table customers (id integer primary key, name text not null);
create table orders (id bigserial primary key, customer_id integer not null references customers (id), total integer not null);
insert into customers select g, 'c' || g from generate_series(1, {customers} + 1) g;  -- the last is the big one
insert into orders (customer_id, total) select 1 + g % {customers}, g from generate_series(1, {customers} * 10) g;
insert into orders (customer_id, total) select {big}, g from generate_series(1, {rows}) g;
create index on orders (customer_id);
"""


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"n={len(ordered):5d}  p50 {statistics.median(ordered) * 1000:8.1f} ms  p99 {p99 * 1000:8.1f} ms  "
            f"max {ordered[-1] * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    args = parser.parse_args()
    big = args.customers + 1
    cluster = start_cluster({"shared_buffers": "'1GB'", "max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'"})
    try:
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database bench")
            su.execute("create role app login; create role steward_user login")
        dsn = cluster.dsn("bench")
        started = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as su:
            su.execute(SCHEMA.format(customers=args.customers, rows=args.rows, big=big))
            su.execute("vacuum analyze")
        print(f"loaded {args.customers:,} customers, {args.customers * 10 + args.rows:,} orders in {time.monotonic() - started:.0f} s")
        install.install(dsn)
        with psycopg.connect(dsn, autocommit=True) as su:
            su.execute("select privacy.add_subject_type('customer', 'public.customers', 'id')")
            su.execute("select privacy.protect_via('public.orders', 'customer_id')")
            su.execute("grant privacy_steward to steward_user")
            su.execute("grant select, insert, update on customers, orders to app; grant usage on sequence orders_id_seq to app")

        stop = threading.Event()
        phase = {"name": "baseline"}
        samples: dict[tuple[str, str], list[float]] = {}
        errors: list[str] = []

        def record(kind: str, seconds: float) -> None:
            samples.setdefault((phase["name"], kind), []).append(seconds)

        def steward_loop() -> None:
            rng = random.Random(1)
            with psycopg.connect(cluster.dsn("bench", user="steward_user"), autocommit=True) as conn:
                while not stop.is_set():
                    key = rng.randint(1, args.customers)
                    t = time.monotonic()
                    try:
                        rid = conn.execute("select privacy.place_restriction('customer', %s, 'accuracy', 'bench')",
                                           (str(key),)).fetchone()[0]  # type: ignore[index]
                        record("restrict place (other subject)", time.monotonic() - t)
                        t = time.monotonic()
                        conn.execute("select privacy.release_restriction(%s, 'bench', true)", (rid,))
                        record("restrict release (other subject)", time.monotonic() - t)
                    except psycopg.Error as exc:
                        errors.append(f"steward: {exc}")
                    time.sleep(0.02)

        def app_loop() -> None:
            rng = random.Random(2)
            with psycopg.connect(cluster.dsn("bench", user="app"), autocommit=True) as conn:
                while not stop.is_set():
                    key = rng.randint(1, args.customers)
                    t = time.monotonic()
                    try:
                        conn.execute("update orders set total = total + 1 where id = (select min(id) from orders where customer_id = %s)", (key,))
                        record("app UPDATE (other subject)", time.monotonic() - t)
                        t = time.monotonic()
                        conn.execute("insert into orders (customer_id, total) values (%s, 1)", (key,))
                        record("app INSERT (other subject)", time.monotonic() - t)
                    except psycopg.Error as exc:
                        if exc.sqlstate != "PV001":  # a subject restricted by the steward loop right now
                            errors.append(f"app: {exc}")
                    time.sleep(0.005)

        threads = [threading.Thread(target=steward_loop), threading.Thread(target=app_loop)]
        for th in threads:
            th.start()
        time.sleep(args.baseline_seconds)
        phase["name"] = "during"
        with psycopg.connect(cluster.dsn("bench", user="steward_user"), autocommit=True) as conn:
            t = time.monotonic()
            hold_id = conn.execute("select privacy.place_hold('customer', %s, 'BIG-1', 'bench')", (str(big),)).fetchone()[0]  # type: ignore[index]
            placement = time.monotonic() - t
            # The proof, in the transaction after the hold's (pyctl hold place runs it next).
            phase["name"] = "proof"
            t = time.monotonic()
            conn.execute("select privacy.prove_hold(%s)", (hold_id,))
            proof = time.monotonic() - t
        phase["name"] = "after"
        stop.set()
        for th in threads:
            th.join()
        print(f"hold on a subject with {args.rows + 1:,} rows placed in {placement:.1f} s (in force); its proof computed in {proof:.1f} s")
        for kind in ("restrict place (other subject)", "restrict release (other subject)", "app UPDATE (other subject)",
                     "app INSERT (other subject)"):
            for name in ("baseline", "during", "proof"):
                print(f"  {kind:32s} {name:8s}  {percentiles(samples.get((name, kind), []))}")
        print(f"errors: {len(errors)}" + ("".join(f"\n  {e}" for e in errors[:5])))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
