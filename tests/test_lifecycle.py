"""The Art. 18 lifecycle, break-glass, the corrections journal, watch and recipients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import Db, hold, refused, restrict

PYCTL = str(Path(sys.executable).with_name("pyctl"))


def ledger_count(db: Db) -> int:
    return int(db.scalar("select count(*) from privacy.ledger"))


def step(db: Db, function: str, rid: str, text: str = "done") -> None:
    db.steward.execute(f"select privacy.{function}(%s, %s)", (rid, text))


def release(db: Db, rid: str, reason: str | None = None, force: bool = False) -> None:
    db.steward.execute("select privacy.release_restriction(%s, %s, %s)", (rid, reason, force))


def failing(db: Db, statement: str, params: object, match: str) -> None:
    before = ledger_count(db)
    with pytest.raises(psycopg.Error, match=match) as info:
        db.steward.execute(statement, params)
    assert info.value.sqlstate == "PV002"
    assert ledger_count(db) == before


LIFECYCLES = {
    "accuracy": ["verify_restriction", "notify_subject", "approve_release"],
    "objection": ["verify_restriction", "notify_subject"],
    "unlawful": ["notify_subject"],
    "legal-claims": ["notify_subject"],
}
STEP_NAMES = {"verify_restriction": "verify", "notify_subject": "notify", "approve_release": "approve"}


@pytest.mark.parametrize("basis", list(LIFECYCLES))
def test_release_needs_the_steps_its_basis_requires(db: Db, basis: str) -> None:
    rid = restrict(db, 2, basis)
    steps = LIFECYCLES[basis]
    for done, function in enumerate(steps):
        missing = ", ".join(STEP_NAMES[f] for f in steps[done:])
        failing(db, "select privacy.release_restriction(%s)", (rid,), f"missing step\\(s\\) {missing}")
        assert db.ids("customers", "app") == [1, 3, 4]  # still hidden after the refused release
        step(db, function, rid)
    release(db, rid)
    assert db.ids("customers", "app") == [1, 2, 3, 4]
    row = db.su.execute("select state, release_forced from privacy.processing_restrictions where id = %s", (rid,)).fetchone()
    assert row == ("released", False)
    events = [r[0] for r in db.su.execute("select event from privacy.ledger where restriction_id = %s order by seq", (rid,))]
    expected = {"verify_restriction": "restriction_verified", "notify_subject": "subject_notified", "approve_release": "release_approved"}
    assert events == ["restriction_placed", *[expected[f] for f in steps], "restriction_released"]


def test_steps_out_of_order_or_repeated_are_refused(db: Db) -> None:
    rid = restrict(db, 2, "accuracy")
    failing(db, "select privacy.notify_subject(%s, 'email')", (rid,), "verify before notifying")
    failing(db, "select privacy.approve_release(%s, 'reply')", (rid,), "notify the subject")
    step(db, "verify_restriction", rid)
    failing(db, "select privacy.verify_restriction(%s, 'again')", (rid,), "already verified")
    step(db, "notify_subject", rid)
    failing(db, "select privacy.notify_subject(%s, 'again')", (rid,), "already notified")
    other = restrict(db, 3, "unlawful")
    step(db, "notify_subject", other)
    failing(db, "select privacy.verify_restriction(%s, 'late')", (other,), "verify comes before")


def test_forced_release_is_recorded_as_forced(db: Db) -> None:
    rid = restrict(db, 2, "accuracy")
    failing(db, "select privacy.release_restriction(%s, null, true)", (rid,), "forced release needs a reason")
    release(db, rid, "court order 2026-77", force=True)
    row = db.su.execute("select release_forced, release_reason from privacy.processing_restrictions where id = %s", (rid,)).fetchone()
    assert row == (True, "court order 2026-77")
    payload = db.scalar("select payload from privacy.ledger where restriction_id = %s and event = 'restriction_released'", (rid,))
    assert payload == {"reason": "court order 2026-77", "forced": True, "missing_steps": ["verify", "notify", "approve"]}


@pytest.mark.parametrize("statement,params,match", [
    ("select privacy.verify_restriction(%s, %s)", ("00000000-0000-0000-0000-000000000000", "x"), "unknown restriction"),
    ("select privacy.verify_restriction(%s, %s)", ("RID", " "), "needs a note"),
    ("select privacy.notify_subject(%s, %s)", ("RID", ""), "needs the channel"),
    ("select privacy.approve_release(%s, %s)", ("RID", None), "needs the evidence"),
    ("select privacy.release_hold(%s, %s, %s)", ("HID", "settled", ""), "needs a reference"),
    ("select privacy.release_hold(%s, %s, %s)", ("HID", "", "order 7"), "needs a reason"),
    ("select privacy.release_hold(%s, %s, %s)", ("RID", "x", "y"), "unknown legal hold"),
])
def test_bad_lifecycle_input_records_nothing(db: Db, statement: str, params: tuple[object, ...], match: str) -> None:
    ids = {"RID": restrict(db, 2, "accuracy"), "HID": hold(db, 3)}
    failing(db, statement, tuple(ids.get(p, p) if isinstance(p, str) else p for p in params), match)


def test_release_of_a_released_restriction_is_refused(db: Db) -> None:
    rid = restrict(db, 2, "unlawful")
    step(db, "notify_subject", rid)
    release(db, rid)
    failing(db, "select privacy.release_restriction(%s)", (rid,), "already released")
    failing(db, "select privacy.notify_subject(%s, 'x')", (rid,), "already released")


# -- break-glass ----------------------------------------------------------------------------


def test_break_glass_lets_a_steward_change_held_rows_in_one_transaction(db: Db) -> None:
    hold(db, 3)
    steward = db.connect("steward_user", autocommit=False)
    with steward.transaction():
        steward.execute("select privacy.break_glass('court-ordered correction, order 2026-55')")
        steward.execute("update orders set total = 301 where id = 30")
        steward.execute("delete from activity_log where customer_id = 3")
    assert db.scalar("select total from orders where id = 30") == 301
    assert db.scalar("select privacy.is_held('customer', 3)") is True
    changes = db.su.execute("select kind, table_name, operation, row_identity, before_values, after_values "
                            "from privacy.corrections order by id").fetchall()
    assert changes[0] == ("break_glass", "orders", "UPDATE", {"id": 30, "placed_on": "2026-03-30"}, {"total": 300}, {"total": 301})
    assert changes[1][:3] == ("break_glass", "activity_log", "DELETE")
    assert changes[1][3]["what"] == "login"  # no primary key: the whole row identifies it
    events = [r[0] for r in db.su.execute("select event from privacy.ledger order by seq desc limit 3")]
    assert events == ["break_glass_change", "break_glass_change", "break_glass"]
    payload = db.scalar("select payload from privacy.ledger where event = 'break_glass_change' order by seq limit 1")
    assert payload["reason"] == "court-ordered correction, order 2026-55" and payload["before"] == {"total": 300}
    # the next transaction is bound by the hold again
    refused(steward, "update orders set total = 302 where id = 30")
    steward.rollback()


def test_break_glass_is_for_stewards_only_and_other_transactions_are_refused(db: Db) -> None:
    hold(db, 3)
    for user, error in (("app", "permission denied"), ("shop_owner", "for stewards only")):
        conn = db.connect(user, autocommit=False)
        with pytest.raises(psycopg.Error, match=error):
            conn.execute("select privacy.break_glass('because')")
        conn.rollback()
    steward = db.connect("steward_user", autocommit=False)
    steward.execute("select privacy.break_glass('court order')")
    refused(db.app, "update orders set total = 0 where id = 30")  # another session, meanwhile
    refused(db.owner, "delete from order_items where id = 300")
    steward.rollback()
    assert db.scalar("select count(*) from privacy.break_glass") == 0
    with pytest.raises(psycopg.Error, match="needs a reason"):
        db.steward.execute("select privacy.break_glass('  ')")


def test_truncate_is_refused_even_under_break_glass(db: Db) -> None:
    hold(db, 3)
    steward = db.connect("steward_user", autocommit=False)
    steward.execute("select privacy.break_glass('court order')")
    db.su.execute("grant truncate on activity_log to privacy_steward")
    refused(steward, "truncate activity_log")
    steward.rollback()


# -- corrections journal ---------------------------------------------------------------------


def test_steward_corrections_are_journaled_and_shown_in_history(db: Db) -> None:
    rid = restrict(db, 2)
    db.steward.execute("update addresses set street = '22 Ben Road' where id = 2")
    db.steward.execute("update activity_log set what = 'signin' where customer_id = 2 and what = 'login'")
    db.owner.execute("delete from order_items where id = 210")
    rows = db.su.execute("select table_name, operation, row_identity, before_values, after_values, restriction_ids, "
                         "subject_type, subject_key, acting_role from privacy.corrections order by id").fetchall()
    assert rows[0] == ("addresses", "UPDATE", {"id": 2}, {"street": "2 Ben Road"}, {"street": "22 Ben Road"},
                       [__import__("uuid").UUID(rid)], "customer", "2", "steward_user")
    assert rows[1][1:5] == ("UPDATE", {"customer_id": 2, "happened_at": rows[1][2]["happened_at"], "what": "login"},
                            {"what": "login"}, {"what": "signin"})
    assert rows[2][:2] == ("order_items", "DELETE") and rows[2][4] is None and rows[2][8] == "shop_owner"
    history = json.loads(subprocess.run([PYCTL, "--dsn", db.dsn("steward_user"), "--json", "history", "2"],
                                        capture_output=True, text=True, check=True).stdout)
    assert [e["event"] for e in history] == ["restriction_placed", "correction", "correction", "correction"]
    assert history[1]["payload"]["after"] == {"street": "22 Ben Road"}
    assert db.su.execute("select * from privacy.verify_ledger()").fetchall() == []


def test_marking_is_not_a_correction(db: Db) -> None:
    rid = restrict(db, 2)
    release(db, rid, "lifted", force=True)
    assert db.scalar("select count(*) from privacy.corrections") == 0


# -- watch ------------------------------------------------------------------------------------


def _watch(db: Db, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PYCTL, "--dsn", db.dsn("steward_user") + " application_name=watcher", "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_watch_prints_events_in_order_and_resumes_after_a_disconnect(db: Db) -> None:
    start = int(db.scalar("select max(seq) from privacy.ledger"))
    with _watch(db, "--since", str(start), "--limit", "5", "--idle-timeout", "30") as proc:
        try:
            hold(db, 3)
            assert proc.stdout is not None and proc.stderr is not None
            lines = [json.loads(proc.stdout.readline()) for _ in range(2)]  # the hold and its digest
            first = lines[0]
            assert first["seq"] == start + 1 and first["event"] == "hold_placed" and first["subject_key"] == "3"
            assert "reason" not in first and "payload" not in first
            # drop the watcher's connection; events placed meanwhile must still arrive, once each, in order
            deadline = time.monotonic() + 10
            while not db.su.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'watcher'").fetchall():
                assert time.monotonic() < deadline
                time.sleep(0.1)
            restrict(db, 2)
            rid = restrict(db, 4, "objection")
            db.steward.execute("select privacy.verify_restriction(%s, 'checked')", (rid,))
            lines += [json.loads(proc.stdout.readline()) for _ in range(3)]
            assert proc.wait(timeout=60) == 0
            assert proc.stdout.read() == ""
            err = proc.stderr.read()
        finally:
            proc.kill()
    assert [e["seq"] for e in lines] == [start + 1, start + 2, start + 3, start + 4, start + 5]
    assert [e["event"] for e in lines] == ["hold_placed", "hold_digested", "restriction_placed", "restriction_placed", "restriction_verified"]
    assert "connection lost" in err


def test_watch_since_replays_history(db: Db) -> None:
    hold(db, 3)
    out = subprocess.run([PYCTL, "--dsn", db.dsn("steward_user"), "watch", "--since", "0", "--idle-timeout", "0.5"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == ledger_count(db)


# -- recipients (Art. 19) -----------------------------------------------------------------------


def test_every_restriction_event_creates_a_notice_per_recipient(db: Db) -> None:
    db.steward.execute("select privacy.add_recipient('salesforce', 'CRM sync'), privacy.add_recipient('kafka', 'events topic')")
    hold(db, 3)  # holds are not disclosed
    rid = restrict(db, 2, "unlawful")
    step(db, "notify_subject", rid)
    release(db, rid)
    pending = db.steward.execute("select recipient, event from privacy.pending_notices()").fetchall()
    assert sorted(pending) == sorted([("kafka", "restriction_placed"), ("salesforce", "restriction_placed"),
                                      ("kafka", "restriction_released"), ("salesforce", "restriction_released")])
    placed = int(db.scalar("select seq from privacy.ledger where event = 'restriction_placed'"))
    db.steward.execute("select privacy.ack_notice('salesforce', %s)", (placed,))
    with pytest.raises(psycopg.Error, match="already told"):
        db.steward.execute("select privacy.ack_notice('salesforce', %s)", (placed,))
    with pytest.raises(psycopg.Error, match="pending notice"):
        db.steward.execute("select privacy.remove_recipient('salesforce')")
    proc = subprocess.run([PYCTL, "--dsn", db.dsn("steward_user"), "--json", "status"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["pending_notices"] == 3
    assert db.scalar("select count(*) from privacy.ledger where event = 'recipient_notified'") == 1
    for recipient, seq in db.steward.execute("select recipient, seq from privacy.pending_notices()").fetchall():
        db.steward.execute("select privacy.ack_notice(%s, %s)", (recipient, seq))
    db.steward.execute("select privacy.remove_recipient('salesforce')")
    assert [r[0] for r in db.steward.execute("select name from privacy.recipients")] == ["kafka"]


def test_deleting_the_ledger_tail_is_detected(db: Db) -> None:
    hold_id = hold(db, 3)
    db.su.execute("alter table privacy.ledger disable trigger privacy_append_only")
    db.su.execute("delete from privacy.ledger where seq = (select max(seq) from privacy.ledger)")
    problems = db.su.execute("select problem from privacy.verify_ledger()").fetchall()
    assert problems == [(f"legal hold {hold_id} has no hold_digested event",)]
