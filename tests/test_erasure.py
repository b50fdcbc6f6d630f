"""Erasure after the hold (issue 16): refused while held, children before parents in one
transaction, proven by a ledger event and a certificate, never journaled as corrections,
and not to be forged by the application."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import Db, hold, refused, restrict
from pyctl.cli import main

# Customer 1 (Ada): her address, two orders (one per partition), their items, a login, a ticket.
ADA = {"public.customers": 1, "public.addresses": 1, "public.orders": 2, "public.order_items": 2,
       "public.activity_log": 1, '"crm data"."Support; Tickets"': 1}


def erase(db: Db, key: int | str, *, reason: str = "retention ended", **kwargs: Any) -> dict[str, Any]:
    args = {"p_reference": None, "p_after_holds": False, "p_dry_run": False, **kwargs}
    return dict(db.scalar("select privacy.erase('customer', %s, %s, %s, %s, %s)",
                          (str(key), reason, args["p_reference"], args["p_after_holds"], args["p_dry_run"]), user="steward_user"))


def rows_of(db: Db, key: int) -> dict[str, int]:
    counts = db.su.execute(
        "select privacy.qualified(p.table_schema, p.table_name), privacy.subject_row_count(p.id, 'customer', %s) "
        "from privacy.protected_tables p", (str(key),)).fetchall()
    return {t: n for t, n in counts}


def failed(conn: psycopg.Connection, statement: str) -> psycopg.Error:
    """A usage error of the SQL API (PV002), not a refusal."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    assert info.value.sqlstate == "PV002", str(info.value)
    return info.value


