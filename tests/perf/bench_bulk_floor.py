"""Row trigger or statement trigger for marking new rows (issue 15: "measure, then choose").

    .venv/bin/python tests/perf/bench_bulk_floor.py [--rows 1000000] [--runs 3]

Without the toolkit: 100,000 customers with a privacy_mark (1% marked), and tables of
orders that differ only in how a new row gets its customer's mark:
- none: no trigger (the baseline);
- row: a BEFORE INSERT row trigger that reads the parent's mark (SECURITY DEFINER
  PL/pgSQL, one indexed query, no lock): the floor of what the toolkit does per row;
- row, locking: the same query FOR SHARE of the parent, as the toolkit's trigger (a
  placement marking the parent then waits for the new row's commit and marks it too);
- statement: an AFTER INSERT statement trigger with a transition table that locks the
  distinct parents FOR SHARE, then updates the new rows whose parent is marked (two
  statements written into the function, as the toolkit would generate them per table;
  only marked subjects' rows are written twice);
- row, locking, + statement: the row trigger and beside it a statement trigger with a
  transition table that does nothing: the least a single-row INSERT would pay for
  having both (the row trigger for single rows, the statement trigger for bulk loads);
- none, row-level security / statement, row-level security: no trigger, and the statement
  trigger, on a table with the toolkit's two policies (every protected table has them);
- empty row + statement: a row trigger that returns the row as it is, and the statement
  trigger: the least a design pays on a bulk load where the row trigger marks single rows
  and leaves a bulk load's rows to the statement trigger;
- statement, all marked: the statement trigger with every new row's customer marked
  (its worst case).
Measures INSERT ... SELECT of ROWS rows (rolled back) and pgbench single-row INSERTs
(2 clients, prepared, 5 s), as a plain role `loader` (the policies apply to it), alternating tables; prints medians and ratios to none.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from pyctl.cluster import Cluster, start_cluster

SETUP = """
create table customers (id integer primary key, privacy_mark smallint not null default 0);
insert into customers select g, case when g % 100 = 1 then 1 else 0 end from generate_series(1, 100000) g;
create function parent_mark(a integer) returns smallint security definer language plpgsql as $$
declare v smallint;
begin
    select c.privacy_mark into v from public.customers c where c.id operator(pg_catalog.=) a;
    return coalesce(v, 0);
end $$;
create function row_mark() returns trigger language plpgsql as
    'begin new.privacy_mark := public.parent_mark(new.customer_id); return new; end';
create function row_mark_locking() returns trigger security definer language plpgsql as $$
declare v smallint;
begin
    select c.privacy_mark into v from public.customers c where c.id operator(pg_catalog.=) new.customer_id for share of c;
    new.privacy_mark := coalesce(v, 0);
    return new;
end $$;
create function nothing() returns trigger language plpgsql as 'begin return null; end';
create function nothing_to_row() returns trigger language plpgsql as 'begin return new; end';
create role loader login;
create role privacy_steward nologin;
"""
TABLE = """
create table {t} (id bigserial primary key, customer_id integer not null references customers (id),
                  total integer not null, privacy_mark smallint not null default 0);
create index on {t} (customer_id);
"""
STATEMENT_MARK = """
create function statement_mark_{t}() returns trigger security definer language plpgsql as $$
begin
    perform 1 from public.customers c where c.id in (select distinct n.customer_id from new_rows n) for share of c;
    update public.{t} o set privacy_mark = c.privacy_mark from new_rows n join public.customers c on c.id = n.customer_id
     where o.id = n.id and c.privacy_mark <> 0;
    return null;
end $$;
"""
# The toolkit's two policies (sql/20_enforce.sql): what every INSERT of a protected table
# pays for row-level security, whatever marks the row.
RLS = """
alter table {t} enable row level security;
create policy privacy_hide_restricted on {t} as restrictive
    using (privacy_mark < 2 or pg_catalog.pg_has_role('privacy_steward', 'MEMBER') or pg_catalog.pg_has_role('postgres', 'USAGE'))
    with check (privacy_mark < 2 or pg_catalog.pg_has_role('privacy_steward', 'MEMBER') or pg_catalog.pg_has_role('postgres', 'USAGE'));
