"""Preservation export (issue 5): one consistent snapshot, a verifiable manifest, the ledger."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from conftest import SHOP_SQL, Db, hold, restrict
from pyctl import export as exporter
from pyctl.cli import main
from pyctl.db import PyctlError
from pyctl.export import command as export_cli

PYCTL = str(Path(sys.executable).with_name("pyctl"))
FORMATS = ["csv", "json", "ndjson", "sql"]

# The oracle: each protected table's rows of customer %(k)s, written by hand (not by the toolkit).
SUBJECT_ROWS = {
    "public.customers": "select * from public.customers where id = %(k)s",
    "public.addresses": "select * from public.addresses where id in (select address_id from public.customers where id = %(k)s)",
    "public.orders": "select * from public.orders where customer_id = %(k)s",
    "public.order_items": "select * from public.order_items where (order_id, placed_on) in "
                          "(select id, placed_on from public.orders where customer_id = %(k)s)",
    "public.activity_log": "select * from public.activity_log where customer_id = %(k)s",
    '"crm data"."Support; Tickets"': 'select * from "crm data"."Support; Tickets" where "Customer ""Ref""" = %(k)s',
}

# Values that break naive writers: line breaks, quotes, backslashes, the control characters
# the exporter uses to frame rows, NULL next to '', json with line breaks, bytea, arrays, NaN.
TRICKY_COLUMNS = ("alter table public.activity_log add column detail json, add column blob bytea, add column tags text[], "
                  "add column amount numeric, add column ratio double precision")
TRICKY_ROWS = r"""
insert into public.activity_log (customer_id, happened_at, what, detail, blob, tags, amount, ratio) values
 (2, '2026-01-02 03:04:05.678901+00', E'line one\nline two\r\n\ttab "double" ''single'' back\\slash \x1e\x1f \x01 ü 😀',
  E'{\n  "a": [1, 2],\n  "b": "x\\ny"\n}', '\x00ff10', '{"a b", NULL, "c,d", "e\"f"}', 12345678901234567890.123456789, 0.1),
 (2, '2026-01-03 00:00:00+00', '', null, '', '{}', null, 'NaN'),
 (2, '2026-01-04 00:00:00+00', E'insert into x values (1);\n{"not": "a row"}\n\\.', '[]', null, null, -0.5, 1e-300);
update public.customers set name = E'Ben, "B" \\ O''Neil\n2nd line' where id = 2;
update "crm data"."Support; Tickets" set body = E'\\N \\x1f\r' where "Ticket Id" = 2;
"""


def cli(db: Db, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def manifest(path: Path) -> dict[str, Any]:
    if path.is_file():
        with zipfile.ZipFile(path) as z:
            return dict(json.loads(z.read("manifest.json")))
    return dict(json.loads((path / "manifest.json").read_text()))


def files_by_table(path: Path) -> dict[str, dict[str, Any]]:
    return {f["table"]: f for f in manifest(path)["files"]}


def oracle(conn: psycopg.Connection, table: str, key: int) -> list[str]:
    query = "select (to_jsonb(t) - 'privacy_mark')::text from (" + SUBJECT_ROWS[table] + ") t order by 1"
    return [r[0] for r in conn.execute(query, {"k": key}).fetchall()]


def exports_in_ledger(db: Db) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in db.su.execute(  # type: ignore[misc]
        "select subject_type, subject_key, payload->>'manifest_sha256' from privacy.ledger "
        "where event = 'subject_exported' order by seq").fetchall()]


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def copy_db(empty_db: Db) -> Db:
    """An empty copy of the shop's schema (no toolkit) with the reference data order_items points at."""
    ddl = SHOP_SQL.split("\ninsert into ", 1)[0]
    empty_db.owner.execute(ddl)
    empty_db.owner.execute("insert into products values (1, 'tea'), (2, 'mug')")
    return empty_db


