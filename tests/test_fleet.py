"""Followers, forks, rollbacks and restored backups obey the same holds and restrictions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import ROLES, Db, hold, refused, restrict
from pyctl.cli import main
from pyctl.cluster import Cluster, copy_of, start_cluster

PYCTL = str(Path(sys.executable).with_name("pyctl"))


def cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--dsn", dsn, *args], catch_exceptions=False)


def wait_until(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def follower(cluster: Cluster, db: Db) -> Iterator[Cluster]:
    copy = copy_of(cluster, follower=True)
    try:
        yield copy
    finally:
        copy.destroy()


@pytest.fixture
def fork(cluster: Cluster, db: Db) -> Iterator[Cluster]:
    """A copy of the primary taken now and promoted: what a fork or a point-in-time rollback is."""
    copy = copy_of(cluster, follower=True)
    try:
        copy.promote()
        yield copy
    finally:
        copy.destroy()


# -- followers ----------------------------------------------------------------------------------


def test_a_follower_refuses_writes_and_names_its_primary(db: Db, follower: Cluster) -> None:
    dsn = follower.dsn(db.name, user="steward_user")
    for args in (["hold", "place", "3", "--case", "C", "--reason", "r"], ["install"],
                 ["protect", "products", "--column", "id"], ["restrict", "place", "2", "--basis", "accuracy", "--reason", "r"]):
        result = cli(dsn, *args)
        assert result.exit_code == 1, args
        assert "read-only follower" in result.stderr and f"127.0.0.1:{db.cluster.port}" in result.stderr


def test_a_follower_obeys_holds_and_restrictions_after_replay(db: Db, follower: Cluster) -> None:
    assert cli(db.dsn("shop_owner"), "fleet", "add", "replica", "--dsn", follower.dsn(db.name), "--kind", "follower").exit_code == 0
    result = cli(db.dsn("steward_user"), "restrict", "place", "2", "--basis", "accuracy", "--reason", "r", "--wait-followers")
    assert result.exit_code == 0, result.output
    assert "replayed on 1 follower(s): replica" in result.stderr
    with psycopg.connect(follower.dsn(db.name, user="app"), autocommit=True) as app:
        assert [r[0] for r in app.execute("select id from customers order by id").fetchall()] == [1, 3, 4]
        assert app.execute("select privacy.is_restricted('customer', 2)").fetchone() == (True,)
    status = cli(db.dsn("shop_owner"), "--json", "fleet", "status")
    assert status.exit_code == 0, status.output
    [line] = json.loads(status.stdout)
    assert line["reachable"] and line["role"] == "follower" and line["latest_event_visible"] is True
    assert line["lag_bytes"] is not None


def test_wait_followers_times_out_clearly_while_replay_is_paused(db: Db, follower: Cluster) -> None:
    cli(db.dsn("shop_owner"), "fleet", "add", "replica", "--dsn", follower.dsn(db.name), "--kind", "follower")
    with psycopg.connect(follower.dsn("postgres"), autocommit=True) as su:
        su.execute("select pg_wal_replay_pause()")
        started = time.monotonic()
        result = cli(db.dsn("steward_user"), "hold", "place", "3", "--case", "C", "--reason", "r", "--wait-followers", "--timeout", "2")
        assert result.exit_code == 1
        assert 2 <= time.monotonic() - started < 15
        assert "follower replica has not replayed past" in result.stderr and "paused" in result.stderr
        assert db.scalar("select privacy.is_held('customer', 3)") is True  # in force on the primary all the same
        status = cli(db.dsn("shop_owner"), "fleet", "status")
        assert status.exit_code == 1
        su.execute("select pg_wal_replay_resume()")
    wait_until(lambda: cli(db.dsn("shop_owner"), "fleet", "status").exit_code == 0)


# -- forks and rollbacks ------------------------------------------------------------------------------


def fork_state(conn: psycopg.Connection) -> dict[str, object]:
    return {
        "active": sorted((r[0], r[1]) for r in conn.execute(
            "select kind, subject_key from privacy.processing_restrictions where released_at is null").fetchall()),
        "marks": conn.execute("select string_agg(id || ':' || privacy_mark, ',' order by id) from customers").fetchone()[0],  # type: ignore[index]
        "addresses": conn.execute("select string_agg(id || ':' || street, ',' order by id) from addresses").fetchone()[0],  # type: ignore[index]
    }


def _diverge(db: Db, fork: Cluster) -> tuple[str, str]:
    """Events on the primary after the fork was taken, and a local change on the fork."""
    restriction_before = db.scalar("select id::text from privacy.processing_restrictions where kind = 'restriction'")
    hold_id = hold(db, 3)                                            # a hold placed after the copy
    db.steward.execute("select privacy.release_restriction(%s, 'lifted', true)", (restriction_before,))  # a release
    restrict(db, 4)
    db.steward.execute("update addresses set street = '44 Corrected Court' where id = 4")  # a correction
    db.steward.execute("update addresses set street = '4 Conflict Court' where id = 4")     # a second one
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        su.execute("alter table addresses disable trigger \"Privacy_check_update\"")
        su.execute("update addresses set street = 'changed on the fork' where id = 4")  # conflicts with both corrections
        su.execute("alter table addresses enable trigger \"Privacy_check_update\"")
    with psycopg.connect(fork.dsn(db.name, user="steward_user"), autocommit=True) as steward:
        steward.execute("select privacy.place_hold('customer', '1', 'FORK-CASE', 'placed on the fork')")  # its own event
    return hold_id, str(restriction_before)


@pytest.fixture
def forked(db: Db, cluster: Cluster) -> Iterator[tuple[Db, Cluster]]:
    restrict(db, 2)  # before the copy: the fork has it
    copy = copy_of(cluster, follower=True)
    try:
        copy.promote()
        with psycopg.connect(copy.dsn(db.name), autocommit=True) as conn:
            wait_until(lambda: conn.execute("select not pg_is_in_recovery()").fetchone() == (True,))
        yield db, copy
    finally:
        copy.destroy()


def test_sync_brings_a_fork_to_the_primarys_state(forked: tuple[Db, Cluster]) -> None:
    db, fork = forked
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        wait_until(lambda: su.execute("select is_copy from privacy.copy_status()").fetchone() == (True,))
    hold_id, released = _diverge(db, fork)
    owner = db.dsn("shop_owner")
    assert cli(owner, "fleet", "add", "staging", "--dsn", fork.dsn(db.name), "--kind", "fork").exit_code == 0
    status = json.loads(cli(owner, "--json", "fleet", "status").stdout)[0]
    assert status["role"] == "writable" and status["behind"] > 0 and status["ahead"] == 1 and not status["ok"]

    result = cli(owner, "sync", "staging")
    assert result.exit_code == 0, result.output
    assert "conflict: UPDATE public.addresses" in result.stdout
    with psycopg.connect(fork.dsn(db.name, user="app"), autocommit=True) as app:
        refused(app, "delete from order_items where id = 300")                    # the hold placed after the copy holds
        assert [r[0] for r in app.execute("select id from customers order by id").fetchall()] == [1, 2, 3]  # 2 released, 4 restricted
        refused(app, "delete from customers where id = 1")                         # the fork's own hold is kept
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert su.execute("select street from addresses where id = 4").fetchone() == ("changed on the fork",)  # conflict: left alone
        assert su.execute("select count(*) from privacy.sync_replayed where outcome = 'conflict'").fetchone() == (2,)
        assert su.execute("select * from privacy.verify_ledger()").fetchall() == []
        assert su.execute("select is_copy from privacy.copy_status()").fetchone() == (False,)
        assert su.execute("select status from privacy.verify_hold(%s) where table_name = 'public.orders'", (hold_id,)).fetchone() == ("unchanged",)
        assert su.execute("select released_at is not null from privacy.processing_restrictions where id = %s", (released,)).fetchone() == (True,)
        assert su.execute("select count(*) from privacy.ledger where event = 'sync_completed'").fetchone() == (1,)
        before = fork_state(su)
    assert json.loads(cli(owner, "--json", "fleet", "status").stdout)[0]["behind"] == 0
    # idempotent: a second sync changes nothing
    again = json.loads(cli(owner, "--json", "sync", "staging").stdout)[0]
    assert again["entries"] == {}  # every entry of the source was replayed before
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert fork_state(su) == before


def test_a_correction_is_applied_where_the_row_still_holds_its_old_value(forked: tuple[Db, Cluster]) -> None:
    db, fork = forked
    db.steward.execute("update addresses set street = '22 Ben Road' where id = 2")  # Ben is restricted: a correction
    cli(db.dsn("shop_owner"), "fleet", "add", "staging", "--dsn", fork.dsn(db.name), "--kind", "fork")
    assert cli(db.dsn("shop_owner"), "sync", "--all").exit_code == 0
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert su.execute("select street from addresses where id = 2").fetchone() == ("22 Ben Road",)
        assert su.execute("select event from privacy.ledger where event like 'synced_correction'").fetchone() == ("synced_correction",)


def test_a_sync_killed_half_way_completes_when_run_again(forked: tuple[Db, Cluster]) -> None:
    """Each source entry that changes something commits on its own: a sync killed while it waits
    for a row keeps what it replayed, and a rerun starts after it."""
    db, fork = forked
    _diverge(db, fork)
    cli(db.dsn("shop_owner"), "fleet", "add", "staging", "--dsn", fork.dsn(db.name), "--kind", "fork")
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as blocker, blocker.transaction():
        blocker.execute("select 1 from addresses where id = 4 for update")  # marking and correcting it wait
        proc = subprocess.Popen([PYCTL, "--dsn", db.dsn("shop_owner"), "sync", "staging"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        with psycopg.connect(fork.dsn(db.name), autocommit=True) as monitor:
            wait_until(lambda: monitor.execute("select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                                               "and query like '%sync_replay%'").fetchone() == (1,))
        proc.kill()
        proc.communicate()
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        wait_until(lambda: su.execute("select count(*) from pg_stat_activity where query like '%sync_replay%' "
                                      "and pid <> pg_backend_pid()").fetchone() == (0,))
        assert su.execute("select count(*) from privacy.sync_sources").fetchone() == (0,)  # not finished
        replayed = su.execute("select count(*) from privacy.sync_replayed where outcome = 'applied'").fetchone()[0]  # type: ignore[index]
        assert replayed == 3  # the hold and its digests, the release; the restriction (it marks address 4) waited
        assert su.execute("select * from privacy.verify_ledger()").fetchall() == []
    resumed = subprocess.run([PYCTL, "--dsn", db.dsn("shop_owner"), "sync", "staging"], capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    with psycopg.connect(fork.dsn(db.name), autocommit=True) as su:
        assert su.execute("select count(*) from privacy.sync_sources").fetchone() == (1,)
        assert su.execute("select count(*) from privacy.processing_restrictions where released_at is null").fetchone() == (3,)
        assert su.execute("select outcome, count(*) from privacy.sync_replayed where outcome <> 'skipped' group by 1 order by 1").fetchall() \
            == [("applied", 4), ("conflict", 2)]  # nothing replayed twice; the corrections met the fork's own change
        assert su.execute("select * from privacy.verify_ledger()").fetchall() == []


# -- restored backups, offline ---------------------------------------------------------------------


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


def test_a_restored_dump_is_brought_up_to_date_from_a_ledger_file(db: Db, cluster: Cluster, other_cluster: Cluster, tmp_path: Path) -> None:
    restrict(db, 2)
    dump = subprocess.run([cluster.bin("pg_dump"), "-Fc", "-d", db.dsn("postgres")], capture_output=True, check=True).stdout
    # Monday: a hold on the primary, after Sunday's backup; then the primary is gone.
    hold_id = hold(db, 3)
    ledger_file = tmp_path / "ledger.json"
    assert cli(db.dsn("steward_user"), "ledger", "export", str(ledger_file)).exit_code == 0
    # Tuesday: Sunday's backup restored into another cluster (a plain pg_restore: triggers on).
    with psycopg.connect(other_cluster.dsn(), autocommit=True) as su:
        su.execute("create database restored owner shop_owner")
    proc = subprocess.run([other_cluster.bin("pg_restore"), "-d", other_cluster.dsn("restored")], input=dump, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    restored = other_cluster.dsn("restored")
    with psycopg.connect(restored, autocommit=True) as su:
        assert su.execute("select is_copy from privacy.copy_status()").fetchone() == (True,)
    result = cli(restored, "ledger", "import", str(ledger_file))
    assert result.exit_code == 0, result.output
    with psycopg.connect(other_cluster.dsn("restored", user="app"), autocommit=True) as app:
        refused(app, "delete from order_items where id = 300")      # Monday's hold holds on Tuesday's restore
        assert [r[0] for r in app.execute("select id from customers order by id").fetchall()] == [1, 3, 4]  # restricted rows hidden
        assert app.execute("select count(*) from order_items where id in (200, 210)").fetchone() == (0,)
    with psycopg.connect(restored, autocommit=True) as su:
        assert su.execute("select * from privacy.verify_ledger()").fetchall() == []
        assert {r[0] for r in su.execute("select status from privacy.verify_hold(%s)", (hold_id,)).fetchall()} == {"unchanged"}
        assert su.execute("select is_copy from privacy.copy_status()").fetchone() == (False,)


def test_an_altered_ledger_file_is_refused(db: Db, tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    cli(db.dsn("steward_user"), "ledger", "export", str(path))
    document = json.loads(path.read_text())
    document["state"]["ledger"][0]["event"] = "forged"
    path.write_text(json.dumps(document))
    result = cli(db.dsn("steward_user"), "ledger", "import", str(path))
    assert result.exit_code == 1 and "was altered after it was exported" in result.stderr


# -- bad input ----------------------------------------------------------------------------------------


def test_unknown_copy_unreachable_dsn_and_bad_kind(db: Db) -> None:
    owner = db.dsn("shop_owner")
    assert cli(owner, "sync", "nope").exit_code == 1
    assert "unknown copy nope" in cli(owner, "sync", "nope").stderr
    assert cli(owner, "fleet", "add", "gone", "--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=2", "--kind", "fork").exit_code == 0
    status = cli(owner, "--json", "fleet", "status")
    assert status.exit_code == 1 and json.loads(status.stdout)[0]["reachable"] is False
    result = cli(owner, "sync", "gone")
    assert result.exit_code == 1 and "cannot connect" in result.stderr
    assert cli(owner, "fleet", "add", "x", "--dsn", "not a dsn", "--kind", "fork").exit_code == 1
    assert cli(owner, "fleet", "add", "x", "--dsn", "host=a", "--kind", "mirror").exit_code == 2
    assert cli(owner, "fleet", "add", "env", "--dsn", "NO_SUCH_VARIABLE_SET", "--kind", "fork").exit_code == 0
    assert "NO_SUCH_VARIABLE_SET is not set" in cli(owner, "sync", "env").stderr
    listed = json.loads(cli(owner, "--json", "fleet", "list").stdout)
    assert {r["name"]: r["dsn"] for r in listed}["env"] == "$NO_SUCH_VARIABLE_SET"
    assert cli(owner, "fleet", "remove", "gone").exit_code == 0
    assert cli(owner, "fleet", "remove", "gone").exit_code == 1


def test_a_target_without_the_toolkit_or_from_another_database_is_left_unchanged(db: Db, empty_db: Db) -> None:
    owner = db.dsn("shop_owner")
    cli(owner, "fleet", "add", "bare", "--dsn", empty_db.dsn("postgres"), "--kind", "backup")
    result = cli(owner, "sync", "bare")
    assert result.exit_code == 1 and "has no privacy toolkit" in result.stderr
    assert empty_db.scalar("select to_regnamespace('privacy')") is None
    # the same schema, installed separately: a different database altogether
    from conftest import PROTECT_SQL, SHOP_SQL
    from pyctl import install

    empty_db.owner.execute(SHOP_SQL)
    install.install(empty_db.dsn("postgres"))
    empty_db.su.execute(PROTECT_SQL)
    before = empty_db.scalar("select count(*) from privacy.ledger")
    result = cli(owner, "sync", "bare")
    assert result.exit_code == 1 and "shares no ledger history" in result.stderr
    assert empty_db.scalar("select count(*) from privacy.ledger") == before


# -- a copy replays only what the source's ledger vouches for ------------------------------------------


def _rechain(db: Db, document: dict[str, object]) -> None:
    """Recompute every hash of the ledger in a state file, and the file's sha256: what someone who
    rewrote the file would do to hide it."""
    import hashlib

    state = document["state"]
    assert isinstance(state, dict)
    prev = None
    for entry in state["ledger"]:
        entry["prev_hash"] = prev
        entry["hash"] = db.scalar(
            "select encode(sha256(coalesce(decode(%s, 'hex'), ''::bytea) "
            "|| convert_to(privacy.ledger_content(privacy.ledger_entry_of(%s::jsonb)), 'UTF8')), 'hex')",
            (prev, json.dumps(entry)))
        prev = entry["hash"]
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    document["sha256"] = hashlib.sha256(body.encode()).hexdigest()


@pytest.fixture
def restored(db: Db, cluster: Cluster, other_cluster: Cluster) -> Iterator[str]:
    """A pg_dump of the shop (Ben restricted) restored into another cluster: its DSN, as the owner."""
    restrict(db, 2)
    dump = subprocess.run([cluster.bin("pg_dump"), "-Fc", "-d", db.dsn("postgres")], capture_output=True, check=True).stdout
    with psycopg.connect(other_cluster.dsn(), autocommit=True) as su:
        su.execute("create database restored owner shop_owner")
    proc = subprocess.run([other_cluster.bin("pg_restore"), "-d", other_cluster.dsn("restored")], input=dump, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    yield other_cluster.dsn("restored", user="shop_owner")


def test_a_forged_entry_in_a_ledger_file_is_refused_and_reported(db: Db, restored: str, tmp_path: Path) -> None:
    """Someone rewrote the file: a correction deleting a restriction's row, hashes recomputed. The chain
    verifies, but the copy replays corrections only on tables protected on both sides."""
    hold(db, 3)
    path = tmp_path / "ledger.json"
    assert cli(db.dsn("steward_user"), "ledger", "export", str(path)).exit_code == 0
    document = json.loads(path.read_text())
    restriction = document["state"]["restrictions"][0]
    last = document["state"]["ledger"][-1]
    document["state"]["ledger"].append({**last, "seq": last["seq"] + 1, "event": "correction", "subject_type": "customer",
                                        "subject_key": "2", "restriction_id": None,
                                        "payload": {"table": "privacy.processing_restrictions", "operation": "DELETE",
                                                    "row": {"id": restriction["id"]}, "before": {"kind": "restriction"}}})
    _rechain(db, document)
    path.write_text(json.dumps(document))
    result = cli(restored, "ledger", "import", str(path))
    assert result.exit_code == 1 and "1 entries of the source's ledger were refused" in result.stderr, result.output
    assert "refused: source entry" in result.stdout and "protected here and at the source" in result.stdout
    with psycopg.connect(restored, autocommit=True) as owner:
        assert owner.execute("select released_at is null from privacy.processing_restrictions where id = %s",
                             (restriction["id"],)).fetchone() == (True,)
        assert owner.execute("select count(*) from privacy.ledger where event = 'sync_refused'").fetchone() == (1,)
        assert owner.execute("select * from privacy.verify_ledger()").fetchall() == []
        assert owner.execute("select privacy.is_held('customer', '3')").fetchone() == (True,)  # the rest was synced


def test_an_entry_altered_in_a_ledger_file_stops_the_sync_before_anything_is_replayed(db: Db, restored: str, tmp_path: Path) -> None:
    hold(db, 3)
    hold(db, 1, "OTHER")
    path = tmp_path / "ledger.json"
    assert cli(db.dsn("steward_user"), "ledger", "export", str(path)).exit_code == 0
    document = json.loads(path.read_text())
    entries = document["state"]["ledger"]
    placed = next(e for e in entries if e["event"] == "hold_placed" and e["subject_key"] == "1")
    placed["subject_key"] = "4"  # the hold, moved to another customer; the file's own sha256 recomputed, not the chain
    import hashlib
    document["sha256"] = hashlib.sha256(json.dumps(document["state"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path.write_text(json.dumps(document))
    with psycopg.connect(restored, autocommit=True) as owner:
        before = owner.execute("select count(*), max(seq) from privacy.ledger").fetchone()
    result = cli(restored, "ledger", "import", str(path))
    assert result.exit_code == 1 and f"does not verify at entry {placed['seq']}" in result.stderr, result.output
    with psycopg.connect(restored, autocommit=True) as owner:
        # the entries before it were replayed batch by batch; nothing from the altered one on
        assert owner.execute("select privacy.is_held('customer', '4'), privacy.is_held('customer', '1')").fetchone() == (False, False)
        assert owner.execute("select count(*) from privacy.sync_replayed where source_seq >= %s", (placed["seq"],)).fetchone() == (0,)
        assert owner.execute("select * from privacy.verify_ledger()").fetchall() == []
        assert owner.execute("select count(*) > %s from privacy.ledger", (before[0],)).fetchone() == (True,)  # type: ignore[index]


def test_sync_is_the_owners_not_a_stewards(db: Db, restored: str, tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    assert cli(db.dsn("steward_user"), "ledger", "export", str(path)).exit_code == 0
    steward = restored.replace("user=shop_owner", "user=steward_user")
    result = cli(steward, "ledger", "import", str(path))
    assert result.exit_code == 1 and "permission denied for function" in result.stderr
