"""Many holds or restrictions at once (a custodian list): one transaction, all or none."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import Db, hold, refused
from pyctl.cli import main


def cli(db: Db, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def record(db: Db) -> tuple[object, ...]:
    return tuple(db.su.execute("select (select count(*) from privacy.ledger), (select count(*) from privacy.processing_restrictions), "
                               "(select count(*) from privacy.subject_marks where mark <> 0)").fetchone() or ())


def test_place_holds_places_one_hold_per_subject_then_each_proof(db: Db) -> None:
    ledger_before = db.scalar("select max(seq) from privacy.ledger")
    rows = db.steward.execute("select subject_key, hold_id from privacy.place_holds('customer', %s, '2026-CV-118', 'custodians')",
                              (["3", "1", "03", "3"],)).fetchall()
    assert [r[0] for r in rows] == ["1", "3"]  # canonical keys, each once
    ids = [r[1] for r in rows]
    # In force at once: the proofs come after, each in a transaction of its own.
    for key in (1, 3):
        refused(db.app, "delete from orders where customer_id = %s", (key,))
    assert db.scalar("select count(*) from orders where customer_id in (1, 3)") == 4
    assert db.scalar("select count(*) from privacy.hold_digests where hold_id = any(%s)", (ids,)) == 0
    assert sorted(r[0] for r in db.steward.execute("select hold_id from privacy.pending_proofs()")) == sorted(ids)
    for hold_id in ids:
        tables = db.scalar("select privacy.prove_hold(%s)", (hold_id,), user="steward_user")
        assert {t["table"]: t["rows"] for t in tables}["public.orders"] == 2
        assert db.scalar("select privacy.prove_hold(%s)", (hold_id,), user="steward_user") == tables  # once only
    assert db.steward.execute("select * from privacy.pending_proofs()").fetchall() == []
    events = [r[0] for r in db.su.execute("select event from privacy.ledger where seq > %s order by seq", (ledger_before,))]
    assert events == ["hold_placed", "hold_placed", "hold_digested", "hold_digested"]
    assert {r[0] for r in db.su.execute("select status from privacy.verify_hold(%s)", (ids[0],))} == {"unchanged"}


def test_a_pending_proof_is_reported_and_completed_before_release_and_verify(db: Db) -> None:
    hold_id = str(db.scalar("select privacy.place_hold('customer', '3', 'C-1', 'custodian')", user="steward_user"))
    findings = db.steward.execute("select category, fix_sql from privacy.doctor() where object = %s", (hold_id,)).fetchall()
    assert findings == [("hold proof pending", f"select privacy.prove_hold('{hold_id}')")]
    # A follower cannot compute it: verify says it is pending (here: a read-only transaction).
    with db.steward.transaction():
        db.steward.execute("set transaction read only")
        assert db.steward.execute("select table_name, status from privacy.verify_hold(%s)", (hold_id,)).fetchall() == [
            (None, "proof pending")]
    # Releasing it computes the proof first, while the rows are still held.
    db.steward.execute("select privacy.release_hold(%s, 'settled', 'order 1')", (hold_id,))
    events = [r[0] for r in db.su.execute("select event from privacy.ledger where restriction_id = %s order by seq", (hold_id,))]
    assert events == ["hold_placed", "hold_digested", "hold_released"]
    assert db.scalar("select count(*) from privacy.hold_digests where hold_id = %s", (hold_id,)) > 0
    # On the primary, verify computes a pending proof first.
    other = str(db.scalar("select privacy.place_hold('customer', '1', 'C-1', 'custodian')", user="steward_user"))
    assert {r[0] for r in db.steward.execute("select status from privacy.verify_hold(%s)", (other,))} == {"unchanged"}
    assert db.scalar("select count(*) from privacy.ledger where restriction_id = %s and event = 'hold_digested'", (other,)) == 1
    with pytest.raises(psycopg.Error) as info:
        db.steward.execute("select privacy.prove_hold('00000000-0000-0000-0000-000000000000')")
    assert info.value.sqlstate == "PV002" and "unknown legal hold" in str(info.value)


def test_pyctl_hold_place_proves_and_hold_prove_completes_what_is_pending(db: Db, tmp_path: Path) -> None:
    result = cli(db, "hold", "place", "3", "--case", "C-9", "--reason", "custodian")
    assert result.exit_code == 0, result.output
    hold_id = result.stdout.strip()
    assert db.scalar("select count(*) from privacy.hold_digests where hold_id = %s", (hold_id,)) > 0
    pending = [str(db.scalar("select privacy.place_hold('customer', %s, 'C-9', 'custodian')", (k,), user="steward_user"))
               for k in ("1", "2")]
    result = cli(db, "hold", "prove", "--all")
    assert result.exit_code == 0, result.output
    assert "proved 2 hold(s)" in result.stderr
    assert db.scalar("select count(distinct hold_id) from privacy.hold_digests where hold_id = any(%s::uuid[])", (pending,)) == 2
    assert cli(db, "hold", "prove").exit_code == 2  # neither an id nor --all
    unknown = cli(db, "hold", "prove", "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 1 and "unknown legal hold" in unknown.stderr and "in force" not in unknown.stderr


def test_one_unknown_key_refuses_the_whole_list_naming_every_unknown(db: Db) -> None:
    before = record(db)
    with pytest.raises(psycopg.Error) as info:
        db.steward.execute("select * from privacy.place_holds('customer', %s, 'C-1', 'custodians')", (["1", "99", "2", "x", "98"],))
    assert info.value.sqlstate == "PV002"  # the toolkit's "bad input" refusal
    message = str(info.value)
    assert "3 of 5 keys are not known subjects" in message and all(k in message for k in ("99", "x", "98"))
    with pytest.raises(psycopg.Error, match="2 of 3 keys") as info:
        db.steward.execute("select * from privacy.place_restrictions('customer', %s, 'accuracy', 'r')", (["1", "97", "96"],))
    assert info.value.sqlstate == "PV002"
    assert record(db) == before
    with pytest.raises(psycopg.Error, match="no subject key given"):
        db.steward.execute("select * from privacy.place_holds('customer', '{}', 'C-1', 'custodians')")


def test_cli_from_file_places_each_key_or_none(db: Db, tmp_path: Path) -> None:
    keys = tmp_path / "custodians.txt"
    keys.write_text("# named by counsel on 2026-12-01\n1\n\n3\n")
    result = cli(db, "hold", "place", "--from-file", str(keys), "--case", "2026-CV-118", "--reason", "custodians")
    assert result.exit_code == 0, result.output
    placed = dict(line.split("\t") for line in result.stdout.splitlines())
    assert set(placed) == {"1", "3"}
    assert db.scalar("select count(*) from privacy.processing_restrictions where kind = 'legal_hold' and released_at is null") == 2
    objections = tmp_path / "objections.txt"
    objections.write_text("2\n4\n")
    result = cli(db, "--json", "restrict", "place", "--from-file", str(objections), "--basis", "objection", "--reason", "Art. 21")
    assert result.exit_code == 0, result.output
    assert db.ids("customers", "app") == [1, 3]
    before = record(db)
    bad = tmp_path / "bad.txt"
    bad.write_text("2\n404\n")
    result = cli(db, "hold", "place", "--from-file", str(bad), "--case", "C", "--reason", "r")
    assert result.exit_code == 1 and "404" in result.stderr and "nothing was placed" in result.stderr
    assert record(db) == before
    both = cli(db, "hold", "place", "1", "--from-file", str(keys), "--case", "C", "--reason", "r")
    assert both.exit_code == 2 and "one subject KEY, or --from-file" in both.output
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert "holds no key" in cli(db, "hold", "place", "--from-file", str(empty), "--case", "C", "--reason", "r").stderr


def test_a_large_placement_shows_progress_on_a_terminal(db: Db) -> None:
    """On a terminal, pyctl shows the time a placement has taken and the server's progress."""
    import os
    import pty
    import subprocess
    import sys

    db.su.execute("insert into activity_log (customer_id, what) select 1, 'visit ' || g from generate_series(1, 12000) g")
    primary, secondary = pty.openpty()
    pyctl = Path(sys.executable).with_name("pyctl")
    proc = subprocess.run([str(pyctl), "--dsn", db.dsn("steward_user"), "hold", "place", "1", "--case", "C-7", "--reason", "r"],
                          stdout=subprocess.PIPE, stderr=secondary, text=True, check=False, timeout=120)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.returncode == 0, shown
    assert "12001 rows of public.activity_log marked and digested" in shown.decode(), shown