def load(copy: Db, fmt: str, path: Path, entry: dict[str, Any]) -> None:
    """Load one exported file into the copy, the way each format is meant to be loaded."""
    conn = copy.owner
    table = sql.SQL(entry["table"])  # as the manifest names it: quoted where needed
    data = path.read_bytes()
    if fmt == "csv":
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in entry["columns"])
        with conn.cursor() as cur, cur.copy(sql.SQL("copy {} ({}) from stdin (format csv, header true)").format(table, columns)) as cp:
            cp.write(data)
    elif fmt == "json":
        conn.execute(sql.SQL("insert into {t} select * from pg_catalog.json_populate_recordset(null::{t}, %s::json)").format(t=table),
                     (data.decode(),))
    elif fmt == "ndjson":
        for line in data.decode().splitlines():
            conn.execute(sql.SQL("insert into {t} select * from pg_catalog.json_populate_record(null::{t}, %s::json)").format(t=table),
                         (line,))
    else:
        proc = subprocess.run([copy.cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", copy.dsn(), "-f", str(path)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


# -- formats, counts, the manifest ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips(db: Db, copy_db: Db, tmp_path: Path, fmt: str) -> None:
    for conn in (db.owner, copy_db.owner):
        conn.execute(TRICKY_COLUMNS)
    db.owner.execute(TRICKY_ROWS)
    out = tmp_path / "customer-2"
    result = cli(db, "export", "2", "--out", str(out), "--format", fmt)
    assert result.exit_code == 0, result.stderr
    m = manifest(out)
    assert m["format"] == fmt and [f["name"] for f in m["files"]] == sorted(f["name"] for f in m["files"])
    for entry in m["files"]:  # in name order: referenced tables first
        load(copy_db, fmt, out / entry["name"], entry)
    for table in SUBJECT_ROWS:
        expected = oracle(db.su, table, 2)
        assert expected, table
        got = [r[0] for r in copy_db.owner.execute(
            sql.SQL("select to_jsonb(t)::text from {} t order by 1").format(sql.SQL(table))).fetchall()]
        assert got == expected, table
        assert files_by_table(out)[table]["rows"] == len(expected)


def test_the_sql_format_leaves_generated_columns_to_the_copy(db: Db, empty_db: Db, tmp_path: Path) -> None:
    ddl = ("create table public.notes (id integer generated always as identity primary key, "
           "customer_id integer not null references public.customers (id), body text not null, "
           "body_length integer generated always as (length(body)) stored)")
    db.owner.execute(ddl)
    db.owner.execute("select privacy.protect_via('public.notes', 'customer_id')")
    db.owner.execute("insert into public.notes (customer_id, body) values (3, 'first'), (3, E'second\\nline'), (1, 'other')")
    out = tmp_path / "x"
    assert cli(db, "export", "3", "--out", str(out), "--format", "sql").exit_code == 0
    empty_db.owner.execute(SHOP_SQL.split("\ninsert into ", 1)[0] + ";" + ddl)
    empty_db.owner.execute("insert into products values (1, 'tea'), (2, 'mug')")
    for entry in manifest(out)["files"]:
        load(empty_db, "sql", out / entry["name"], entry)
    assert empty_db.owner.execute("select id, customer_id, body, body_length from public.notes order by id").fetchall() == \
        db.owner.execute("select id, customer_id, body, body_length from public.notes where customer_id = 3 order by id").fetchall()


def test_the_exporters_search_path_does_not_reach_the_composed_queries(db: Db, tmp_path: Path) -> None:
    db.su.execute("create schema evil; create function evil.matches(text, text) returns boolean language sql as 'select true';"
                  "create operator evil.~ (leftarg = text, rightarg = text, function = evil.matches);"
                  "grant usage on schema evil to steward_user")
    db.su.execute(f"alter role steward_user in database {db.name} set search_path = evil, pg_catalog, public")
    out = tmp_path / "c1"
    assert cli(db, "export", "1", "--out", str(out), "--format", "sql").exit_code == 0
    assert "values ('1', 'Ada', '1');" in (out / files_by_table(out)["public.customers"]["name"]).read_text()


@pytest.mark.parametrize("user", ["steward_user", "shop_owner", "postgres"])
def test_counts_equal_the_database_and_the_manifest_says_where_from(db: Db, tmp_path: Path, user: str) -> None:
    hold(db, 1)
    restrict(db, 3)
    db.owner.execute("insert into public.activity_log (customer_id, what) select 3, 'x' || g from generate_series(1, 500) g")
    for key in (1, 2, 3, 4):
        out = tmp_path / f"{user}-{key}"
        result = cli(db, "export", str(key), "--out", str(out), user=user)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"{out}\n"
        m = manifest(out)
        counts = {t: len(oracle(db.su, t, key)) for t in SUBJECT_ROWS}
        assert {f["table"]: f["rows"] for f in m["files"]} == counts
        assert m["total"]["rows"] == sum(counts.values())
        assert m["subject"]["type"] == "customer" and m["subject"]["key"] == str(key)
        assert m["subject"]["found"] and m["subject"]["in_root_table"] and not m["empty"]
        assert [h["case"] for h in m["subject"]["legal_holds"]] == (["2026-CV-118"] if key == 1 else [])
        for h in m["subject"]["legal_holds"]:  # the hold's preservation proof, tying the export to its start
            recorded = db.su.execute("select privacy.qualified(table_schema, table_name), row_count, digest from privacy.hold_digests "
                                     "where hold_id = %s order by 1", (h["id"],)).fetchall()
            assert [(d["table"], d["rows"], d["sha256"]) for d in h["digests_at_start"]] == [tuple(r) for r in recorded]
            assert recorded
        assert len(m["subject"]["restrictions"]) == (1 if key == 3 else 0)
        assert m["snapshot"]["isolation"] == "repeatable read" and m["snapshot"]["read_only"] is True
        assert m["source"] == {
            "system_identifier": db.scalar("select system_identifier::text from pg_control_system()"),
            "database": db.name,
            "server_version": db.scalar("show server_version"),
            "server_version_num": int(db.scalar("show server_version_num")),
        }
        assert m["toolkit"] == {"pyctl": exporter.__version__, "installed": exporter.__version__}
        assert m["exported_by"]["session_role"] == user
        for f in m["files"]:
            data = (out / f["name"]).read_bytes()
            assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_manifest_digest_is_in_the_ledger_and_the_ledger_head_in_the_manifest(db: Db, tmp_path: Path) -> None:
    hold(db, 1)
    head = db.scalar("select max(seq) from privacy.ledger")
    head_hash = db.scalar("select encode(hash, 'hex') from privacy.ledger where seq = %s", (head,))
    out = tmp_path / "c1"
    result = cli(db, "--json", "export", "1", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    digest = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    [one] = data["exports"]
    assert one["manifest_sha256"] == digest and one["path"] == str(out)
    assert manifest(out)["snapshot"]["ledger_head"] == {"seq": head, "hash": head_hash}
    assert exports_in_ledger(db) == [("customer", "1", digest)]
    entry = db.su.execute("select seq, session_role, payload from privacy.ledger where event = 'subject_exported'").fetchone()
    assert entry is not None and entry[0] == one["ledger_seq"] == head + 1 and entry[1] == "steward_user"
    assert entry[2]["sha256sums_sha256"] == hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
    assert entry[2]["rows"] == one["rows"] and entry[2]["format"] == "csv"
    assert db.su.execute("select * from privacy.verify_ledger()").fetchall() == []
    assert "subject_exported" in cli(db, "history", "1").stdout
    verified = cli(db, "export", "verify", str(out), "--ledger")
    assert verified.exit_code == 0, verified.stderr
    assert f"ledger entry {one['ledger_seq']}" in verified.stdout


def test_a_restricted_role_cannot_call_the_export_functions(db: Db) -> None:
    for call in ("select privacy.subject_rows_sql(1, 'customer', '1')", "select privacy.subject_row_count(1, 'customer', '1')",
                 "select privacy.record_export('customer', '1', repeat('a', 64), '{}')", "select privacy.subject_key('customer', '1')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.app.execute(call)
    query = db.scalar("select privacy.subject_rows_sql(id, 'customer', '002') from privacy.protected_tables "
                      "where table_name = 'order_items'", user="steward_user")
    assert "'2'::integer" in query and "privacy_mark" not in query
    assert sorted(r[0] for r in db.steward.execute(query).fetchall()) == [200, 210]
    with pytest.raises(psycopg.Error, match="not a sha256 digest"):
        db.steward.execute("select privacy.record_export('customer', '1', 'abc', '{}')")


# -- one snapshot ------------------------------------------------------------------------------------


def test_a_concurrent_update_does_not_make_the_files_disagree(db: Db, tmp_path: Path) -> None:
    before = {t: oracle(db.su, t, 1) for t in SUBJECT_ROWS}
    writer = db.connect("shop_owner")
    changed: list[str] = []

    def meanwhile(table: str) -> None:
        # Each change commits while the export is between two tables.
        if table == "public.activity_log":
            writer.execute("insert into public.orders values (12, 1, '2026-05-05', 120)")
            writer.execute("insert into public.order_items values (120, 12, '2026-05-05', 1, 9)")
            writer.execute("update public.customers set name = 'Ada (renamed)' where id = 1")
            changed.append(table)
        elif table == "public.orders":
            # Order 10 and its item move to customer 2: a reader without one snapshot would now
            # miss item 100 although it wrote order 10.
            writer.execute("update public.orders set customer_id = 2 where id = 10")
            writer.execute("delete from public.activity_log where customer_id = 1")
            changed.append(table)

    out = tmp_path / "c1"
    exporter.export(db.dsn("steward_user"), out, key="1", after_table=meanwhile)
    assert changed == ["public.activity_log", "public.orders"]
    assert db.scalar("select customer_id from public.orders where id = 10") == 2  # the changes did happen
    files = files_by_table(out)
    assert {t: f["rows"] for t, f in files.items()} == {t: len(rows) for t, rows in before.items()}
    orders = (out / files["public.orders"]["name"]).read_text().splitlines()[1:]
    items = (out / files["public.order_items"]["name"]).read_text().splitlines()[1:]
    order_keys = {(line.split(",")[0], line.split(",")[2]) for line in orders}
    assert order_keys == {("10", "2026-01-10"), ("11", "2025-05-01")}
    assert {(line.split(",")[1], line.split(",")[2]) for line in items} == order_keys
    assert "Ada,1" in (out / files["public.customers"]["name"]).read_text()
    assert files["public.activity_log"]["rows"] == 1
    assert cli(db, "export", "verify", str(out)).exit_code == 0


# -- who may export --------------------------------------------------------------------------------------


def test_a_restricted_role_gets_a_clear_refusal_not_a_partial_export(db: Db, tmp_path: Path) -> None:
    restrict(db, 2)
    for key in ("2", "1"):
        out = tmp_path / f"app-{key}"
        result = cli(db, "export", key, "--out", str(out), user="app")
        assert_one_error_line(result, "export refused: app is neither a steward nor the toolkit's owner", "silently miss")
        assert not out.exists()
    assert leftovers(tmp_path) == []
    assert exports_in_ledger(db) == []
    # Stewards and the owner get every row, the restricted ones included.
    for user in ("steward_user", "shop_owner"):
        out = tmp_path / f"{user}-2"
        assert cli(db, "export", "2", "--out", str(out), user=user).exit_code == 0
        assert {t: f["rows"] for t, f in files_by_table(out).items()} == {t: len(oracle(db.su, t, 2)) for t in SUBJECT_ROWS}


def test_row_level_security_of_the_applications_own_is_refused_not_exported_around(db: Db, tmp_path: Path) -> None:
    db.owner.execute("create policy big_orders on public.orders as restrictive for select to public using (total < 200)")
    out = tmp_path / "c2"
    result = cli(db, "export", "2", "--out", str(out))
    assert_one_error_line(result, "export refused: row-level security hides 2 of the 2 rows of customer/2 in public.orders")
    assert leftovers(tmp_path) == [] and exports_in_ledger(db) == []
    assert cli(db, "export", "1", "--out", str(tmp_path / "c1")).exit_code == 0  # nothing hidden: exported
    owner = cli(db, "export", "2", "--out", str(out), user="shop_owner")  # the owner is not under the policy
    assert owner.exit_code == 0 and files_by_table(out)["public.order_items"]["rows"] == 2


# -- unknown subjects and bad keys ---------------------------------------------------------------------------


def test_an_unknown_subject_is_an_error_unless_an_empty_export_is_asked_for(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "c999"
    result = cli(db, "export", "999", "--out", str(out))
    assert_one_error_line(result, "unknown subject customer/999: no row in any protected table", "--allow-empty")
    assert leftovers(tmp_path) == [] and exports_in_ledger(db) == []
    result = cli(db, "export", "999", "--out", str(out), "--allow-empty")
    assert result.exit_code == 0, result.stderr
    assert "empty" in result.stderr
    m = manifest(out)
    assert m["empty"] is True and m["subject"]["found"] is False and m["subject"]["in_root_table"] is False
    assert len(m["files"]) == 6 and all(f["rows"] == 0 for f in m["files"])
    assert cli(db, "export", "verify", str(out)).exit_code == 0
    assert [e[:2] for e in exports_in_ledger(db)] == [("customer", "999")]


def test_rows_left_behind_by_a_deleted_subject_are_exported(db: Db, tmp_path: Path) -> None:
    db.owner.execute("insert into public.activity_log (customer_id, what) values (77, 'orphan')")
    out = tmp_path / "c77"
    assert cli(db, "export", "77", "--out", str(out)).exit_code == 0
    m = manifest(out)
    assert m["subject"]["found"] is True and m["subject"]["in_root_table"] is False
    assert files_by_table(out)["public.activity_log"]["rows"] == 1 and m["total"]["rows"] == 1


@pytest.mark.parametrize("args,message", [
    (["abc"], "'abc' is not a valid customer key (integer)"),
    (["1", "--subject", "supplier"], "unknown subject type 'supplier'"),
])
def test_bad_subjects_are_one_clear_line(db: Db, tmp_path: Path, args: list[str], message: str) -> None:
    assert_one_error_line(cli(db, "export", *args, "--out", str(tmp_path / "x")), message)
    assert leftovers(tmp_path) == []


def test_the_key_is_canonical(db: Db, tmp_path: Path) -> None:
    assert cli(db, "export", "007", "--subject", "customer", "--out", str(tmp_path / "x"), "--allow-empty").exit_code == 0
    assert manifest(tmp_path / "x")["subject"]["key"] == "7"


# -- verify ------------------------------------------------------------------------------------------------


@pytest.fixture
def exported(db: Db, tmp_path: Path) -> Path:
    out = tmp_path / "c2"
    assert cli(db, "export", "2", "--out", str(out)).exit_code == 0
    return out


def test_verify_passes_and_so_does_sha256sum(db: Db, exported: Path) -> None:
    result = cli(db, "export", "verify", str(exported))
    assert result.exit_code == 0 and result.stdout.startswith("export verifies: customer/2, 6 files")
    data = json.loads(cli(db, "--json", "export", "verify", str(exported)).stdout)
    assert data["ok"] is True and data["problems"] == [] and data["rows"] == manifest(exported)["total"]["rows"]
    if shutil.which("sha256sum"):
        proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=exported, capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and proc.stdout.count(": OK") == 7, proc.stdout


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,problem", [
    ("byte", "04-public.orders.csv: sha256"),
    ("remove", "missing file 04-public.orders.csv"),
    ("add", "extra file notes.txt"),
    ("add-dir", "extra directory more"),
    ("manifest", "SHA256SUMS does not match the manifest"),
    ("sums", "SHA256SUMS does not match the manifest"),
    ("remove-manifest", "is not a pyctl export: manifest.json is missing"),
])
def test_verify_fails_on_a_changed_missing_or_extra_file(db: Db, exported: Path, damage: str, problem: str) -> None:
    orders = exported / "04-public.orders.csv"
    if damage == "byte":
        flip_one_byte(orders)
    elif damage == "remove":
        orders.unlink()
    elif damage == "add":
        (exported / "notes.txt").write_text("hello\n")
    elif damage == "add-dir":
        (exported / "more").mkdir()
    elif damage == "manifest":
        m = manifest(exported)
        m["files"][3]["rows"] += 1
        (exported / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    elif damage == "sums":
        (exported / "SHA256SUMS").write_text((exported / "SHA256SUMS").read_text().replace("04-public.orders.csv", "04-public.orderz.csv"))
    else:
        (exported / "manifest.json").unlink()
    result = cli(db, "export", "verify", str(exported))
    assert_one_error_line(result, problem if damage in ("byte", "remove-manifest") else "does not verify")
    if damage == "byte" and shutil.which("sha256sum"):
        proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=exported, capture_output=True, text=True, check=False)
        assert proc.returncode != 0 and "04-public.orders.csv: FAILED" in proc.stdout
    if damage != "remove-manifest":
        data = json.loads(cli(db, "--json", "export", "verify", str(exported)).stdout)
        assert data["ok"] is False and any(problem in p for p in data["problems"])


def test_verify_of_a_missing_path_or_a_foreign_ledger(db: Db, exported: Path, tmp_path: Path) -> None:
    assert_one_error_line(cli(db, "export", "verify", str(tmp_path / "nothing")), "no export at")
    db.su.execute("update privacy.settings set value = '1:1:1' where name = 'database_identity'")
    result = cli(db, "export", "verify", str(exported), "--ledger")
    assert_one_error_line(result, "this database is 1")


def test_zip_exports_hold_the_same_files_and_verify(db: Db, exported: Path, tmp_path: Path) -> None:
    target = tmp_path / "c2.zip"
    result = cli(db, "export", "2", "--zip", "--out", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{target}\n"
    with zipfile.ZipFile(target) as z:
        names = z.namelist()
        assert names == [f["name"] for f in manifest(exported)["files"]] + ["manifest.json", "SHA256SUMS"]
        for f in manifest(exported)["files"]:
            assert hashlib.sha256(z.read(f["name"])).hexdigest() == f["sha256"]  # same snapshot data, same bytes
    assert cli(db, "export", "verify", str(target)).exit_code == 0
    assert cli(db, "export", "verify", str(target), "--ledger").exit_code == 0
    # Re-zipped with one byte changed (the CRCs then match): the manifest catches it.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(target) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == names[3]:
                data = data.replace(b"200", b"201")
            dst.writestr(name, data)
    assert_one_error_line(cli(db, "export", "verify", str(tampered)), "does not verify", f"{names[3]}: sha256")
    # One byte of the zip itself changed.
    flip_one_byte(target)
    assert cli(db, "export", "verify", str(target)).exit_code == 1


# -- --all-held ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True])
def test_all_held_exports_one_per_held_subject(db: Db, tmp_path: Path, as_zip: bool) -> None:
    hold(db, 3)
    hold(db, 1)
    hold(db, 1, case="2027-CV-9")  # two holds, one subject: one export
    restrict(db, 2)  # restricted, not held: not exported
    out = tmp_path / "held"
    result = cli(db, "export", "--all-held", "--out", str(out), *(["--zip"] if as_zip else []))
    assert result.exit_code == 0, result.stderr
    suffix = ".zip" if as_zip else ""
    assert leftovers(out) == [f"customer-1{suffix}", f"customer-3{suffix}"]
    assert result.stdout.splitlines() == [str(out / f"customer-1{suffix}"), str(out / f"customer-3{suffix}")]
    snapshots = set()
    for name in leftovers(out):
        assert cli(db, "export", "verify", str(out / name)).exit_code == 0
        snapshots.add(manifest(out / name)["snapshot"]["taken_at"])
    assert len(snapshots) == 1  # one snapshot for all
    assert [m["subject"]["legal_holds"].__len__() for m in (manifest(out / n) for n in leftovers(out))] == [2, 1]
    assert [e[:2] for e in exports_in_ledger(db)] == [("customer", "1"), ("customer", "3")]


def test_all_held_without_holds_is_an_empty_directory(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "held"
    result = cli(db, "export", "--all-held", "--out", str(out))
    assert result.exit_code == 0 and result.stdout == "" and "no subject is under an active legal hold" in result.stderr
    assert out.is_dir() and leftovers(out) == []


# -- bad input and failures: one line, nothing that looks finished ---------------------------------------------


def test_an_existing_non_empty_output_is_refused_unless_overwrite(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert_one_error_line(cli(db, "export", "1", "--out", str(out)), f"{out} exists and is not empty", "--overwrite")
    assert leftovers(out) == ["precious.txt"] and leftovers(tmp_path) == ["c1"]
    result = cli(db, "export", "1", "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert "precious.txt" not in leftovers(out) and "manifest.json" in leftovers(out)
    assert leftovers(tmp_path) == ["c1"]
    assert cli(db, "export", "verify", str(out)).exit_code == 0
    # A file in the way, for --zip: the same rule.
    target = tmp_path / "c1.zip"
    target.write_text("not mine")
    assert_one_error_line(cli(db, "export", "1", "--zip", "--out", str(target)), "exists and is not empty")
    assert target.read_text() == "not mine"
    assert cli(db, "export", "1", "--zip", "--out", str(target), "--overwrite").exit_code == 0
    assert zipfile.is_zipfile(target)
    # An empty directory is not in the way.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(db, "export", "1", "--out", str(empty)).exit_code == 0 and "manifest.json" in leftovers(empty)


def test_a_missing_parent_directory_is_one_clear_line(db: Db, tmp_path: Path) -> None:
    assert_one_error_line(cli(db, "export", "1", "--out", str(tmp_path / "no" / "such" / "x")), "directory", "does not exist")


@pytest.fixture
def unwritable_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="pyctl-export-"))
    os.chmod(base, 0o755)
    locked = base / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        yield locked
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_unwritable_directory_is_one_clear_line(db: Db, unwritable_dir: Path) -> None:
    out = unwritable_dir / "c1"
    args = [PYCTL, "--dsn", db.dsn("steward_user"), "export", "1", "--out", str(out)]
    # Permissions do not stop root: run the command as nobody then.
    demote = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
    proc = subprocess.run(args, capture_output=True, text=True, check=False, preexec_fn=demote, cwd="/")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"Error: cannot write to {unwritable_dir}: Permission denied") and proc.stderr.count("\n") == 1
    assert proc.stdout == "" and leftovers(unwritable_dir) == []
    assert exports_in_ledger(db) == []


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A tiny tmpfs, filled up (needs root or CAP_SYS_ADMIN)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError) as info:
                while True:
                    os.write(fd, b"x" * 4096)
            assert info.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_full_disk_is_one_clear_line_and_leaves_nothing(db: Db, full_disk: Path, as_zip: bool) -> None:
    out = full_disk / ("c1.zip" if as_zip else "c1")
    result = cli(db, "export", "1", "--out", str(out), *(["--zip"] if as_zip else []))
    assert_one_error_line(result, "cannot write", "No space left on device")
    assert leftovers(full_disk) == ["filler"]
    assert exports_in_ledger(db) == []


def test_a_failing_fsync_is_one_clear_line_and_leaves_nothing(db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(exporter.os, "fsync", no_space)
    result = cli(db, "export", "1", "--out", str(tmp_path / "c1"))
    assert_one_error_line(result, "cannot write", "No space left on device")
    assert leftovers(tmp_path) == [] and exports_in_ledger(db) == []


def test_an_interrupted_export_never_looks_complete(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    seen: list[list[str]] = []

    def interrupt(table: str) -> None:
        # While it runs: nothing at PATH, a hidden partial name beside it, no manifest yet.
        [partial] = leftovers(tmp_path)
        assert partial.startswith(".c1.partial-")
        seen.append(leftovers(tmp_path / partial))
        if table == "public.orders":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exporter.export(db.dsn("steward_user"), out, key="1", after_table=interrupt)
    assert seen and all("manifest.json" not in names for names in seen)
    assert leftovers(tmp_path) == [] and exports_in_ledger(db) == []


def test_sigterm_unwinds_like_ctrl_c_and_removes_the_partial_export(db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = exporter.export

    def killed_midway(*args: Any, **kwargs: Any) -> dict[str, Any]:
        def terminate(table: str) -> None:
            if table == "public.orders":
                os.kill(os.getpid(), signal.SIGTERM)

        return real(*args, **kwargs, after_table=terminate)

    monkeypatch.setattr(export_cli, "export", killed_midway)  # the function `pyctl export` calls
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["--dsn", db.dsn("steward_user"), "export", "1", "--out", str(tmp_path / "c1")])
    assert result.exit_code == 1 and "Aborted" in result.output
    assert leftovers(tmp_path) == [] and exports_in_ledger(db) == []
    assert signal.getsignal(signal.SIGTERM) == before


# -- the command line ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["export"],
    ["export", "1"],
    ["export", "1", "--out", "x", "--format", "xml"],
    ["export", "1", "--all-held", "--out", "x"],
    ["export", "verify"],
])
def test_usage_errors_exit_2(db: Db, tmp_path: Path, args: list[str]) -> None:
    result = cli(db, *args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "x").exists() and not Path("x").exists()


def test_help(db: Db) -> None:
    for args in (["export", "--help"], ["export", "-h"], ["export", "verify", "--help"], ["export", "1", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    group = CliRunner().invoke(main, ["export", "--help"]).stdout
    assert "pyctl export KEY --out PATH" in group and "--all-held" in group and "verify" in group


def test_stdout_is_only_the_path_and_the_progress_bar_needs_a_terminal(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "piped"
    proc = subprocess.run([PYCTL, "--dsn", db.dsn("steward_user"), "export", "1", "--out", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr and proc.stderr.startswith("exported customer/1: 6 files")
    # stderr on a terminal: a progress bar there, stdout unchanged.
    master, slave = pty.openpty()
    out = tmp_path / "tty"
    proc2 = subprocess.Popen([PYCTL, "--dsn", db.dsn("steward_user"), "export", "1", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    terminal = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    stdout, _ = proc2.communicate(timeout=30)
    os.close(master)
    assert proc2.returncode == 0
    assert stdout == f"{out}\n"
    assert b"[" in terminal and b"files" in terminal and b"\r" in terminal


def test_json_output(db: Db, tmp_path: Path) -> None:
    out = tmp_path / "c1"
    result = cli(db, "export", "1", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(out) and data["format"] == "csv" and data["zip"] is False
    [one] = data["exports"]
    assert one["subject_type"] == "customer" and one["key"] == "1" and one["files"] == 6 and one["rows"] == 8
    assert one["ledger_seq"] == db.scalar("select max(seq) from privacy.ledger")


def test_the_api_refuses_a_bad_format_or_both_key_and_all_held(db: Db, tmp_path: Path) -> None:
    with pytest.raises(PyctlError, match="unknown format"):
        exporter.export(db.dsn("steward_user"), tmp_path / "x", key="1", fmt="xml")
    with pytest.raises(PyctlError, match="KEY, or --all-held"):
        exporter.export(db.dsn("steward_user"), tmp_path / "x", key="1", all_held=True)
