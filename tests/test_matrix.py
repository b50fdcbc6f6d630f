"""The enforcement matrix of DESIGN.md, cell by cell, for every kind of path.

Subjects in tests/shop.sql: customer 1 (Ada), 2 (Ben), 3 (Cy), 4 (Dee, whose
address 4 is shared with staff member Sam).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from conftest import Db, hold, refused, restrict


@dataclass(frozen=True)
class Path:
    table: str
    rows_of: str  # WHERE clause selecting subject {k}'s rows
    change: str  # SET clause of an UPDATE that changes data
    insert: str | None  # INSERT adding a row for subject {k}

    def where(self, k: int) -> str:
        return self.rows_of.format(k=k)


PATHS = [
    Path("public.customers", "id = {k}", "name = name || '!'", None),
    Path("public.orders", "customer_id = {k}", "total = total + 1",
         "insert into public.orders values (9{k}, {k}, '2026-05-05', 1)"),
    Path("public.order_items", "order_id in ({k}0, {k}1)", "quantity = quantity + 1",
         "insert into public.order_items values (9{k}0, {k}0, '2026-0{k}-{k}0', 1, 1)"),
    Path("public.activity_log", "customer_id = {k}", "what = what || '!'",
         "insert into public.activity_log (customer_id, what) values ({k}, 'new')"),
    Path('"crm data"."Support; Tickets"', '"Customer ""Ref""" = {k}', "body = body || '!'",
         'insert into "crm data"."Support; Tickets" values (9{k}, {k}, \'new\')'),
    Path("public.addresses", "id = {k}", "street = street || '!'", None),
]
IDS = [p.table.split(".")[-1].strip('"') for p in PATHS]


def count(db: Db, path: Path, k: int, user: str = "postgres") -> int:
    return int(db.scalar(f"select count(*) from {path.table} where {path.where(k)}", user=user))


def snapshot(db: Db, path: Path, k: int) -> list[tuple[object, ...]]:
    """The subject's rows as the superuser sees them (without the mark)."""
    return db.su.execute(
        f"select to_jsonb(t) - 'privacy_mark' from {path.table} t where {path.where(k)} order by 1::text"
    ).fetchall()


# -- no hold, no restriction --------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_unrestricted_subject_is_fully_usable_by_the_app(db: Db, path: Path) -> None:
    assert count(db, path, 1, "app") == count(db, path, 1) > 0
    cur = db.app.execute(f"update {path.table} set {path.change} where {path.where(1)}")
    assert cur.rowcount == count(db, path, 1)
    if path.insert:
        db.app.execute(path.insert.format(k=1))
    if path.table not in ("public.customers", "public.addresses"):
        cur = db.app.execute(f"delete from {path.table} where {path.where(1)}")
        assert cur.rowcount > 0
        assert count(db, path, 1) == 0


# -- legal hold ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=IDS)
@pytest.mark.parametrize("user", ["app", "steward_user", "shop_owner"])
def test_hold_refuses_update_and_delete_for_every_role(db: Db, path: Path, user: str) -> None:
    hold_id = hold(db, 3)
    before = snapshot(db, path, 3)
    conn = db.connect(user)
    err = refused(conn, f"update {path.table} set {path.change} where {path.where(3)}")
    message = str(err.diag.message_primary)
    assert "UPDATE on" in message and "customer/3" in message and hold_id in message and "2026-CV-118" in message
    refused(conn, f"delete from {path.table} where {path.where(3)}")
    assert snapshot(db, path, 3) == before
    # reads stay allowed
    assert count(db, path, 3, user) == len(before)


@pytest.mark.parametrize("path", [p for p in PATHS if p.insert], ids=[i for p, i in zip(PATHS, IDS, strict=True) if p.insert])
def test_hold_allows_new_rows_and_preserves_them_too(db: Db, path: Path) -> None:
    hold(db, 3)
    before = count(db, path, 3)
    db.app.execute(path.insert.format(k=3))  # type: ignore[union-attr]
    assert count(db, path, 3) == before + 1
    refused(db.app, f"delete from {path.table} where {path.where(3)}")
    assert count(db, path, 3) == before + 1


