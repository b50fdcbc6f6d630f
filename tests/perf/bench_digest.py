"""How long the preservation digest of a legal hold takes, per million held rows.

    .venv/bin/python tests/perf/bench_digest.py [--rows 1000000]

Builds one subject with ROWS rows in a protected table (plus its root row), places a
legal hold (which marks the rows and digests them in the same transaction), and
reports the placement time, the digest's share of it, and verify_hold's time.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from pyctl import install
from pyctl.cluster import start_cluster


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    cluster = start_cluster({"shared_buffers": "'512MB'", "max_wal_size": "'4GB'"})
    try:
        dsn = cluster.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            held, total = args.rows, args.rows + 100_000
            conn.execute(f"""
                create table customers (id int primary key, name text);
                create table events (id bigint primary key, customer_id int not null references customers, at timestamptz, body text);
                create index on events (customer_id);
                insert into customers select g, 'c' || g from generate_series(1, 1000) g;
                insert into events select g, case when g <= {held} then 1 else 2 + g % 998 end, now() - g * interval '1 second',
                                          md5(g::text) from generate_series(1, {total}) g;
            """)
            conn.execute("vacuum analyze")
        install.install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select privacy.add_subject_type('customer', 'public.customers', 'id')")
            conn.execute("select privacy.protect_via('public.events', 'customer_id')")
            started = time.perf_counter()
            hold_id = conn.execute("select privacy.place_hold('customer', '1', 'BENCH', 'bench')").fetchone()[0]
            placed = time.perf_counter() - started
            started = time.perf_counter()
            # the digest's work alone: hash every held row of the big table again
            conn.execute("select count(*) from privacy.subject_row_hashes("
                         "(select id from privacy.protected_tables where table_name = 'events'), 'customer', '1')")
            digest = time.perf_counter() - started
            started = time.perf_counter()
            rows = conn.execute("select status from privacy.verify_hold(%s)", (hold_id,)).fetchall()
            verify = time.perf_counter() - started
        per_million = 1_000_000 / args.rows
        print(f"held rows: {args.rows:,} (+1 root row); table rows: {args.rows + 100_000:,}")
        print(f"hold placement (marking + digest): {placed:.1f} s  ({placed * per_million:.1f} s per million rows)")
        print(f"digest alone: {digest:.1f} s  ({digest * per_million:.1f} s per million rows)")
        print(f"verify_hold: {verify:.1f} s  ({verify * per_million:.1f} s per million rows); result: {sorted({r[0] for r in rows})}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
