"""DDL against held and restricted data, in each install mode: every path is refused, or
detected by `hold verify` and named by `doctor`. Nothing is lost silently.

'db' is the managed-platform install (a non-superuser owner: no event triggers);
'sudb' the superuser install (event triggers add guards)."""

from __future__ import annotations

import psycopg
import pytest

from conftest import Db, hold, refused, restrict

MODES = ["db", "sudb"]


@pytest.fixture(params=MODES)
def d(request: pytest.FixtureRequest) -> Db:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def is_superuser_install(d: Db) -> bool:
    return bool(d.scalar("select count(*) = 2 from pg_event_trigger where evtname like 'privacy_%'"))


def refused_ddl(d: Db, statement: str) -> psycopg.Error:
    """DDL refused in either mode: by the toolkit (superuser install) or by PostgreSQL's own
    dependency check on the hold's guard view, whose name names the hold."""
    with pytest.raises(psycopg.Error) as info:
        d.owner.execute(statement)
    err = info.value
    if is_superuser_install(d):
        assert err.sqlstate == "PV001", f"{statement}: {err.sqlstate} {err}"
    else:
        assert err.sqlstate in ("2BP01", "0A000"), f"{statement}: {err.sqlstate} {err}"  # dependent objects / used by a view
        assert "legal hold 2026-CV-118" in f"{err} {err.diag.message_detail}", f"{statement}: {err} {err.diag.message_detail}"
    return err


def visits(d: Db) -> None:
    """A partitioned table nobody references, protected by customer (the shop's orders are
    referenced by order_items, whose foreign key would refuse these statements first)."""
    d.owner.execute("""
        create table visits (customer_id integer, day date, page text) partition by range (day);
        create table visits_2025 partition of visits for values from ('2025-01-01') to ('2026-01-01');
        create table visits_2026 partition of visits for values from ('2026-01-01') to ('2027-01-01');
        insert into visits values (3, '2025-03-03', 'a'), (2, '2025-04-04', 'b'), (1, '2026-01-01', 'c');
        grant select, insert, update, delete on visits, visits_2025, visits_2026 to app;
    """)
    installer = "postgres" if is_superuser_install(d) else "shop_owner"  # the toolkit's owner
    d.connect(installer).execute("select privacy.protect('public.visits', 'customer', 'customer_id')")


def verify(d: Db) -> set[str]:
    return {r[0] for r in d.su.execute(
        "select x.status from privacy.processing_restrictions h cross join lateral privacy.verify_hold(h.id) x "
        "where h.released_at is null and h.kind = 'legal_hold'")}


def test_drop_of_a_held_partition_or_table_is_refused(d: Db) -> None:
    visits(d)
    hold(d, 3)
    for statement in ("drop table visits_2025", "drop table visits", "drop table activity_log",
                      'drop table "crm data"."Support; Tickets"'):
        refused_ddl(d, statement)
    assert d.scalar("select count(*) from visits where customer_id = 3") == 1
    assert d.scalar("select count(*) from activity_log") == 4
    if is_superuser_install(d):  # the event trigger refuses any partition of a held type
        refused(d.owner, "drop table visits_2026")
    else:  # a guard view is made only where held rows are: a partition without them may go
        d.owner.execute("drop table visits_2026")


def test_drop_column_and_alter_type_of_held_data_are_refused(d: Db) -> None:
    hold(d, 3)
    refused_ddl(d, "alter table customers drop column name")
    refused_ddl(d, "alter table orders alter column total type numeric using total * 2")
    assert d.scalar("select total from orders where id = 30") == 300
    assert d.scalar("select name from customers where id = 3") == "Cy"
    assert verify(d) == {"unchanged"}


