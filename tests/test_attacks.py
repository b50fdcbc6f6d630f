"""An application role trying to get at restricted or held rows some other way."""

from __future__ import annotations

import psycopg
import pytest

from conftest import Db, hold, refused, restrict


def test_search_path_and_temp_object_hijacks_change_nothing(db: Db) -> None:
    restrict(db, 2)
    hold(db, 3)
    app = db.app
    app.execute("""
        create temp table subject_marks (subject_type text, subject_key text, mark smallint);
        create temp table subject_guards (bucket int, generation bigint);
        create function pg_temp.hashtext(text) returns integer language sql as 'select 0';
        create function pg_temp.pg_has_role(name, text) returns boolean language sql as 'select true';
        set search_path = pg_temp, public;
    """)
    refused(app, "insert into public.orders values (91, 2, '2026-05-05', 1)")
    refused(app, "delete from public.orders where id = 30")
    assert [r[0] for r in app.execute("select id from public.orders order by id").fetchall()] == [10, 11, 30, 31, 40]


def test_an_operator_planted_in_public_does_not_change_the_policy(db: Db) -> None:
    restrict(db, 2)
    db.owner.execute("grant create on schema public to app")
    db.app.execute("""
        create function public.always(smallint, integer) returns boolean language sql as 'select true';
        create operator public.< (leftarg = smallint, rightarg = integer, function = public.always);
        set search_path = public, pg_catalog;
    """)
    assert 20 not in [r[0] for r in db.app.execute("select id from orders").fetchall()]


def test_the_mark_cannot_be_forged(db: Db) -> None:
    restrict(db, 2)
    hold(db, 3)
    app = db.app
    assert app.execute("update orders set privacy_mark = 0 where customer_id = 2").rowcount == 0
    refused(app, "update orders set privacy_mark = 0 where customer_id = 3")
    assert db.scalar("select privacy_mark from orders where id = 30") == 1
    app.execute("update orders set privacy_mark = 2 where id = 10")  # hiding a row of one's own: recomputed
    assert db.scalar("select privacy_mark from orders where id = 10") == 0
    refused(app, "insert into orders (id, customer_id, placed_on, total, privacy_mark) values (92, 2, '2026-05-05', 1, 0)")
    app.execute("insert into activity_log (customer_id, what, privacy_mark) values (1, 'x', 3)")
    assert db.scalar("select max(privacy_mark) from activity_log where customer_id = 1") == 0


def test_upsert_onto_a_hidden_row_is_refused(db: Db) -> None:
    restrict(db, 2)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.app.execute("insert into orders values (20, 1, '2026-02-20', 0) "
                       "on conflict (id, placed_on) do update set total = 0, customer_id = 1")
    assert db.scalar("select (customer_id, total)::text from orders where id = 20") == "(2,200)"


def test_upsert_onto_a_held_row_is_refused(db: Db) -> None:
    hold(db, 3)
    refused(db.app, "insert into orders values (30, 3, '2026-03-30', 0) on conflict (id, placed_on) do update set total = 0")
    assert db.scalar("select total from orders where id = 30") == 300


def test_merge_onto_hidden_and_held_rows(db: Db) -> None:
    restrict(db, 2)
    hold(db, 3)
    cur = db.app.execute("merge into orders o using (values (20), (30)) v(id) on o.id = v.id "
                         "when matched and o.id = 20 then update set total = 0")
    assert cur.rowcount == 0
    refused(db.app, "merge into orders o using (values (30)) v(id) on o.id = v.id when matched then delete")
    assert db.scalar("select count(*) from orders where id in (20, 30)") == 2


def test_data_modifying_cte_and_returning(db: Db) -> None:
    restrict(db, 2)
    hold(db, 3)
    refused(db.app, "with d as (delete from order_items where id = 300 returning *) select count(*) from d")
    rows = db.app.execute("with u as (update orders set total = total where customer_id = 2 returning id) "
                          "select count(*) from u").fetchone()
    assert rows == (0,)


def test_copy_to_does_not_export_restricted_rows(db: Db) -> None:
    restrict(db, 2)
    with db.app.cursor() as cur, cur.copy("copy activity_log (customer_id, what) to stdout") as copy:
        rows = list(copy.rows())
    assert sorted(rows) == [("1", "login"), ("3", "login")]


def test_prepared_statement_from_before_a_restriction_sees_it(db: Db) -> None:
    app = db.app
    app.execute("prepare by_customer(int) as select id from orders where customer_id = $1 order by id")
    for _ in range(6):  # past the point where a generic plan is cached
        assert app.execute("execute by_customer(2)").fetchall() == [(20,), (21,)]
    restrict(db, 2)
    assert app.execute("execute by_customer(2)").fetchall() == []


def test_privilege_escalations_fail(db: Db) -> None:
    hold(db, 3)
    app = db.app
    for statement, error in (
        ("set role shop_owner", psycopg.errors.InsufficientPrivilege),
        ("set role privacy_steward", psycopg.errors.InsufficientPrivilege),
        ("set session_replication_role = replica", psycopg.errors.InsufficientPrivilege),
        ("alter table orders disable trigger all", psycopg.errors.InsufficientPrivilege),
        ("alter table orders disable row level security", psycopg.errors.InsufficientPrivilege),
        ("drop policy privacy_hide_restricted on orders", psycopg.errors.InsufficientPrivilege),
        ("create rule r as on delete to orders do instead nothing", psycopg.errors.InsufficientPrivilege),
        ("truncate orders", psycopg.errors.InsufficientPrivilege),
        ("alter table orders drop column total", psycopg.errors.InsufficientPrivilege),
        ("grant privacy_steward to app", psycopg.errors.InsufficientPrivilege),
    ):
        with pytest.raises(error):
            app.execute(statement)
    assert db.scalar("select count(*) from orders where customer_id = 3") == 2


def test_the_owner_cannot_escape_a_hold_through_the_mark_or_a_cascade(db: Db) -> None:
    hold(db, 3)
    owner = db.owner
    refused(owner, "update customers set privacy_mark = 0 where id = 3")
    refused(owner, "delete from products")
    refused(owner, "update orders set customer_id = 1 where customer_id = 3")
    assert db.scalar("select count(*) from order_items where order_id in (30, 31)") == 2


def test_identifiers_are_never_spliced(db: Db) -> None:
    for table in ("public.products; drop table customers", "products'; drop table customers; --",
                  '"products""; drop table customers"'):
        with pytest.raises(psycopg.Error):
            db.owner.execute("select privacy.protect(%s, 'customer', 'id')", (table,))
    with pytest.raises(psycopg.Error, match="has no column"):
        db.owner.execute("select privacy.protect('public.products', 'customer', 'id; drop table customers')")
    assert db.scalar("select count(*) from customers") == 4
    assert db.scalar("select count(*) from privacy.protected_tables") == 6


def test_protecting_a_table_with_quotes_spaces_and_semicolons(db: Db) -> None:
    restrict(db, 2)
    assert db.ids('"crm data"."Support; Tickets"', "app", '"Ticket Id"') == [1, 3]
    refused(db.app, 'insert into "crm data"."Support; Tickets" values (9, 2, \'x\')')
    assert db.scalar('select count(*) from "crm data"."Support; Tickets"') == 3