def test_hold_refuses_truncate_of_table_and_partition(db: Db) -> None:
    hold(db, 3)
    for table in ("public.order_items", "public.orders", "public.orders_2025", "public.activity_log"):
        err = refused(db.owner, f"truncate {table} cascade")
        assert "TRUNCATE" in str(err.diag.message_primary)
    assert db.scalar("select count(*) from orders_2025") == 3
    assert db.scalar("select count(*) from activity_log") == 4


def test_truncate_allowed_without_held_or_restricted_rows(db: Db) -> None:
    db.owner.execute("truncate activity_log")
    assert db.scalar("select count(*) from activity_log") == 0


def test_hold_refuses_on_delete_cascade_from_unprotected_parent(db: Db) -> None:
    hold(db, 3)
    refused(db.app, "delete from products where id = 2")  # cascades into held item 310
    assert db.scalar("select count(*) from products where id = 2") == 1
    assert db.scalar("select count(*) from order_items where id = 310") == 1


def test_hold_refuses_cascade_from_root_and_parent(db: Db) -> None:
    hold(db, 3)
    refused(db.owner, "delete from customers where id = 3")
    refused(db.owner, "delete from orders where id = 30")
    assert db.scalar("select count(*) from orders where customer_id = 3") == 2
    assert db.scalar("select count(*) from order_items where order_id in (30, 31)") == 2


def test_hold_refuses_moving_a_row_out_of_the_subject(db: Db) -> None:
    hold(db, 3)
    refused(db.app, "update orders set customer_id = 1 where id = 30")
    refused(db.app, "update activity_log set customer_id = 1 where customer_id = 3")
    refused(db.owner, "update orders set placed_on = '2025-03-30' where id = 30")  # to another partition
    assert db.scalar("select customer_id from orders where id = 30") == 3


def test_moving_a_row_into_a_held_subject_makes_it_held(db: Db) -> None:
    hold(db, 3)
    db.app.execute("update orders set customer_id = 3 where id = 10")
    assert db.scalar("select privacy_mark from orders where id = 10") == 1
    assert db.scalar("select privacy_mark from order_items where id = 100") == 1
    refused(db.app, "delete from order_items where id = 100")


def test_noop_update_of_held_row_is_refused_too(db: Db) -> None:
    hold(db, 3)
    refused(db.app, "update customers set name = name where id = 3")
    refused(db.app, "update customers set privacy_mark = 0 where id = 3")
    assert db.scalar("select privacy_mark from customers where id = 3") == 1


def test_overlapping_holds_are_independent(db: Db) -> None:
    first = hold(db, 3, "CASE-A")
    hold(db, 3, "CASE-B")
    db.steward.execute("select privacy.release_hold(%s, 'case A closed', 'order 1')", (first,))
    err = refused(db.app, "delete from order_items where id = 300")
    assert "CASE-B" in str(err.diag.message_primary)
    assert db.scalar("select privacy.is_held('customer', 3)", user="app") is True


def test_released_hold_lets_data_go(db: Db) -> None:
    hold_id = hold(db, 3)
    db.steward.execute("select privacy.release_hold(%s, 'case settled', 'dismissal order')", (hold_id,))
    assert db.scalar("select privacy.is_held('customer', 3)", user="app") is False
    db.app.execute("delete from customers where id = 3")
    assert db.scalar("select count(*) from order_items where order_id in (30, 31)") == 0


# -- processing restriction -----------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_restricted_rows_are_invisible_to_the_app_and_visible_to_steward_and_owner(db: Db, path: Path) -> None:
    before = count(db, path, 2)
    assert before > 0
    restrict(db, 2)
    assert count(db, path, 2, "app") == 0
    assert count(db, path, 2, "steward_user") == before
    assert count(db, path, 2, "shop_owner") == before
    # other subjects are untouched
    assert count(db, path, 1, "app") == count(db, path, 1)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_app_cannot_change_or_delete_restricted_rows(db: Db, path: Path) -> None:
    restrict(db, 2)
    before = snapshot(db, path, 2)
    assert db.app.execute(f"update {path.table} set {path.change} where {path.where(2)}").rowcount == 0
    assert db.app.execute(f"delete from {path.table} where {path.where(2)}").rowcount == 0
    assert snapshot(db, path, 2) == before


