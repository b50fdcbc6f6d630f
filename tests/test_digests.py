"""The preservation proof: held data is byte-for-byte what it was when the hold began."""

from __future__ import annotations

import subprocess
import time

import psycopg
import pytest
from click.testing import CliRunner

from conftest import Db, hold
from pyctl.cli import main
from pyctl.cluster import Cluster, copy_of


def verify(db: Db, hold_id: str, user: str = "steward_user") -> dict[str, tuple[object, ...]]:
    rows = db._cached(user).execute("select table_name, status, rows_at_hold, rows_now, added, changed, missing "
                                    "from privacy.verify_hold(%s)", (hold_id,)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def digests(conn: psycopg.Connection, hold_id: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute("select table_schema, table_name, row_count, digest from privacy.hold_digests "
                                           "where hold_id = %s order by 1, 2", (hold_id,)).fetchall()]


def test_placement_records_digests_in_the_ledger(db: Db) -> None:
    hold_id = hold(db, 3)
    recorded = digests(db.su, hold_id)
    assert [(r[1], r[2]) for r in recorded] == [("Support; Tickets", 1), ("activity_log", 1), ("addresses", 1),
                                                ("customers", 1), ("order_items", 2), ("orders", 2)]
    payload = db.scalar("select payload from privacy.ledger where event = 'hold_digested' and restriction_id = %s", (hold_id,))
    assert {t["table"]: t["sha256"] for t in payload["tables"]}["public.orders"] == dict((r[1], r[3]) for r in recorded)["orders"]
    assert all(v[0] == "unchanged" for v in verify(db, hold_id).values())


def test_a_changed_column_of_one_row_is_detected_and_named(db: Db) -> None:
    hold_id = hold(db, 3)
    db.su.execute("alter table orders disable trigger \"Privacy_check_update\"")
    db.su.execute("update orders set total = 999 where id = 31")
    db.su.execute("alter table orders enable trigger \"Privacy_check_update\"")
    result = verify(db, hold_id)
    assert result["public.orders"] == ("violation", 2, 2, 0, [{"id": 31, "placed_on": "2025-07-01"}], [])
    assert result["public.customers"][0] == "unchanged"
    cli = CliRunner().invoke(main, ["--dsn", db.dsn("steward_user"), "hold", "verify", hold_id])
    assert cli.exit_code == 1 and "public.orders" in cli.stderr
    assert '{"id": 31, "placed_on": "2025-07-01"}' in cli.stdout


def test_a_deleted_row_is_detected(db: Db) -> None:
    hold_id = hold(db, 3)
    db.su.execute("set session_replication_role = replica; delete from order_items where id = 310; "
                  "delete from activity_log where customer_id = 3; set session_replication_role = origin")
    result = verify(db, hold_id)
    assert result["public.order_items"] == ("violation", 2, 1, 0, [], [{"id": 310}])
    assert result["public.activity_log"][0] == "violation"  # no primary key: the whole row names it
    assert result["public.activity_log"][5][0]["what"] == "login"


def test_rows_added_since_are_additions_not_violations(db: Db) -> None:
    hold_id = hold(db, 3)
    db.app.execute("insert into orders values (39, 3, '2026-09-09', 1)")
    db.app.execute("insert into activity_log (customer_id, what) values (3, 'login')")  # a duplicate of a held row
    result = verify(db, hold_id)
    assert result["public.orders"] == ("rows added", 2, 3, 1, [], [])
    assert result["public.activity_log"] == ("rows added", 1, 2, 1, [], [])
    assert CliRunner().invoke(main, ["--dsn", db.dsn("steward_user"), "hold", "verify", "--all"]).exit_code == 0


def unguarded(db: Db, statement: str) -> None:
    """Runs DDL past the holds' guard views (which refuse any type change of held data, see
    test_ddl_matrix.py): dropped first, as a superuser could, to see what verify makes of it."""
    for (view,) in db.su.execute("select format('privacy.%I', view_name) from privacy.hold_guards()").fetchall():
        db.su.execute(f"drop view {view}")
    db.su.execute(statement)


def test_a_type_change_that_keeps_values_is_not_a_change(db: Db) -> None:
    hold_id = hold(db, 3)
    unguarded(db, "alter table customers alter column name type varchar(50)")
    unguarded(db, "alter table customers alter column name type text")
    assert verify(db, hold_id)["public.customers"][0] == "unchanged"
    unguarded(db, "alter table orders alter column total type bigint")  # same values
    assert verify(db, hold_id)["public.orders"][0] == "unchanged"
    unguarded(db, "alter table orders alter column total type numeric using total / 7.0")
    assert verify(db, hold_id)["public.orders"][0] == "violation"


def test_unknown_hold_is_a_clear_error(db: Db) -> None:
    with pytest.raises(psycopg.Error, match="unknown legal hold"):
        db.steward.execute("select * from privacy.verify_hold('00000000-0000-0000-0000-000000000000')")


def test_digests_are_the_same_on_a_follower(db: Db, cluster: Cluster) -> None:
    hold_id = hold(db, 3)
    copy = copy_of(cluster, follower=True)
    try:
        with psycopg.connect(copy.dsn(db.name, user="steward_user"), autocommit=True) as conn:
            assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
            assert digests(conn, hold_id) == digests(db.su, hold_id)
            rows = conn.execute("select table_name, status from privacy.verify_hold(%s)", (hold_id,)).fetchall()
            assert {r[1] for r in rows} == {"unchanged"}
            # and a change on the primary shows up there after replay
            db.su.execute("alter table customers disable trigger \"Privacy_check_update\"; "
                          "update customers set name = 'Cyrus' where id = 3; "
                          "alter table customers enable trigger \"Privacy_check_update\"")
            deadline = time.monotonic() + 20
            while conn.execute("select name from customers where id = 3").fetchone() != ("Cyrus",):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            status = dict(conn.execute("select table_name, status from privacy.verify_hold(%s)", (hold_id,)).fetchall())
            assert status["public.customers"] == "violation"
    finally:
        copy.destroy()


def test_digests_are_the_same_after_pg_dump_and_pg_restore(db: Db, cluster: Cluster, tmp_path: object) -> None:
    hold_id = hold(db, 3)
    db.close()
    restored = db.name + "_restored"
    dump = subprocess.run([cluster.bin("pg_dump"), "-Fc", "-d", db.dsn("postgres")], capture_output=True, check=True).stdout
    db.su.execute(f"create database {restored} owner shop_owner")
    proc = subprocess.run([cluster.bin("pg_restore"), "--disable-triggers", "-d", cluster.dsn(restored)],
                          input=dump, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        with psycopg.connect(cluster.dsn(restored), autocommit=True) as conn:
            assert digests(conn, hold_id) == digests(db.su, hold_id)
            rows = conn.execute("select status from privacy.verify_hold(%s)", (hold_id,)).fetchall()
            assert {r[0] for r in rows} == {"unchanged"}
    finally:
        db.su.execute(f"drop database {restored} with (force)")
