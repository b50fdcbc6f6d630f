"""The registry follows its tables: renaming a protected table, its schema or a column leaves
enforcement, placement, export, the digests and status working."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from conftest import Db, hold, refused, restrict
from pyctl.cli import main


def states(db: Db) -> dict[str, str]:
    return {r[1]: r[2] for r in db.su.execute("select * from privacy.enforcement_status()").fetchall()}


@pytest.mark.parametrize("fixture", ["db", "sudb"])
def test_renaming_tables_and_a_schema_leaves_everything_working(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    d: Db = request.getfixturevalue(fixture)
    hold_id = hold(d, 3)
    d.owner.execute("alter table customers rename to clients")
    d.owner.execute("alter table orders rename to purchases")
    d.owner.execute('alter schema "crm data" rename to crm')
    # Without anything run since: the application's writes are still judged, through the parents' views.
    refused(d.app, "delete from order_items where id = 300")
    d.app.execute("insert into order_items values (901, 30, '2026-03-30', 1, 1)")  # an item of a held order: held too
    assert d.scalar("select privacy_mark from order_items where id = 901") == 1
    restrict(d, 2)  # placement finds every table under its new name
    assert d.ids("purchases", "app") == [10, 11, 30, 31, 40]
    refused(d.app, "insert into purchases values (92, 2, '2026-05-05', 1)")
    assert d.scalar("select count(*) from purchases where id = 92") == 0
    refused(d.app, 'insert into crm."Support; Tickets" values (9, 2, \'x\')')
    assert set(states(d).values()) == {"installed"}, states(d)
    names = {r[0] for r in d.su.execute("select privacy.qualified(table_schema, table_name) from privacy.protected_tables").fetchall()}
    assert {"public.clients", "public.purchases", 'crm."Support; Tickets"'} <= names
    verified = dict(d.su.execute("select table_name, status from privacy.verify_hold(%s)", (hold_id,)).fetchall())
    assert verified.pop("public.order_items") == "rows added"  # item 901; renames are no change
    assert set(verified.values()) == {"unchanged"}, verified
    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["--dsn", d.dsn("steward_user"), "export", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").exists() and any("public.purchases" in p.name for p in out.iterdir())


def test_renaming_a_path_column_is_healed_before_the_next_placement(db: Db) -> None:
    hold(db, 3)
    db.owner.execute("alter table orders rename column customer_id to client_id")
    db.owner.execute("alter table customers rename column id to client_no")
    # The orders' own trigger functions named the column: status says so, with the fix.
    state = {r[1]: (r[2], r[3]) for r in db.su.execute("select * from privacy.enforcement_status()").fetchall()}
    assert state["public.orders"][0] == "outdated", state
    refused(db.app, "delete from order_items where id = 300")  # parents' renamed columns: still judged
    restriction = restrict(db, 2)  # placement heals first
    assert set(states(db).values()) == {"installed"}
    assert db.scalar("select columns::text from privacy.protected_tables where table_name = 'orders'") == "{client_id}"
    refused(db.app, "insert into orders values (92, 2, '2026-05-05', 1)")
    db.app.execute("insert into orders values (93, 1, '2026-05-05', 1)")
    assert db.ids("orders", "app") == [10, 11, 30, 31, 40, 93]
    assert restriction


def test_dropping_a_table_other_tables_read_through_is_refused_and_a_leaf_table_is_not(db: Db) -> None:
    with pytest.raises(psycopg.errors.DependentObjectsStillExist, match=r"view privacy\.pt_2_v depends on table orders"):
        db.owner.execute("drop table orders")
    assert db.scalar("select count(*) from orders") == 7
    db.owner.execute("drop table activity_log")  # no hold: nothing of the toolkit's stands in the way
    assert states(db)["public.activity_log"] == "missing"


def test_a_table_forced_under_row_level_security_does_not_fail_open(db: Db) -> None:
    """The toolkit's lookups run as its owner; FORCE ROW LEVEL SECURITY must not hide restricted parents from them."""
    db.owner.execute("alter table orders force row level security")
    restrict(db, 2)
    refused(db.app, "insert into order_items values (902, 20, '2026-02-20', 1, 1)")
    assert db.scalar("select count(*) from order_items where id = 902") == 0