@pytest.mark.parametrize("path", [p for p in PATHS if p.insert], ids=[i for p, i in zip(PATHS, IDS, strict=True) if p.insert])
def test_app_cannot_add_rows_for_a_restricted_subject(db: Db, path: Path) -> None:
    restriction_id = restrict(db, 2)
    before = count(db, path, 2)
    err = refused(db.app, path.insert.format(k=2))  # type: ignore[union-attr]
    message = str(err.diag.message_primary)
    # The application learns that the row's subject is restricted, not whose it is, nor which restriction.
    assert "INSERT on" in message and "processing restriction" in message
    assert "customer/2" not in message and restriction_id not in message
    assert count(db, path, 2) == before
    # The server log has it all, for the DBA.
    assert f"privacy: refused INSERT on {path.table.replace('public.orders', 'public.orders_2026')}" in db.cluster.log_text()
    assert f"subject customer/2 is under processing restriction {restriction_id}" in db.cluster.log_text()


@pytest.mark.parametrize("path", [p for p in PATHS if p.insert], ids=[i for p, i in zip(PATHS, IDS, strict=True) if p.insert])
def test_steward_may_add_rows_for_a_restricted_subject_and_they_stay_hidden(db: Db, path: Path) -> None:
    restrict(db, 2)
    before = count(db, path, 2)
    db.steward.execute(path.insert.format(k=2))  # type: ignore[union-attr]
    assert count(db, path, 2) == before + 1
    assert count(db, path, 2, "app") == 0


@pytest.mark.parametrize("path", PATHS, ids=IDS)
@pytest.mark.parametrize("user", ["steward_user", "shop_owner"])
def test_steward_and_owner_may_correct_restricted_rows(db: Db, path: Path, user: str) -> None:
    restrict(db, 2)
    before = snapshot(db, path, 2)
    cur = db.connect(user).execute(f"update {path.table} set {path.change} where {path.where(2)}")
    assert cur.rowcount == len(before)
    assert snapshot(db, path, 2) != before
    assert count(db, path, 2, "app") == 0  # still restricted after the correction


def test_steward_may_delete_restricted_rows(db: Db) -> None:
    restrict(db, 2)
    assert db.steward.execute("delete from order_items where id = 200").rowcount == 1
    assert db.scalar("select count(*) from order_items where id = 200") == 0


def test_cascade_from_a_visible_parent_cannot_delete_restricted_rows(db: Db) -> None:
    restrict(db, 2)
    err = refused(db.app, "delete from products where id = 1")  # cascades into restricted item 200
    assert "DELETE on public.order_items" in str(err.diag.message_primary)
    assert db.scalar("select count(*) from products where id = 1") == 1
    assert db.scalar("select count(*) from order_items where id = 200") == 1


def test_app_cannot_move_a_visible_row_into_a_restricted_subject(db: Db) -> None:
    restrict(db, 2)
    refused(db.app, "update orders set customer_id = 2 where id = 10")
    refused(db.app, "update activity_log set customer_id = 2 where customer_id = 1")
    assert db.scalar("select customer_id from orders where id = 10") == 1


def test_restriction_refuses_truncate(db: Db) -> None:
    restrict(db, 2)
    refused(db.owner, "truncate activity_log")
    refused(db.owner, "truncate orders_2026 cascade")
    assert db.scalar("select count(*) from activity_log where customer_id = 2") == 2


