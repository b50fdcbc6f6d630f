"""The floor of trigger-based enforcement (issue 7): what the smallest BEFORE INSERT
trigger that could give a row its mark costs, without the toolkit.

The toolkit gives every new row its mark in a PL/pgSQL BEFORE INSERT trigger that
looks the mark up (a SECURITY DEFINER function, one indexed query). This measures,
on one table of orders with a foreign key to customers, pgbench INSERT transactions
(2 clients, prepared, as a plain role) into four tables that differ only in their
triggers:

- none: the baseline;
- empty: a PL/pgSQL trigger that returns NEW, and nothing else;
- lookup: the trigger sets NEW.privacy_mark from a SECURITY DEFINER PL/pgSQL function
  that reads the parent's mark by primary key (no lock);
- toolkit: the table protected by the toolkit (`--via customer_id`).

Each run alternates the tables; the ratio is median TPS over the baseline's. Usage:
    .venv/bin/python tests/perf/bench_floor.py [--runs 5] [--duration 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
from pathlib import Path

import psycopg

from pyctl import install
from pyctl.cluster import Cluster, start_cluster

VARIANTS = ("none", "empty", "lookup", "toolkit")
SETUP = """
create role bench_app login;
create table customers (id integer primary key, name text not null, privacy_mark smallint not null default 0);
insert into customers select g, 'c' || g, 0 from generate_series(1, 100000) g;
"""
TABLE = """
create table {t} (id bigserial primary key, customer_id integer not null references customers (id),
                  placed_on date not null, total integer not null, privacy_mark smallint not null default 0);
create index on {t} (customer_id);
grant select, insert on {t} to bench_app;
grant usage on sequence {t}_id_seq to bench_app;
"""
EMPTY = """
create function empty_trigger() returns trigger language plpgsql as 'begin return new; end';
create trigger zz_mark before insert on orders_empty for each row execute function empty_trigger();
"""
LOOKUP = """
create function parent_mark(a integer) returns smallint security definer language plpgsql as $$
declare v smallint;
begin
    select c.privacy_mark into v from public.customers c where c.id operator(pg_catalog.=) a;
    return coalesce(v, 0);
end $$;
create function lookup_trigger() returns trigger language plpgsql as
    'begin new.privacy_mark := public.parent_mark(new.customer_id); return new; end';
create trigger zz_mark before insert on orders_lookup for each row execute function lookup_trigger();
"""
TOOLKIT = """
select privacy.add_subject_type('customer', 'public.customers', 'id');
select privacy.protect('public.customers', 'customer', 'id');
select privacy.protect_via('public.orders_toolkit', 'customer_id');
"""


def pgbench(cluster: Cluster, table: str, duration: int) -> float:
    script = Path(f"/tmp/bench_floor_{table}.sql")
    script.write_text("\\set c random(1, 100000)\n"
                      f"INSERT INTO {table} (customer_id, placed_on, total) VALUES (:c, CURRENT_DATE, 1);\n", encoding="utf-8")
    out = subprocess.run([cluster.bin("pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "bench_app",
                          "-n", "-c", "2", "-j", "2", "-T", str(duration), "-M", "prepared", "-f", str(script), "postgres"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"^tps = ([\d.]+) \(without", out, re.M)
    assert m, out
    return float(m.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    cluster = start_cluster(settings={"fsync": "off", "autovacuum": "off", "shared_buffers": "'512MB'"})
    try:
        install.install(cluster.dsn())
        with psycopg.connect(cluster.dsn(), autocommit=True) as su:
            su.execute(SETUP)
            for v in VARIANTS:
                su.execute(TABLE.format(t=f"orders_{v}"))
            su.execute(EMPTY)
            su.execute(LOOKUP)
            su.execute(TOOLKIT)
            su.execute("grant select on customers to bench_app")
        tps: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(args.runs):
            for v in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
                tps[v].append(pgbench(cluster, f"orders_{v}", args.duration))
            with psycopg.connect(cluster.dsn(), autocommit=True) as su:
                for v in VARIANTS:
                    su.execute(f"truncate orders_{v}")
                su.execute("vacuum analyze")
        base = statistics.median(tps["none"])
        print(f"INSERT into orders (foreign key to customers), pgbench -c 2 -M prepared, {args.runs} runs x {args.duration} s per table")
        print("| BEFORE INSERT trigger | median TPS | ratio to none |")
        print("|---|---|---|")
        for v in VARIANTS:
            print(f"| {v} | {statistics.median(tps[v]):.0f} | {statistics.median(tps[v]) / base:.3f} |")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