create policy privacy_permit_all on {t} using (true) with check (true);
"""
VARIANTS = {
    "none": [],
    "row": ["create trigger mark before insert on {t} for each row execute function row_mark()"],
    "row, locking": ["create trigger mark before insert on {t} for each row execute function row_mark_locking()"],
    "statement": [STATEMENT_MARK, "create trigger mark after insert on {t} referencing new table as new_rows "
                                  "for each statement execute function statement_mark_{t}()"],
    "none, row-level security": [RLS],
    "statement, row-level security": [STATEMENT_MARK, "create trigger mark after insert on {t} referencing new table as new_rows "
                                                      "for each statement execute function statement_mark_{t}()", RLS],
    "empty row + statement": ["create trigger mark before insert on {t} for each row execute function nothing_to_row()",
                              STATEMENT_MARK, "create trigger mark_bulk after insert on {t} referencing new table as new_rows "
                                              "for each statement execute function statement_mark_{t}()"],
    "row, locking, + statement": ["create trigger mark before insert on {t} for each row execute function row_mark_locking()",
                                  "create trigger mark_bulk after insert on {t} referencing new table as new_rows "
                                  "for each statement execute function nothing()"],
}


def table_of(variant: str) -> str:
    return "orders_" + re.sub(r"[^a-z]+", "_", variant).strip("_")


def insert_select(cluster: Cluster, table: str, rows: int, marked: bool) -> float:
    # Customers of 1% of the rows are marked; with MARKED, every row's customer is.
    customer = "1 + 100 * (g % 999)" if marked else "2 + g % 99990"
    with psycopg.connect(cluster.dsn("floor", user="loader")) as conn:
        started = time.monotonic()
        conn.execute(f"insert into {table} (customer_id, total) select {customer}, g from generate_series(1, {rows}) g")
        elapsed = time.monotonic() - started
        conn.rollback()
    with psycopg.connect(cluster.dsn("floor"), autocommit=True) as conn:
        conn.execute(f"vacuum {table}")
    return elapsed


def pgbench(cluster: Cluster, table: str, seconds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text(f"\\set c random(2, 100000)\ninsert into {table} (customer_id, total) values (:c, 1);\n")
        script.chmod(0o644)
        Path(tmp).chmod(0o755)
        out = subprocess.run([str(cluster.bindir / "pgbench"), "-n", "-c", "2", "-j", "2", "-M", "prepared", "-T", str(seconds),
                              "-f", str(script), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "loader", "floor"],
                             capture_output=True, text=True, check=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    assert match, out.stdout + out.stderr
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cluster = start_cluster({"shared_buffers": "'2GB'", "max_wal_size": "'8GB'", "autovacuum": "off"})
    try:
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
            su.execute("create database floor")
        with psycopg.connect(cluster.dsn("floor"), autocommit=True) as su:
            su.execute(SETUP)
            for name, statements in VARIANTS.items():
                su.execute(TABLE.format(t=table_of(name)))
                for statement in statements:
                    su.execute(statement.replace("{t}", table_of(name)))
            su.execute("grant select, insert on all tables in schema public to loader; "
                       "grant usage on all sequences in schema public to loader")
            su.execute("vacuum analyze")
        cases = [(name, False) for name in VARIANTS] + [("statement", True)]
        loads: dict[str, list[float]] = {}
        tps: dict[str, list[float]] = {}
        for run in range(args.runs):
            for name, marked in (cases if run % 2 == 0 else list(reversed(cases))):
                label = name + (", all marked" if marked else "")
                loads.setdefault(label, []).append(insert_select(cluster, table_of(name), args.rows, marked))
                if not marked:
                    tps.setdefault(label, []).append(pgbench(cluster, table_of(name), 5))
                print(f"  run {run + 1} {label:26s} {loads[label][-1]:7.2f} s" + (f"  {tps[label][-1]:9.0f} tps" if not marked else ""),
                      flush=True)
        print()
        print(f"| marking trigger | INSERT ... SELECT of {args.rows:,} rows, median s | ratio to none "
              "| single-row INSERT, median TPS | ratio to none |")
        print("| --- | --- | --- | --- | --- |")
        base_load, base_tps = statistics.median(loads["none"]), statistics.median(tps["none"])
        for label, values in loads.items():
            load = statistics.median(values)
            t = statistics.median(tps[label]) if label in tps else None
            print(f"| {label} | {load:.2f} | {base_load / load:.3f} | {f'{t:.0f}' if t else '-'} | {f'{t / base_tps:.3f}' if t else '-'} |")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
