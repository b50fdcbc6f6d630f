"""The ledger: every event recorded, chained, and not rewritable."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from conftest import Db, hold, restrict


def events(db: Db) -> list[str]:
    return [r[0] for r in db.su.execute("select event from privacy.ledger order by seq").fetchall()]


def test_events_are_recorded_with_their_actor(db: Db) -> None:
    start = len(events(db))
    hold_id = hold(db, 3)
    restriction_id = restrict(db, 2)
    db.steward.execute("select privacy.release_hold(%s, 'closed', 'order 9')", (hold_id,))
    db.steward.execute("select privacy.release_restriction(%s, 'verified', true)", (restriction_id,))
    assert events(db)[start:] == ["hold_placed", "hold_digested", "restriction_placed", "hold_released", "restriction_released"]
    row = db.su.execute("select session_role, acting_role, payload from privacy.ledger where event = 'hold_released'").fetchone()
    assert row is not None
    assert row[0] == "steward_user" and row[1] == "steward_user"
    assert row[2] == {"reason": "closed", "reference": "order 9"}
    assert db.su.execute("select * from privacy.verify_ledger()").fetchall() == []


def test_setup_events_are_recorded(db: Db) -> None:
    recorded = events(db)
    assert recorded[0] == "toolkit_installed"
    assert recorded.count("table_protected") == 6
    assert "subject_type_added" in recorded


@pytest.mark.parametrize("statement", [
    "update privacy.ledger set payload = '{}'",
    "delete from privacy.ledger",
    "truncate privacy.ledger cascade",
])
def test_nobody_can_rewrite_the_ledger(db: Db, statement: str) -> None:
    hold(db, 3)
    before = events(db)
    for conn in (db.owner, db.su):
        with pytest.raises(psycopg.Error, match="append-only"):
            conn.execute(statement)
    assert events(db) == before


def test_a_superuser_edit_with_triggers_disabled_is_detected(db: Db) -> None:
    hold(db, 3)
    seq = db.scalar("select seq from privacy.ledger where event = 'hold_placed'")
    db.su.execute("alter table privacy.ledger disable trigger privacy_append_only")
    db.su.execute("update privacy.ledger set payload = payload || '{\"case\": \"OTHER\"}' where seq = %s", (seq,))
    assert db.su.execute("select seq, problem from privacy.verify_ledger()").fetchall() == [
        (seq, "content does not match its hash (entry altered)")]


def test_a_superuser_delete_with_triggers_disabled_is_detected(db: Db) -> None:
    hold(db, 3)
    restrict(db, 2)
    seq = db.scalar("select seq from privacy.ledger where event = 'hold_placed'")
    db.su.execute("alter table privacy.ledger disable trigger privacy_append_only")
    db.su.execute("delete from privacy.ledger where seq = %s", (seq,))
    problems = db.su.execute("select seq, problem from privacy.verify_ledger()").fetchall()
    assert problems[0][0] == seq and "missing" in problems[0][1]


def test_events_are_notified_without_reasons(db: Db) -> None:
    listener = db.connect("steward_user")
    listener.execute("listen privacy_events")
    hold(db, 3)
    note = next(listener.notifies(timeout=5, stop_after=1))
    payload = json.loads(note.payload)
    assert payload["event"] == "hold_placed" and payload["subject_key"] == "3"
    assert "reason" not in note.payload and "preserve" not in note.payload


def test_a_refusal_leaves_a_line_in_the_server_log(db: Db) -> None:
    hold_id = hold(db, 3)
    with pytest.raises(psycopg.Error):
        db.app.execute("delete from order_items where id = 300")
    expected = f"privacy: refused DELETE on public.order_items by app (session app): subject customer/3 is under legal hold {hold_id}"
    deadline = time.monotonic() + 5
    while expected not in db.cluster.log_text():
        assert time.monotonic() < deadline, "no refusal line in the server log"
        time.sleep(0.1)