def cli(db: Db, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def test_erase_deletes_every_row_of_the_subject_children_before_parents(db: Db) -> None:
    others = {k: rows_of(db, k) for k in (2, 3, 4)}
    result = erase(db, 1, p_reference="DPO-7")
    assert result["state"] == "erased"
    assert {t["table"]: t["rows"] for t in result["tables"]} == ADA
    assert all(n == 0 for n in rows_of(db, 1).values())
    assert db.scalar("select count(*) from addresses where id = 1") == 0
    assert {k: rows_of(db, k) for k in (2, 3, 4)} == others  # nobody else's rows
    # one ledger event, with counts and digests, and no values of the rows
    entry = db.su.execute("select event, subject_key, payload from privacy.ledger where seq = %s", (result["ledger_seq"],)).fetchone()
    assert entry[0] == "erasure" and entry[1] == "1"
    assert entry[2]["rows"] == sum(ADA.values()) and entry[2]["reference"] == "DPO-7"
    assert all(len(t["sha256"]) == 64 for t in entry[2]["tables"])
    text = json.dumps(entry[2])
    assert "Ada" not in text and "Lane" not in text and "hello" not in text
    assert db.scalar("select count(*) from privacy.corrections") == 0
    assert db.scalar("select count(*) from privacy.verify_ledger()") == 0


def test_erasure_is_refused_while_a_hold_is_active_and_names_it(db: Db) -> None:
    hold_id = hold(db, 3, case="2026-CV-118")
    before = rows_of(db, 3)
    err = refused(db.steward, "select privacy.erase('customer', '3', 'retention ended')")
    assert err.sqlstate == "PV001"
    assert f"erasure of customer/3 refused: legal hold {hold_id} (case 2026-CV-118) is active" in str(err)
    assert rows_of(db, 3) == before
    # the dry run says what would go and what stands in the way, and changes nothing
    ledger = db.scalar("select max(seq) from privacy.ledger")
    dry = erase(db, 3, p_dry_run=True)
    assert dry["state"] == "dry_run" and [b["id"] for b in dry["waiting_for"]] == [hold_id]
    assert {t["table"]: t["rows"] for t in dry["tables"]}["public.orders"] == 2
    assert rows_of(db, 3) == before and db.scalar("select max(seq) from privacy.ledger") == ledger


def test_a_legal_claims_restriction_blocks_erasure_other_bases_do_not(db: Db) -> None:
    claims = restrict(db, 2, basis="legal-claims")
    err = refused(db.steward, "select privacy.erase('customer', '2', 'retention ended')")
    assert f"restriction {claims} (legal-claims, Art. 17(3)(e)) is active" in str(err)
    restrict(db, 4, basis="accuracy")
    result = erase(db, 4)
    assert result["state"] == "erased"
    # the restricted rows' deletes are the erasure's, not corrections with their values in the ledger
    assert db.scalar("select count(*) from privacy.corrections") == 0
    assert db.scalar("select count(*) from privacy.ledger where event in ('correction', 'break_glass_change')") == 0
    assert "Dee" not in db.scalar("select string_agg(payload::text, ' ') from privacy.ledger")


def test_a_shared_row_is_kept_and_counted(db: Db) -> None:
    # Dee's address 4 is also the address of a member of staff (an unprotected table).
    result = erase(db, 4)
    addresses = next(t for t in result["tables"] if t["table"] == "public.addresses")
    assert addresses == {"table": "public.addresses", "rows": 0, "kept": 1,
                         "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
    assert db.scalar("select count(*) from addresses where id = 4") == 1
    assert db.scalar("select count(*) from customers where id = 4") == 0


def test_the_erasure_digest_is_the_hold_digest_of_the_same_rows(db: Db) -> None:
    hold_id = hold(db, 2)
    digests = dict(db.su.execute("select privacy.qualified(table_schema, table_name), digest from privacy.hold_digests "
                                 "where hold_id = %s", (hold_id,)).fetchall())
    db.steward.execute("select privacy.release_hold(%s, 'case closed', 'order 12')", (hold_id,))
    result = erase(db, 2)
    assert {t["table"]: t["sha256"] for t in result["tables"]} == digests


def test_after_holds_queues_the_erasure_until_the_last_hold_is_released(db: Db) -> None:
    first, second = hold(db, 3, case="A-1"), hold(db, 3, case="B-2")
    queued = erase(db, 3, p_after_holds=True)
    assert queued["state"] == "pending" and {b["id"] for b in queued["waiting_for"]} == {first, second}
    pending = db.steward.execute("select id::text, waiting_for, why from privacy.pending_erasures()").fetchall()
    assert [p[0] for p in pending] == [queued["id"]] and "case A-1" in pending[0][2] and "case B-2" in pending[0][2]
    db.steward.execute("select privacy.release_hold(%s, 'settled', 'order 1')", (first,))
    assert rows_of(db, 3)["public.customers"] == 1  # one hold still in force
    assert "case B-2" in db.scalar("select why from privacy.pending_erasures()", user="steward_user")
    with db.connect("steward_user", autocommit=False) as conn:
        conn.execute("select privacy.release_hold(%s, 'settled', 'order 2')", (second,))
        # in the release's own transaction
        assert conn.execute("select count(*) from customers where id = 3").fetchone() == (0,)
        conn.commit()
    assert all(n == 0 for n in rows_of(db, 3).values())
    assert db.scalar("select count(*) from privacy.pending_erasures()", user="steward_user") == 0
    events = [r[0] for r in db.su.execute("select event from privacy.ledger where subject_key = '3' order by seq").fetchall()]
    assert events[-2:] == ["hold_released", "erasure"] and "erasure_queued" in events
    cert = db.scalar("select privacy.erasure_certificate(%s)", (queued["id"],), user="steward_user")
    assert cert["valid"] and cert["certificate"]["reason"] == "retention ended"


def test_a_second_queue_of_the_same_subject_is_refused(db: Db) -> None:
    hold(db, 3)
    queued = erase(db, 3, p_after_holds=True)
    err = failed(db.steward, "select privacy.erase('customer', '3', 'again', null, true)")
    assert f"already queued ({queued['id']}" in str(err)


def test_erase_many_reports_each_key(db: Db) -> None:
    hold_id = hold(db, 3, case="C-3")
    rows = db.steward.execute("select subject_key, outcome, detail from privacy.erase_many('customer', %s, 'accounts closed')",
                              (["1", "3", "999", "abc", "1", "2"],)).fetchall()
    outcomes = [(k, o) for k, o, _ in rows]
    assert outcomes == [("1", "erased"), ("3", "skipped"), ("999", "unknown"), ("abc", "unknown"), ("1", "unknown"), ("2", "erased")]
    assert hold_id in rows[1][2]["why"] and "case C-3" in rows[1][2]["why"]
    assert rows[4][2]["why"].startswith("already erased")
    assert rows_of(db, 3)["public.customers"] == 1 and rows_of(db, 1)["public.customers"] == 0
    assert db.scalar("select count(*) from privacy.ledger where event = 'erasure'") == 2


def test_erase_many_falls_back_to_one_by_one_where_a_row_is_shared(db: Db) -> None:
    # Dee's address is also a member of staff's: the all-at-once delete cannot take it, one by one keeps it.
    rows = db.steward.execute("select subject_key, outcome, detail from privacy.erase_many('customer', %s, 'accounts closed')",
                              (["4", "1"],)).fetchall()
    assert [(k, o, d["batch"]) for k, o, d in rows] == [("4", "erased", False), ("1", "erased", False)]
    assert {t["table"]: t.get("kept") for t in rows[0][2]["tables"]}["public.addresses"] == 1
    assert db.scalar("select count(*) from addresses where id in (1, 4)") == 1
    assert db.scalar("select count(*) from privacy.ledger where event = 'erasure'") == 2
    assert db.scalar("select count(*) from privacy.erasures where state = 'pending'") == 0


def test_erase_many_all_at_once_matches_one_by_one(db: Db) -> None:
    dry = erase(db, 1, p_dry_run=True)
    bulk = db.steward.execute("select detail from privacy.erase_many('customer', %s, 'r')", (["1", "2"],)).fetchall()
    assert {t["table"]: (t["rows"], t["sha256"]) for t in bulk[0][0]["tables"]} == \
        {t["table"]: (t["rows"], t["sha256"]) for t in dry["tables"]}
    assert bulk[0][0]["batch"] is True and bulk[1][0]["batch"] is True
    assert sum(t["rows"] for t in bulk[0][0]["tables"]) == sum(ADA.values())
    cert = db.scalar("select privacy.erasure_certificate(%s)", (bulk[0][0]["id"],), user="steward_user")
    assert cert["valid"], cert["checks"]
    assert all(n == 0 for n in rows_of(db, 1).values()) and all(n == 0 for n in rows_of(db, 2).values())


def test_the_certificate_checks_against_the_ledger(db: Db) -> None:
    result = erase(db, 1)
    cert = db.scalar("select privacy.erasure_certificate(%s)", (result["id"],), user="steward_user")
    assert cert["valid"] and all(cert["checks"].values())
    assert cert["certificate"]["rows"] == sum(ADA.values()) and cert["certificate"]["ledger"]["event"] == "erasure"
    # the rows come back (a restore of the customer by hand): the certificate says they are not erased any more
    db.owner.execute("insert into customers values (1, 'Ada', null)")
    cert = db.scalar("select privacy.erasure_certificate(%s)", (result["id"],), user="steward_user")
    assert not cert["valid"] and cert["checks"]["still_erased"] is False
    findings = db.steward.execute("select severity, category, finding from privacy.doctor() where category = 'erased data present'").fetchall()
    assert findings and findings[0][0] == "error" and "customer/1" in findings[0][2] and "public.customers (1)" in findings[0][2]
    # the ledger entry altered by a superuser: the certificate fails
    db.owner.execute("delete from customers where id = 1")
    db.su.execute("alter table privacy.ledger disable trigger privacy_append_only")
    db.su.execute("update privacy.ledger set payload = jsonb_set(payload, '{rows}', '1') where seq = %s", (result["ledger_seq"],))
    db.su.execute("alter table privacy.ledger enable trigger privacy_append_only")
    cert = db.scalar("select privacy.erasure_certificate(%s)", (result["id"],), user="steward_user")
    assert not cert["valid"] and cert["checks"]["entry_hash"] is False


def test_the_application_can_neither_erase_nor_forge_the_erasures_pass(db: Db) -> None:
    restrict(db, 2)
    hold(db, 3)
    for statement in ("select privacy.erase('customer', '1', 'x')",
                      "insert into privacy.erasure_in_progress values (pg_current_xact_id(), 'customer', '3')",
                      "insert into privacy.erasures (subject_type, subject_key, state, reason, requested_by, requested_role, requested_at) "
                      "values ('customer', '3', 'pending', 'x', 'app', 'app', now())",
                      "select privacy.erasing('[[\"customer\", \"3\"]]')",
                      "select privacy.perform_erasure(gen_random_uuid(), false, null)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.app.execute(statement)
    # a custom setting is no pass either
    with db.connect("app", autocommit=False) as conn:
        conn.execute("set local privacy.erasure_in_progress = 'customer/3'")
        err = refused(conn, "delete from orders where customer_id = 3")
        assert err.sqlstate == "PV001"


def test_the_erasures_pass_covers_its_own_subject_only(db: Db) -> None:
    hold(db, 3)
    restrict(db, 2)
    with db.connect("steward_user", autocommit=False) as conn:
        conn.execute("select privacy.erase('customer', '1', 'retention ended')")
        err = refused(conn, "delete from orders where customer_id = 3")
        assert err.sqlstate == "PV001" and "legal hold" in str(err)
        conn.rollback()
    with db.connect("steward_user", autocommit=False) as conn:
        conn.execute("select privacy.erase('customer', '1', 'retention ended')")
        conn.execute("delete from orders where id = 20")  # a steward's correction of restricted Ben: journaled as ever
        conn.commit()
    assert db.scalar("select count(*) from privacy.corrections where subject_key = '2'") >= 1
    assert db.scalar("select count(*) from privacy.corrections where subject_key = '1'") == 0


def test_erasure_of_a_subject_erased_or_unknown_says_so(db: Db) -> None:
    erase(db, 1)
    assert "already erased" in str(failed(db.steward, "select privacy.erase('customer', '1', 'again')"))
    assert "unknown subject customer/999" in str(failed(db.steward, "select privacy.erase('customer', '999', 'x')"))
    assert "needs a reason" in str(failed(db.steward, "select privacy.erase('customer', '2', ' ')"))


# -- the command line ------------------------------------------------------------------------------


def test_cli_erase_dry_run_erase_and_certificate(db: Db) -> None:
    dry = cli(db, "erase", "1", "--reason", "retention ended", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "public.orders" in dry.stdout and "nothing was changed" in dry.stderr
    assert db.scalar("select count(*) from customers where id = 1") == 1
    done = cli(db, "--json", "erase", "1", "--reason", "retention ended", "--reference", "DPO-1")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["state"] == "erased"
    text = cli(db, "erase", "certificate", result["id"])
    assert text.exit_code == 0, text.output
    assert "CERTIFICATE OF ERASURE" in text.stdout and "check ledger_chain: ok" in text.stdout
    as_json = cli(db, "erase", "certificate", result["id"], "--json")
    assert json.loads(as_json.stdout)["valid"] is True
    assert cli(db, "erase", "certificate", "nope").exit_code == 1


def test_cli_refusal_after_holds_and_pending(db: Db) -> None:
    hold_id = hold(db, 3, case="2026-CV-118")
    refusal = cli(db, "erase", "3", "--reason", "r")
    assert refusal.exit_code == 1 and f"legal hold {hold_id} (case 2026-CV-118)" in refusal.stderr
    queued = cli(db, "erase", "3", "--reason", "r", "--after-holds")
    assert queued.exit_code == 0, queued.output and "queued" in queued.stderr
    pending = cli(db, "erase", "pending")
    assert "customer/3" in pending.stdout and "2026-CV-118" in pending.stdout
    released = cli(db, "hold", "release", hold_id, "--reason", "settled", "--reference", "order")
    assert released.exit_code == 0, released.output
    assert db.scalar("select count(*) from customers where id = 3") == 0
    assert "no queued erasures" in cli(db, "erase", "pending").stdout


def test_cli_erase_from_file(db: Db, tmp_path: Path) -> None:
    hold(db, 3)
    keys = tmp_path / "keys.txt"
    keys.write_text("# closed accounts\n1\n3\n\n999\n", encoding="utf-8")
    result = cli(db, "--json", "erase", "--from-file", str(keys), "--reason", "accounts closed")
    assert result.exit_code == 0, result.output
    assert [(r["key"], r["outcome"]) for r in json.loads(result.stdout)] == [("1", "erased"), ("3", "skipped"), ("999", "unknown")]
    assert "1 erased, 1 skipped, 1 unknown" in result.stderr
    usage = cli(db, "erase", "--reason", "r")
    assert usage.exit_code == 2


def test_cli_status_and_doctor_report_erased_rows_that_came_back(db: Db) -> None:
    erase(db, 1)
    assert cli(db, "status", user="shop_owner").exit_code == 0
    db.owner.execute("insert into customers values (1, 'Ada', null)")
    status = cli(db, "status", user="shop_owner")
    assert status.exit_code == 1 and "ERROR: rows of 1 erased subject(s) are here again (customer/1)" in status.stdout
    doctor = cli(db, "doctor")
    assert doctor.exit_code == 1 and "erased data present" in doctor.stdout


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_erasure_runs_at_read_committed_only(db: Db, isolation: str) -> None:
    with db.connect("steward_user", autocommit=False) as conn:
        conn.execute(f"set transaction isolation level {isolation}")
        with pytest.raises(psycopg.Error, match="READ COMMITTED"):
            conn.execute("select privacy.erase('customer', '1', 'r')")