def seq_scans(db: Db) -> dict[str, int]:
    return {r[0]: r[1] for r in db.su.execute("select relname, seq_scan from pg_stat_user_tables where relname in ('visits', 'visit_pages')")}


def test_placement_reads_a_via_table_without_an_index_once(db: Db) -> None:
    # Two levels of one-column via paths, neither path column indexed (pyctl protect --no-index).
    db.owner.execute("""
        create table visits (id integer primary key, customer_id integer not null references customers (id), at date not null);
        create table visit_pages (id integer primary key, visit_id integer not null references visits (id), page text not null);
        insert into visits select g, case when g <= 3000 then 3 else 1 + g % 2 end, date '2026-01-01' from generate_series(1, 20000) g;
        insert into visit_pages select g, 1 + (g - 1) % 20000, 'p' || g from generate_series(1, 40000) g;
        grant select, insert, update, delete on visits, visit_pages to app;
        select privacy.protect_via('public.visits', 'customer_id');
        select privacy.protect_via('public.visit_pages', 'visit_id');
        analyze visits, visit_pages;
    """)
    assert db.scalar("select privacy.marked_in_bulk(id) from privacy.protected_tables where table_name = 'visit_pages'")
    before = seq_scans(db)
    # (pg_stat_force_next_flush: the statement's counts reach pg_stat_user_tables as it ends)
    hold_id = db.scalar("select privacy.place_hold('customer', '3', 'C-1', 'preserve') from pg_stat_force_next_flush()", user="steward_user")
    after = seq_scans(db)
    # Each table read a few times (marking once; whether it now holds held rows, for its
    # guard against DROP, until the first is found), not once per parent row (3,000 visits).
    assert all(after[t] - before[t] <= 3 for t in after), (before, after)
    assert db.scalar("select count(*) from visit_pages p join visits v on v.id = p.visit_id "
                     "where v.customer_id = 3 and p.privacy_mark & 1 <> 0") == 6000
    assert db.scalar("select count(*) from visit_pages where privacy_mark <> 0") == 6000
    refused(db.app, "delete from visit_pages where visit_id = 1")
    assert db.scalar("select count(*) from visit_pages where visit_id = 1") == 2
    before = seq_scans(db)
    db.steward.execute("select privacy.release_hold(%s, 'settled', 'order 1') from pg_stat_force_next_flush()", (hold_id,))
    after = seq_scans(db)
    # The release computed the pending proof (one more read of each) and unmarked them.
    assert all(after[t] - before[t] <= 4 for t in after), (before, after)
    assert db.scalar("select count(*) from visit_pages where privacy_mark <> 0") == 0
    # A via table of a parent whose key has two columns is marked by the triggers, as before.
    assert not db.scalar("select privacy.marked_in_bulk(id) from privacy.protected_tables where table_name = 'order_items'")


def test_only_the_toolkit_writes_the_marker_that_turns_propagation_off(db: Db) -> None:
    hold(db, 3)
    order = db.scalar("select min(id) from orders where customer_id = 1")
    assert order is not None
    for conn in (db.app, db.steward):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                conn.execute("insert into privacy.marking_in_progress values (pg_current_xact_id())")
                # (were it written, moving an order to the held customer would leave its items unmarked)
                conn.execute("update orders set customer_id = 3 where id = %s", (order,))
    assert db.scalar("select count(*) from privacy.marking_in_progress") == 0
    assert db.scalar("select customer_id from orders where id = %s", (order,)) == 1
