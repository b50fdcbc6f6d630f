"""Many holds or restrictions at once (a custodian list): one transaction, all or none."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import Db, refused
from pyctl.cli import main


def cli(db: Db, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def record(db: Db) -> tuple[object, ...]:
    return tuple(db.su.execute("select (select count(*) from privacy.ledger), (select count(*) from privacy.processing_restrictions), "
                               "(select count(*) from privacy.subject_marks where mark <> 0)").fetchone() or ())


def test_place_holds_places_one_hold_per_subject_with_its_proof(db: Db) -> None:
    ledger_before = db.scalar("select count(*) from privacy.ledger")
    rows = db.steward.execute("select subject_key, hold_id from privacy.place_holds('customer', %s, '2026-CV-118', 'custodians')",
                              (["3", "1", "03", "3"],)).fetchall()
    assert [r[0] for r in rows] == ["1", "3"]  # canonical keys, each once
    assert db.scalar("select count(*) from privacy.hold_digests where hold_id = any(%s)", ([r[1] for r in rows],)) > 0
    events = [r[0] for r in db.su.execute("select event from privacy.ledger where seq > %s order by seq", (ledger_before,))]
    assert events == ["hold_placed", "hold_digested", "hold_placed", "hold_digested"]
    for key in (1, 3):
        refused(db.app, "delete from orders where customer_id = %s", (key,))
    assert db.scalar("select count(*) from orders where customer_id in (1, 3)") == 4


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