def test_guards_follow_the_holds(db: Db) -> None:
    """The views exist while a relation holds held rows, and go with the last release."""
    first, second = hold(db, 3), hold(db, 3, case="2027-CV-9")
    guards = {r[0] for r in db.su.execute("select view_name from privacy.hold_guards()")}
    assert any(g.startswith("legal hold 2026-CV-118 (") for g in guards)
    assert db.scalar("select count(*) from privacy.hold_guards() where guarded = 'orders_2026'::regclass") == 1
    assert db.scalar("select count(*) from privacy.hold_guards() where guarded = 'orders_2025'::regclass") == 1
    # orders_2025 holds no row of customer 4: a hold on 4 alone guards orders_2026 only
    db.steward.execute("select privacy.release_hold(%s, 'closed', 'order 1')", (first,))
    assert {r[0] for r in db.su.execute("select view_name from privacy.hold_guards()")} \
        == {f"legal hold 2027-CV-9 ({oid})" for (oid,) in db.su.execute("select guarded from privacy.hold_guards()")}
    db.steward.execute("select privacy.release_hold(%s, 'closed', 'order 2')", (second,))
    assert db.scalar("select count(*) from privacy.hold_guards()") == 0
    db.owner.execute("alter table customers drop column name")  # no hold: the DBA's migration runs
    # The application cannot read a guard view.
    hold(db, 4)
    view = db.scalar("select format('privacy.%I', view_name) from privacy.hold_guards() limit 1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.app.execute(f"select * from {view}")


def test_detach_keeps_holds_and_restrictions_on_the_partition(d: Db) -> None:
    visits(d)
    hold(d, 3)
    restrict(d, 2)
    if is_superuser_install(d):
        refused(d.owner, "alter table visits detach partition visits_2025")  # with held rows: refused outright
        return
    d.owner.execute("alter table visits detach partition visits_2025")
    refused(d.owner, "delete from visits_2025 where customer_id = 3")
    refused(d.app, "update visits_2025 set page = 'x' where customer_id = 3")
    assert d.scalar("select count(*) from visits_2025 where customer_id = 3") == 1
    assert 2 not in d.ids("visits_2025", "app", "customer_id")
    assert 2 in d.ids("visits_2025", "steward_user", "customer_id")
    # hold verify no longer finds the rows in the protected table, and doctor names where they are
    assert "violation" in verify(d)
    d.steward.execute("select privacy.heal()")  # regenerating the table's enforcement keeps the detached table's
    refused(d.owner, "delete from visits_2025 where customer_id = 3")
    findings = d.su.execute("select severity, category, object, finding, fix from privacy.doctor() where severity = 'error'").fetchall()
    assert any("visits_2025" in f"{r[2]} {r[3]}" and "attach" in r[4].lower() for r in findings), findings


def test_detach_concurrently_keeps_holds_on_the_partition(db: Db) -> None:
    visits(db)
    hold(db, 3)
    db.owner.execute("alter table visits detach partition visits_2025 concurrently")
    refused(db.owner, "delete from visits_2025 where customer_id = 3")
    assert db.scalar("select count(*) from visits_2025 where customer_id = 3") == 1


def test_drop_cascade_without_a_superuser_is_detected_and_named(db: Db) -> None:
    hold(db, 3)
    db.owner.execute("drop table activity_log cascade")  # CASCADE drops the guard view with it
    assert "violation" in verify(db)
    findings = db.su.execute("select severity, category, object, finding from privacy.doctor() where severity = 'error'").fetchall()
    assert any("activity_log" in f"{r[2]} {r[3]}" for r in findings), findings


def test_drop_cascade_with_a_superuser_is_refused(sudb: Db) -> None:
    hold(sudb, 3)
    refused(sudb.owner, "drop table activity_log cascade")
    assert sudb.scalar("select count(*) from activity_log") == 4


def test_attach_of_a_table_holding_held_and_restricted_rows(d: Db) -> None:
    hold(d, 3)
    restrict(d, 2)
    d.owner.execute("create table orders_2024 (like orders including defaults)")
    d.owner.execute("insert into orders_2024 (id, customer_id, placed_on, total) values (32, 3, '2024-05-05', 1), (22, 2, '2024-05-05', 2)")
    d.owner.execute("alter table orders attach partition orders_2024 for values from ('2024-01-01') to ('2025-01-01')")
    d.steward.execute("select privacy.heal()")  # what every pyctl command as owner or steward does first
    refused(d.owner, "delete from orders_2024 where customer_id = 3")
    assert d.ids("orders_2024", "app", "customer_id") == [3]
    assert d.ids("orders", "app").count(22) == 0
    assert d.scalar("select count(*) from orders_2024") == 2
    if not is_superuser_install(d):
        refused_ddl(d, "drop table orders_2024")


def test_truncate_cascade_is_refused(d: Db) -> None:
    hold(d, 3)
    refused(d.owner, "truncate customers cascade")
    visits(d)
    refused(d.owner, "truncate visits_2025")
    refused(d.owner, "truncate visits")
    assert d.scalar("select count(*) from customers") == 4
