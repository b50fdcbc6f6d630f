"""Copies stay erased (issue 16): sync replays erasures onto restored backups and forks,
re-erases what a restore brings back, and leaves alone what a copy's own hold keeps."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import ROLES, Db, hold
from pyctl.cli import main
from pyctl.cluster import Cluster, copy_of, start_cluster

SUBJECT_TABLES = ["customers where id = 1", "orders where customer_id = 1", "order_items where order_id in (10, 11)",
                  "activity_log where customer_id = 1", "addresses where id = 1",
                  '"crm data"."Support; Tickets" where "Customer ""Ref""" = 1']


def cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--dsn", dsn, *args], catch_exceptions=False)


def ada_rows(conn: psycopg.Connection) -> int:
    return sum(conn.execute(f"select count(*) from {t}").fetchone()[0] for t in SUBJECT_TABLES)  # type: ignore[index]


@pytest.fixture
def other_cluster() -> Iterator[Cluster]:
    c = start_cluster()
    try:
        with psycopg.connect(c.dsn(), autocommit=True) as su:
            su.execute(ROLES)
            su.execute("create role privacy_steward nologin; grant privacy_steward to steward_user")
        yield c
    finally:
        c.destroy()


def restore(cluster: Cluster, other: Cluster, db: Db, name: str) -> str:
    dump = subprocess.run([cluster.bin("pg_dump"), "-Fc", "-d", db.dsn("postgres")], capture_output=True, check=True).stdout
    with psycopg.connect(other.dsn(), autocommit=True) as su:
        su.execute(f"create database {name} owner shop_owner")
    proc = subprocess.run([other.bin("pg_restore"), "-d", other.dsn(name)], input=dump, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return other.dsn(name, user="shop_owner")


def test_a_backup_taken_before_the_erasure_is_erased_by_sync_and_stays_erased(
        db: Db, cluster: Cluster, other_cluster: Cluster) -> None:
    dump = subprocess.run([cluster.bin("pg_dump"), "-Fc", "-d", db.dsn("postgres")], capture_output=True, check=True).stdout
    owner = db.dsn("shop_owner")
    erased = cli(db.dsn("steward_user"), "--json", "erase", "1", "--reason", "retention ended")
    assert erased.exit_code == 0, erased.output
    erasure_id = json.loads(erased.stdout)["id"]
    # Sunday's backup, restored after the erasure: Ada is back
    with psycopg.connect(other_cluster.dsn(), autocommit=True) as su:
        su.execute("create database restored owner shop_owner")
    proc = subprocess.run([other_cluster.bin("pg_restore"), "-d", other_cluster.dsn("restored")], input=dump, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    restored = other_cluster.dsn("restored", user="shop_owner")
    with psycopg.connect(restored, autocommit=True) as conn:
        assert ada_rows(conn) == 8
    assert cli(owner, "fleet", "add", "sunday", "--dsn", restored, "--kind", "backup").exit_code == 0
    status = json.loads(cli(owner, "--json", "fleet", "status").stdout)[0]
    assert not status["ok"] and status.get("erased_rows_present") == ["customer/1"], status["detail"]
    assert "holds rows of 1 subject(s) erased here (customer/1)" in status["detail"]
    # the copy itself says it is an unsynced copy, where erased rows may be back
    doctor = cli(restored, "doctor")
    assert doctor.exit_code == 1 and "rows of subjects erased there since may be back" in doctor.stdout

    synced = cli(owner, "--json", "sync", "sunday")
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.stdout)[0]["entries"].get("applied", 0) >= 1
    with psycopg.connect(restored, autocommit=True) as conn:
        assert ada_rows(conn) == 0                                        # nothing of the subject survives
        assert conn.execute("select count(*) from customers").fetchone() == (3,)
        assert conn.execute("select event from privacy.ledger where event = 'synced_erasure'").fetchone() == ("synced_erasure",)
        assert conn.execute("select * from privacy.verify_ledger()").fetchall() == []
        cert = conn.execute("select privacy.erasure_certificate(%s)", (erasure_id,)).fetchone()[0]  # type: ignore[index]
        assert cert["valid"], cert
    assert cli(owner, "fleet", "status").exit_code == 0
    assert cli(restored, "status").exit_code == 0

    # idempotent: a second sync replays nothing and erases nothing
    again = json.loads(cli(owner, "--json", "sync", "sunday").stdout)[0]
    assert again["entries"] == {} and again["erasures_reapplied"] == []

    # the rows come back into the copy (another restore of the old data): status says so, the next sync erases them again
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("insert into addresses values (1, '1 Ada Lane')")
        conn.execute("insert into customers values (1, 'Ada', 1)")
        conn.execute("insert into orders values (10, 1, '2026-01-10', 100)")
    status = cli(restored, "status")
    assert status.exit_code == 1 and "customer/1" in status.stdout
    third = cli(owner, "sync", "sunday")
    assert third.exit_code == 0, third.output
    assert f"erasure {erasure_id} of customer/1: erased again" in third.stdout
    with psycopg.connect(restored, autocommit=True) as conn:
        assert ada_rows(conn) == 0
        assert conn.execute("select count(*) from privacy.ledger where event = 'erasure_reapplied'").fetchone() == (1,)


def test_rows_changed_on_the_copy_are_a_conflict_never_forced(db: Db, cluster: Cluster, other_cluster: Cluster) -> None:
    restored = restore(cluster, other_cluster, db, "restored")
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("update orders set total = 999 where id = 10")      # a change made on the copy only
    db.steward.execute("select privacy.erase('customer', '1', 'retention ended')")
    owner = db.dsn("shop_owner")
    cli(owner, "fleet", "add", "copy", "--dsn", restored, "--kind", "backup")
    synced = cli(owner, "sync", "copy")
    assert synced.exit_code == 0, synced.output
    assert "conflict: erasure" in synced.stdout and "not the rows erased at the source" in synced.stdout
    with psycopg.connect(restored, autocommit=True) as conn:
        assert ada_rows(conn) == 8                                        # left alone
        why = conn.execute("select why from privacy.pending_erasures()").fetchone()[0]  # type: ignore[index]
        assert "not the rows erased there" in why


@pytest.fixture
def fork(db: Db, cluster: Cluster) -> Iterator[Cluster]:
    copy = copy_of(cluster, follower=True)
    try:
        copy.promote()
        with psycopg.connect(copy.dsn(db.name), autocommit=True) as conn:
            deadline = 100
            while conn.execute("select pg_is_in_recovery()").fetchone() == (True,) and deadline:
                deadline -= 1
                conn.execute("select pg_sleep(0.1)")
        yield copy
    finally:
        copy.destroy()


def test_a_fork_with_its_own_hold_keeps_the_rows_and_says_why(db: Db, fork: Cluster) -> None:
    with psycopg.connect(fork.dsn(db.name, user="steward_user"), autocommit=True) as steward:
        fork_hold = steward.execute("select privacy.place_hold('customer', '1', 'FORK-CASE', 'placed on the fork')").fetchone()[0]  # type: ignore[index]
    db.steward.execute("select privacy.erase('customer', '1', 'retention ended')")
    owner = db.dsn("shop_owner")
    cli(owner, "fleet", "add", "staging", "--dsn", fork.dsn(db.name), "--kind", "fork")
    synced = cli(owner, "sync", "staging")
    assert synced.exit_code == 0, synced.output
    assert f"legal hold {fork_hold} (case FORK-CASE) is active here" in synced.stdout
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert ada_rows(su) == 8                                          # kept: the fork's own hold
    pending = cli(fork.dsn(db.name, user="steward_user"), "erase", "pending")
    assert "customer/1" in pending.stdout and "FORK-CASE" in pending.stdout
    # the fork's hold ends: the source's erasure runs there, in the release's transaction
    with psycopg.connect(fork.dsn(db.name, user="steward_user"), autocommit=True) as steward:
        steward.execute("select privacy.release_hold(%s, 'fork case closed', 'memo')", (fork_hold,))
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert ada_rows(su) == 0
        assert su.execute("select * from privacy.verify_ledger()").fetchall() == []


def test_the_queued_erasure_on_the_primary_replays_as_an_erasure(db: Db, fork: Cluster) -> None:
    hold_id = hold(db, 3)
    db.steward.execute("select privacy.erase('customer', '3', 'retention ended', null, true)")
    db.steward.execute("select privacy.release_hold(%s, 'settled', 'order')", (hold_id,))
    owner = db.dsn("shop_owner")
    cli(owner, "fleet", "add", "staging", "--dsn", fork.dsn(db.name), "--kind", "fork")
    synced = cli(owner, "--json", "sync", "staging")
    assert synced.exit_code == 0, synced.output
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert su.execute("select count(*) from customers where id = 3").fetchone() == (0,)
        assert su.execute("select count(*) from orders where customer_id = 3").fetchone() == (0,)
        assert su.execute("select state from privacy.erasures").fetchall() == [("erased",)]
