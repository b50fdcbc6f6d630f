"""How fast `pyctl erase --from-file` erases subjects (issue 16).

    .venv/bin/python tests/perf/bench_erase.py [--customers 100000] [--erase 10000]

Loads the perf schema (tests/perf/schema.sql) with CUSTOMERS customers of one order and
one order item each (3 rows a subject), protects it, places a legal hold on every
customer with id % 100 = 1 among the keys it reads (as the main benchmark does), then erases ERASE unheld
subjects plus the held ones among the first keys (which are skipped, named) with
`pyctl erase --from-file`, in one transaction, and reports subjects erased per second.
A second batch of the same size goes through privacy.erase_many() from SQL, without the
CLI's connection and heal; a third, one privacy.erase() call (one transaction) a subject.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psycopg
from click.testing import CliRunner

from pyctl import install
from pyctl.cli import main as pyctl_main
from pyctl.cluster import start_cluster

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--erase", type=int, default=10_000)
    args = parser.parse_args()
    cluster = start_cluster({"shared_buffers": "'512MB'", "max_wal_size": "'4GB'"})
    try:
        dsn = cluster.dsn("postgres")
        text = (HERE / "schema.sql").read_text(encoding="utf-8")
        for name in ("customers", "orders", "items"):
            text = text.replace("{" + name + "}", str(args.customers))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(text.encode())
            conn.execute("vacuum analyze")
        install.install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select privacy.add_subject_type('customer', 'public.customers', 'id')")
            conn.execute("select privacy.protect_via('public.orders', 'customer_id')")
            conn.execute("select privacy.protect_via('public.order_items', 'order_id')")
            started = time.perf_counter()
            # (only among the keys the three batches read: placing a hold digests its rows, which is not what is measured)
            last = min(args.customers, 2 * args.erase * 101 // 100 + 1100)
            holds = 0
            for g in range(1, last + 1, 100):
                conn.execute("select privacy.place_hold('customer', %s, 'BENCH-HOLD', 'benchmark')", (str(g),))
                holds += 1
            print(f"{args.customers:,} customers x 3 rows; {holds:,} legal holds (id % 100 = 1 up to {last:,}) "
                  f"placed in {time.perf_counter() - started:.1f} s", flush=True)
            conn.execute("vacuum analyze")

        def batch(offset: int) -> list[str]:
            keys, k = [], offset
            while sum(1 for x in keys if int(x) % 100 != 1) < args.erase:
                k += 1
                keys.append(str(k))
            return keys

        # 1. the CLI, from a file
        first = batch(0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "keys.txt"
            path.write_text("\n".join(first) + "\n", encoding="utf-8")
            started = time.perf_counter()
            result = CliRunner().invoke(pyctl_main, ["--dsn", dsn, "--json", "erase", "--from-file", str(path),
                                                     "--reason", "benchmark: retention ended"], catch_exceptions=False)
            elapsed = time.perf_counter() - started
        assert result.exit_code == 0, result.output
        print(f"pyctl erase --from-file: {len(first):,} keys ({result.stderr.strip()}) in {elapsed:.1f} s: "
              f"{args.erase / elapsed:,.0f} subjects erased per second", flush=True)

        # 2. the SQL API, one transaction
        second = batch(int(first[-1]))
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            outcomes = conn.execute("select outcome, count(*) from privacy.erase_many('customer', %s, 'benchmark') group by 1 order by 1",
                                    (second,)).fetchall()
            elapsed = time.perf_counter() - started
        print(f"privacy.erase_many: {len(second):,} keys ({', '.join(f'{n} {o}' for o, n in outcomes)}) in {elapsed:.1f} s: "
              f"{args.erase / elapsed:,.0f} subjects erased per second", flush=True)

        # 3. one privacy.erase() a transaction (1,000 subjects)
        third = [k for k in batch(int(second[-1])) if int(k) % 100 != 1][:1000]
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            for k in third:
                conn.execute("select privacy.erase('customer', %s, 'benchmark')", (k,))
            elapsed = time.perf_counter() - started
            remaining = conn.execute("select count(*) from customers").fetchone()[0]  # type: ignore[index]
            verified = conn.execute("select count(*) from privacy.verify_ledger()").fetchone()[0]  # type: ignore[index]
        print(f"privacy.erase, one transaction each: {len(third):,} subjects in {elapsed:.1f} s: "
              f"{len(third) / elapsed:,.0f} subjects per second")
        print(f"customers left: {remaining:,}; ledger problems: {verified}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