def test_restricted_rows_invisible_when_naming_a_partition(db: Db) -> None:
    restrict(db, 2)
    assert db.ids("orders_2026", "app") == [10, 30, 40]
    assert db.ids("orders_2025", "app") == [11, 31]
    assert db.app.execute("update orders_2026 set total = 0 where customer_id = 2").rowcount == 0
    assert db.app.execute("delete from orders_2025 where customer_id = 2").rowcount == 0
    assert db.ids("orders_2026", "steward_user") == [10, 20, 30, 40]


def test_release_of_restriction_makes_rows_visible_again(db: Db) -> None:
    restriction_id = restrict(db, 2)
    db.steward.execute("select privacy.release_restriction(%s, 'verified', true)", (restriction_id,))
    for path in PATHS:
        assert count(db, path, 2, "app") == count(db, path, 2)
    assert db.scalar("select privacy.is_restricted('customer', 2)", user="app") is False


def test_hold_and_restriction_together(db: Db) -> None:
    hold(db, 2)
    restrict(db, 2)
    assert db.ids("orders", "app") == [10, 11, 30, 31, 40]
    refused(db.steward, "update orders set total = 0 where id = 20")  # the hold still binds stewards
    refused(db.app, "delete from products where id = 1")
    assert db.scalar("select privacy_mark from order_items where id = 200") == 3


def test_shared_referenced_row_follows_the_subject(db: Db) -> None:
    restrict(db, 4)
    # Dee's address is shared with staff member Sam: it is Dee's personal data, so it is hidden.
    assert 4 not in db.ids("addresses", "app")
    assert db.scalar("select count(*) from staff where address_id = 4", user="app") == 1
    hold(db, 4)
    refused(db.owner, "update addresses set street = 'x' where id = 4")


def test_referenced_row_unmarked_when_subject_moves_away(db: Db) -> None:
    restrict(db, 3)
    assert 3 not in db.ids("addresses", "app")
    db.steward.execute("update customers set address_id = 1 where id = 3")
    assert 3 in db.ids("addresses", "app")  # nobody restricted points at it any more
    assert db.scalar("select privacy_mark from addresses where id = 1") == 2  # Ada's address is now Cy's too


def test_predicates_for_applications(db: Db) -> None:
    hold(db, 3)
    restrict(db, 2)
    app = db.app
    assert app.execute("select privacy.is_held('customer', 3), privacy.is_held('customer', '3'), "
                       "privacy.is_held('customer', 1)").fetchone() == (True, True, False)
    assert app.execute("select privacy.is_restricted('customer', 2), privacy.is_restricted('customer', 3)"
                       ).fetchone() == (True, False)
    # a retention purge that skips held subjects
    cur = app.execute("delete from activity_log where not privacy.is_held('customer', customer_id)")
    assert cur.rowcount == 1  # Ada's login; Ben's rows are invisible, Cy's held
    assert db.scalar("select count(*) from activity_log") == 3


def test_restricted_role_cannot_read_or_write_the_registry(db: Db) -> None:
    hold(db, 3)
    for statement in (
        "select * from privacy.processing_restrictions",
        "select * from privacy.subject_marks",
        "select * from privacy.ledger",
        "insert into privacy.subject_marks values ('customer', '1', 3)",
        "delete from privacy.subject_marks",
        "update privacy.processing_restrictions set released_at = now()",
        "select privacy.place_hold('customer', '1', 'x', 'y')",
        "select privacy.place_restriction('customer', '1', 'accuracy', 'y')",
        "select privacy.release_hold(gen_random_uuid(), 'x', 'y')",
        "select privacy.protect('public.products', 'customer', 'id')",
        "select privacy.refresh_subject('customer', '3')",
        "select privacy.remark_table(1, true)",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.app.execute(statement)
    assert db.scalar("select privacy.is_held('customer', 3)") is True


def test_refusal_outside_a_trigger_reveals_no_case(db: Db) -> None:
    hold(db, 3, "SECRET-CASE")
    with pytest.raises(psycopg.Error) as info:
        db.app.execute("""select privacy.refuse('x', 'DELETE', 1::smallint, '[["customer", "3"]]', 'app')""")
    assert "SECRET-CASE" not in str(info.value)