def test_a_subject_key_must_be_of_a_type_written_one_way(db: Db) -> None:
    """Subject keys are kept, and new rows looked up, by their text: with an unconstrained
    numeric key a held subject's new row written 2.0 (its key stored 2) escaped the hold
    (mark 0, deletable). Such key types are refused, with a clear error and nothing
    registered; a numeric with a scale, or a domain over integer, is one text per value."""
    db.owner.execute("""
        create domain money_id as numeric;
        create domain int_id as integer;
        create table k_numeric (id numeric primary key);
        create table k_money (id money_id primary key);
        create table k_time (id timestamptz primary key);
        create table k_float (id double precision primary key);
        create table k_scaled (id numeric(12,0) primary key);
        create table k_scaled_item (id serial primary key, k_id numeric not null references k_scaled (id));
        create table k_domain (id int_id primary key);
        create collation k_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
        create table k_ci (id text collate k_ci primary key);
        create table k_neg (id numeric(5,-2) primary key);
        create table k_neg_item (id serial primary key, k_id numeric not null);
        insert into k_scaled values (2);
        insert into k_neg values (200);
        grant select, insert, update, delete on k_neg_item to app;
        grant usage on sequence k_neg_item_id_seq to app;
        grant select, insert, update, delete on k_scaled, k_scaled_item to app;
        grant usage on sequence k_scaled_item_id_seq to app;
    """)
    before = db.su.execute("select (select count(*) from privacy.subject_types), (select count(*) from privacy.ledger)").fetchone()
    for table, shown in (("k_numeric", "numeric"), ("k_money", "public.money_id"), ("k_time", "timestamp with time zone"),
                         ("k_float", "double precision")):
        with pytest.raises(psycopg.Error) as info:
            db.owner.execute("select privacy.add_subject_type('thing', %s::regclass, 'id')", (f"public.{table}",))
        assert info.value.sqlstate == "PV002"
        assert f"public.{table}.id is of type {shown}: subject keys are kept by their text" in str(info.value)
    with pytest.raises(psycopg.Error) as info:  # 'ABC' = 'abc': two subjects' texts, one subject (found by an outside attack)
        db.owner.execute("select privacy.add_subject_type('thing', 'public.k_ci', 'id')")
    assert info.value.sqlstate == "PV002" and "has the nondeterministic collation k_ci" in str(info.value)
    assert db.su.execute("select (select count(*) from privacy.subject_types), (select count(*) from privacy.ledger)").fetchone() == before
    db.owner.execute("select privacy.add_subject_type('domained', 'public.k_domain', 'id')")
    # A negative scale is a scale too: 200.0 is '200' (found by an outside attack)
    db.owner.execute("select privacy.add_subject_type('rounded', 'public.k_neg', 'id')")
    db.owner.execute("select privacy.protect('public.k_neg_item', 'rounded', 'k_id')")
    db.steward.execute("select privacy.place_hold('rounded', '200', 'C-2', 'preserve')")
    db.app.execute("insert into k_neg_item (k_id) values (200.0)")
    assert db.su.execute("select privacy_mark from k_neg_item").fetchall() == [(1,)]
    db.owner.execute("select privacy.add_subject_type('scaled', 'public.k_scaled', 'id')")
    db.owner.execute("select privacy.protect('public.k_scaled_item', 'scaled', 'k_id')")  # looked up by text
    db.steward.execute("select privacy.place_hold('scaled', '2.00', 'C-1', 'preserve')")
    db.app.execute("insert into k_scaled_item (k_id) values (2.0)")
    assert db.su.execute("select privacy_mark from k_scaled_item").fetchall() == [(1,)]
    with pytest.raises(psycopg.Error) as info:
        db.app.execute("delete from k_scaled_item")
    assert info.value.sqlstate == "PV001"
    assert db.su.execute("select count(*) from k_scaled_item").fetchone() == (1,)
