"""Plan shapes under the toolkit, as the application sees them (issue 7).

The marking design promises that reads cost a comparison on the row: no privacy.*
table appears in the plan of a SELECT, none is read while it runs, and the
application's own equality and range predicates keep using their indexes (the
policy becomes a Filter next to the Index Cond that tests the row's mark first and
asks whether the role is a steward only for a restricted row: no InitPlan or
SubPlan to set up on every execution).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from conftest import Db, hold, restrict

PRIVACY_TABLES = ("subject_marks", "subject_guards", "processing_restrictions", "ledger", "protected_tables",
                  "subject_types", "settings")

# Reads an application runs on every protected table: whole table, and a filtered one.
READS = [
    "select * from public.customers",
    "select * from public.customers where id = 2",
    "select * from public.orders",
    "select * from public.orders where customer_id = 2",
    "select * from public.orders_2026 where customer_id = 2",
    "select * from public.order_items",
    "select * from public.order_items where order_id = 20 and placed_on = '2026-02-20'",
    "select * from public.activity_log where customer_id = 2",
    "select * from public.addresses where id = 2",
    'select * from "crm data"."Support; Tickets" where "Customer ""Ref""" = 2',
    "select c.name, o.id, i.quantity from public.customers c join public.orders o on o.customer_id = c.id "
    "join public.order_items i on (i.order_id, i.placed_on) = (o.id, o.placed_on) where c.id in (1, 2, 3)",
    "select count(*) from public.order_items",
]


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain_json(conn: psycopg.Connection, statement: str) -> list[dict[str, Any]]:
    row = conn.execute(f"explain (verbose, format json) {statement}").fetchone()
    assert row is not None
    doc = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return list(plan_nodes(doc[0]["Plan"]))


def explain_text(conn: psycopg.Connection, statement: str) -> str:
    return "\n".join(r[0] for r in conn.execute(f"explain {statement}").fetchall())


@pytest.fixture
def marked(db: Db) -> Db:
    """The shop with a hold (customer 1) and a restriction (customer 2) in force, so that marks exist."""
    hold(db, 1)
    restrict(db, 2)
    db.su.execute("analyze")
    return db


@pytest.mark.parametrize("statement", READS)
def test_no_privacy_table_in_the_plan_of_a_read(marked: Db, statement: str) -> None:
    nodes = explain_json(marked.app, statement)
    relations = {(n.get("Schema"), n.get("Relation Name")) for n in nodes if "Relation Name" in n}
    assert relations, "the plan reads no table at all"
    assert not [r for r in relations if r[0] == "privacy"], f"privacy tables in the plan: {relations}"
    # The restriction test is on the row itself: the mark, compared with a constant.
    text = json.dumps(nodes)
    assert "privacy_mark < 2" in text, "the policy is not in the plan"
    assert not re.search(r"\bprivacy\.", text), "a privacy function or table appears in the plan"


@pytest.mark.parametrize("statement", READS)
def test_a_read_touches_no_privacy_table_while_it_runs(marked: Db, statement: str) -> None:
    """Counted by PostgreSQL itself (pg_stat_xact_user_tables): not one scan of a privacy.* table."""
    with marked.app.transaction(force_rollback=True):
        marked.app.execute(statement).fetchall()
        rows = marked.app.execute(
            "select relname, seq_scan, coalesce(idx_scan, 0), n_tup_ins + n_tup_upd + n_tup_del "
            "from pg_stat_xact_user_tables where schemaname = 'privacy' "
            "and (seq_scan > 0 or coalesce(idx_scan, 0) > 0 or n_tup_ins + n_tup_upd + n_tup_del > 0)").fetchall()
    assert rows == [], f"privacy tables read or written by a SELECT: {rows}"


@pytest.mark.parametrize("statement", [
    "update public.orders set total = total + 1 where customer_id = 3",
    "update public.order_items set quantity = quantity + 1 where order_id = 30 and placed_on = '2026-03-30'",
    "delete from public.order_items where order_id = 31 and placed_on = '2025-07-01'",
    "delete from public.orders where customer_id = 4",
    "update public.activity_log set what = what || '!' where customer_id = 3",
])
def test_changing_unmarked_rows_touches_no_privacy_table(marked: Db, statement: str) -> None:
    """UPDATE and DELETE of rows of subjects without hold or restriction: the WHEN clauses
    keep the toolkit's functions (and so its tables) out of it, cascades included."""
    with marked.app.transaction(force_rollback=True):
        cur = marked.app.execute(statement)
        assert cur.rowcount > 0
        rows = marked.app.execute(
            "select relname, seq_scan, coalesce(idx_scan, 0) from pg_stat_xact_user_tables "
            "where schemaname = 'privacy' and (seq_scan > 0 or coalesce(idx_scan, 0) > 0)").fetchall()
    assert rows == [], f"privacy tables read by a change to unmarked rows: {rows}"


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_inserts_never_scan_a_privacy_table_sequentially(marked: Db, isolation: str) -> None:
    """New rows take their mark from their path: a column table looks up its subject by
    index (subject_marks), once per row, never with a sequential scan; at REPEATABLE
    READ it also locks the subject's guard row (subject_guards), by index; at READ
    COMMITTED an advisory lock does instead. (With two marked subjects subject_marks
    is one page, which the planner rightly reads whole; so mark a few hundred
    subjects, as a real database has.)"""
    marked.owner.execute("insert into public.customers (id, name) select g, 'c' || g from generate_series(1000, 1599) g")
    marked.steward.execute("do $$ begin for k in 1000..1599 loop perform privacy.place_hold('customer', k::text, 'C-1', 'r'); "
                           "end loop; end $$")
    marked.su.execute("analyze")
    with marked.app.transaction(force_rollback=True):
        marked.app.execute(f"set transaction isolation level {isolation}")
        marked.app.execute("insert into public.activity_log (customer_id, what) select 3, 'x' || g from generate_series(1, 50) g")
        marked.app.execute("insert into public.orders select 900 + g, 3, '2026-06-01', g from generate_series(1, 50) g")
        rows = dict((r[0], r[1:]) for r in marked.app.execute(
            "select relname, seq_scan, coalesce(idx_scan, 0) from pg_stat_xact_user_tables where schemaname = 'privacy'").fetchall())
    assert all(seq == 0 for seq, _ in rows.values()), f"sequential scans of privacy tables: {rows}"
    # One lookup per inserted activity_log row, none for orders (their mark comes from the parent row).
    assert rows["subject_marks"][1] == 50, rows
    assert rows.get("subject_guards", (0, 0))[1] == (50 if isolation == "repeatable read" else 0), rows


