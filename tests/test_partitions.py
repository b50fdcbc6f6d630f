"""Partitions and inheritance children: named directly, truncated, created,
attached and detached after protection."""

from __future__ import annotations

import psycopg
import pytest

from conftest import Db, hold, refused, restrict
from pyctl import install


def states(db: Db) -> dict[str, str]:
    rows = db.su.execute("select relation, state from privacy.enforcement_status()").fetchall()
    return {r[0].removeprefix("public."): r[1] for r in rows}


def test_every_partition_is_enforced(db: Db) -> None:
    found = states(db)
    assert found["orders_2025"] == found["orders_2026"] == found["orders"] == "installed"


def test_partition_created_later_is_protected_by_the_event_trigger(sudb: Db) -> None:
    restrict(sudb, 2)
    hold(sudb, 3)
    sudb.owner.execute("create table orders_2027 partition of orders for values from ('2027-01-01') to ('2028-01-01')")
    assert states(sudb)["orders_2027"] == "installed"
    sudb.steward.execute("insert into orders values (27, 2, '2027-02-02', 5), (37, 3, '2027-03-03', 5)")
    assert sudb.ids("orders_2027", "app") == [37]
    assert sudb.ids("orders_2027", "steward_user") == [27, 37]
    refused(sudb.app, "insert into orders_2027 values (28, 2, '2027-02-03', 5)")
    refused(sudb.owner, "truncate orders_2027 cascade")
    refused(sudb.app, "delete from orders_2027 where id = 37")
    assert sudb.scalar("select count(*) from orders_2027") == 2


def test_attached_table_gets_its_rows_marked(sudb: Db) -> None:
    restrict(sudb, 2)
    hold(sudb, 3)
    sudb.owner.execute("""
        create table orders_old (like orders including defaults);
        insert into orders_old (id, customer_id, placed_on, total) values (50, 2, '2024-05-05', 1), (51, 3, '2024-06-06', 1),
                                                                        (52, 1, '2024-07-07', 1);
        alter table orders attach partition orders_old for values from ('2000-01-01') to ('2025-01-01');
    """)
    assert states(sudb)["orders_old"] == "installed"
    assert sudb.ids("orders_old", "app") == [51, 52]
    assert sudb.ids("orders", "app").count(50) == 0
    refused(sudb.app, "delete from orders_old where id = 51")
    refused(sudb.owner, "truncate orders_old cascade")


def test_detaching_a_partition_with_held_rows_is_refused(sudb: Db) -> None:
    sudb.owner.execute("""
        create table visits (customer_id integer, day date) partition by range (day);
        create table visits_2025 partition of visits for values from ('2025-01-01') to ('2026-01-01');
        create table visits_2026 partition of visits for values from ('2026-01-01') to ('2027-01-01');
        insert into visits values (3, '2025-03-03'), (1, '2026-01-01');
    """)
    sudb.su.execute("select privacy.protect('public.visits', 'customer', 'customer_id')")
    hold(sudb, 3)
    err = refused(sudb.owner, "alter table visits detach partition visits_2025")
    assert "DETACH" in str(err.diag.message_primary)
    assert sudb.scalar("select count(*) from pg_inherits where inhrelid = 'visits_2025'::regclass") == 1
    assert sudb.scalar("select count(*) from visits where customer_id = 3") == 1
    # without held rows it may go
    sudb.owner.execute("alter table visits detach partition visits_2026")
    assert sudb.scalar("select count(*) from pg_inherits where inhrelid = 'visits_2026'::regclass") == 0


def test_without_superuser_a_later_partition_is_reported_and_repaired_by_install(db: Db) -> None:
    restrict(db, 2)
    db.owner.execute("create table orders_2027 partition of orders for values from ('2027-01-01') to ('2028-01-01')")
    db.steward.execute("insert into orders values (27, 2, '2027-02-02', 5)")
    # Row triggers were cloned by PostgreSQL (the new row is marked), but the policy
    # on the partition itself is missing until install repairs it.
    assert db.scalar("select privacy_mark from orders where id = 27") == 2
    assert states(db)["orders_2027"] == "missing"
    assert db.ids("orders", "app").count(27) == 0  # through the parent: hidden
    install.install(db.dsn("shop_owner"))
    assert states(db)["orders_2027"] == "installed"
    assert db.ids("orders_2027", "app") == []


def test_inheritance_children_are_protected_like_partitions(db: Db) -> None:
    db.owner.execute("""
        create table notes (customer_id integer, body text);
        create table notes_archive (archived_on date) inherits (notes);
        insert into notes values (2, 'current');
        insert into notes_archive values (2, 'old', '2020-01-01'), (1, 'old', '2020-01-01');
    """)
    db.owner.execute("select privacy.protect('public.notes', 'customer', 'customer_id')")
    assert states(db)["notes_archive"] == "installed"
    restrict(db, 2)
    hold(db, 1)
    assert db.scalar("select count(*) from notes_archive", user="app") == 1
    assert db.scalar("select count(*) from notes", user="app") == 1
    refused(db.app, "insert into notes_archive values (2, 'sneaky', '2020-02-02')")
    refused(db.app, "delete from notes_archive where customer_id = 1")
    refused(db.owner, "truncate notes_archive")
    assert db.scalar("select count(*) from notes_archive") == 2


def test_protecting_a_partition_directly_is_refused(db: Db) -> None:
    db.owner.execute("create table p (customer_id int, x int) partition by list (x)")
    db.owner.execute("create table p1 partition of p for values in (1)")
    with pytest.raises(psycopg.Error, match="is a partition: protect its partitioned table"):
        db.owner.execute("select privacy.protect('public.p1', 'customer', 'customer_id')")
    assert db.scalar("select count(*) from privacy.protected_tables where table_name = 'p1'") == 0