def test_the_steward_test_is_asked_only_of_restricted_rows(marked: Db) -> None:
    with marked.app.transaction(force_rollback=True):
        rows = marked.app.execute("explain (analyze, costs off, timing off, summary off) select * from public.orders").fetchall()
    text = "\n".join(r[0] for r in rows)
    filters = re.findall(r"^\s*(?:->  .*\n\s*)?Filter: (.*)", text, re.M)
    assert filters, text
    # PostgreSQL evaluates OR's arms in order and stops at the first true one: the mark
    # decides for every visible row, pg_has_role is called for restricted rows only.
    assert all(f.startswith("((privacy_mark < 2) OR pg_has_role(") for f in filters), text
    assert "InitPlan" not in text and "SubPlan" not in text, text


@pytest.fixture
def app_no_seqscan(marked: Db) -> Iterator[psycopg.Connection]:
    conn = marked.app
    conn.execute("set enable_seqscan = off")
    try:
        yield conn
    finally:
        conn.execute("reset enable_seqscan")


@pytest.mark.parametrize(("statement", "index", "cond"), [
    ("select * from public.customers where id = 2", "customers_pkey", "(id = 2)"),
    ("select * from public.customers where id between 2 and 3", "customers_pkey", "((id >= 2) AND (id <= 3))"),
    ("select * from public.customers where address_id = 2", "customers_address_id_idx", "(address_id = 2)"),
    ("select * from public.orders where customer_id = 2", "orders_2026_customer_id_idx", "(customer_id = 2)"),
    ("select * from public.orders where customer_id > 2", "orders_2025_customer_id_idx", "(customer_id > 2)"),
    ("select * from public.order_items where order_id = 20 and placed_on = '2026-02-20'",
     "order_items_order_id_placed_on_idx", "((order_id = 20) AND (placed_on = '2026-02-20'::date))"),
    ("select * from public.order_items where order_id between 10 and 30", "order_items_order_id_placed_on_idx",
     "((order_id >= 10) AND (order_id <= 30))"),
    ("select * from public.order_items where id = 200", "order_items_pkey", "(id = 200)"),
    ('select * from "crm data"."Support; Tickets" where "Ticket Id" = 2', '"Support; Tickets_pkey"', '("Ticket Id" = 2)'),
])
def test_the_applications_own_predicates_use_their_indexes(app_no_seqscan: psycopg.Connection, statement: str,
                                                           index: str, cond: str) -> None:
    text = explain_text(app_no_seqscan, statement)
    assert "Index" in text, text
    assert f"using {index} on" in text, text
    # The application's predicate is the index condition; the policy is only a filter on what it finds.
    assert f"Index Cond: {cond}" in text, text
    assert "Filter: ((privacy_mark < 2) OR pg_has_role(" in text, text
    assert "Seq Scan" not in text, text


def test_indexes_are_chosen_without_coaxing_on_a_realistic_table(marked: Db) -> None:
    """With enough rows the planner picks the indexes on its own, policy and all."""
    marked.owner.execute("insert into public.customers (id, name) select g, 'c' || g from generate_series(1000, 20999) g")
    marked.owner.execute("insert into public.orders select 10000 + g, 1000 + g % 20000, date '2025-01-01' + g % 730, g "
                         "from generate_series(1, 40000) g")
    marked.su.execute("analyze public.customers, public.orders")
    for statement, index in [
        ("select * from public.customers where id = 4242", "customers_pkey"),
        ("select * from public.customers where id between 4000 and 4010", "customers_pkey"),
        ("select * from public.orders where customer_id = 4242", "orders_2025_customer_id_idx"),
        ("select * from public.orders where customer_id = 4242", "orders_2026_customer_id_idx"),
        ("select id, total from public.orders where customer_id between 4000 and 4003", "orders_2026_customer_id_idx"),
        ("select * from public.orders_2025 where customer_id = 4242", "orders_2025_customer_id_idx"),
    ]:
        text = explain_text(marked.app, statement)
        assert f"{index} on" in text, f"{statement}:\n{text}"
        assert "Seq Scan" not in text, f"{statement}:\n{text}"
        assert "privacy_mark < 2" in text, f"{statement}:\n{text}"


def test_plans_are_the_same_for_many_restrictions(marked: Db) -> None:
    """The plan does not depend on how many subjects are restricted: no lookup grows with them."""
    before = explain_text(marked.app, "select * from public.orders where customer_id = 3")
    marked.owner.execute("insert into public.customers (id, name) select g, 'c' || g from generate_series(1000, 1199) g")
    for key in range(1000, 1200):
        restrict(marked, key)
    after = explain_text(marked.app, "select * from public.orders where customer_id = 3")
    strip = re.compile(r"\(cost=[^)]*\)")
    assert strip.sub("", before) == strip.sub("", after)
