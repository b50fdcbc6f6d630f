"""The command line: every command, its output, and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from conftest import Db, hold
from pyctl.cli import main
from pyctl.resources import migrations_dir

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
PYCTL = str(Path(sys.executable).with_name("pyctl"))

ALL_MIGRATIONS = sorted(p.stem for p in migrations_dir().glob("privacy-*.sql"))


def cli(db: Db, *args: str, user: str = "steward_user", env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], env=env, catch_exceptions=False)


def state(db: Db) -> tuple[object, ...]:
    """Everything the toolkit records, to prove a failed command changed nothing."""
    return tuple(db.su.execute(
        "select (select count(*) from privacy.ledger), (select count(*) from privacy.processing_restrictions), "
        "(select count(*) from privacy.protected_tables), (select count(*) from privacy.subject_types), "
        "(select count(*) from privacy.subject_marks), (select string_agg(released_at::text, ',') from privacy.processing_restrictions)"
    ).fetchone() or ())


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += all_commands(command, path + " ")
    return found


@pytest.mark.parametrize("path,command", all_commands(main), ids=[p for p, _ in all_commands(main)])
def test_every_command_has_help_and_is_in_the_readme(path: str, command: click.Command) -> None:
    assert command.help and command.help.strip(), f"pyctl {path} has no help text"
    if not isinstance(command, click.Group):
        assert "Example:" in command.help, f"pyctl {path} has no Example: block"
    assert f"pyctl {path}" in README, f"pyctl {path} is not documented in README.md"
    result = CliRunner().invoke(main, [*path.split(), "--help"])
    assert result.exit_code == 0


def test_every_sql_api_function_is_in_the_readme() -> None:
    sql = "\n".join(p.read_text() for p in sorted((Path(__file__).resolve().parent.parent / "sql").glob("*.sql")))
    public = ["add_subject_type", "protect", "protect_via", "protect_referenced_by", "unprotect", "place_hold",
              "release_hold", "place_restriction", "release_restriction", "is_held", "is_restricted",
              "verify_ledger", "enforcement_status", "refresh_enforcement"]
    for name in public:
        assert f"function privacy.{name}(" in sql
        assert f"privacy.{name}(" in README, f"privacy.{name}() is not documented in README.md"


def test_hold_place_prints_the_id_and_list_shows_it(db: Db) -> None:
    result = cli(db, "hold", "place", "3", "--case", "2026-CV-118", "--reason", "preserve")
    assert result.exit_code == 0, result.output
    hold_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", hold_id)
    listed = json.loads(cli(db, "--json", "hold", "list").stdout)
    assert [h["id"] for h in listed] == [hold_id]
    assert listed[0]["subject"] == "customer/3" and listed[0]["case"] == "2026-CV-118"
    assert hold_id in cli(db, "hold", "list").stdout
    assert cli(db, "hold", "release", hold_id, "--reason", "settled", "--reference", "order 7").exit_code == 0
    assert json.loads(cli(db, "hold", "list", "--json").stdout) == []
    assert db.scalar("select privacy.is_held('customer', 3)") is False


def test_restrict_place_list_release(db: Db) -> None:
    result = cli(db, "--json", "restrict", "place", "2", "--basis", "accuracy", "--reason", "contested")
    restriction_id = json.loads(result.stdout)["id"]
    assert db.ids("customers", "app") == [1, 3, 4]
    assert json.loads(cli(db, "--json", "restrict", "list").stdout)[0]["basis"] == "accuracy"
    refusal = cli(db, "restrict", "release", restriction_id)
    assert refusal.exit_code == 1 and "missing step(s) verify, notify, approve" in refusal.stderr
    assert db.ids("customers", "app") == [1, 3, 4]
    assert cli(db, "restrict", "verify", restriction_id, "--note", "checked").exit_code == 0
    assert cli(db, "restrict", "notify", restriction_id, "--via", "email").exit_code == 0
    assert cli(db, "restrict", "approve", restriction_id, "--evidence", "reply").exit_code == 0
    listed = json.loads(cli(db, "--json", "restrict", "list").stdout)
    assert listed[0]["state"] == "approved" and listed[0]["missing_steps"] == ""
    assert cli(db, "restrict", "release", restriction_id).exit_code == 0
    assert db.ids("customers", "app") == [1, 2, 3, 4]
    assert cli(db, "restrict", "release", "--force", restriction_id).exit_code == 2  # --force needs --reason


def test_status_and_tables(db: Db) -> None:
    hold(db, 3)
    data = json.loads(cli(db, "--json", "status", user="shop_owner").stdout)
    assert data["installed_version"] == data["toolkit_version"]
    assert data["migrations"] == ALL_MIGRATIONS
    assert data["active_holds"] == 1 and data["active_restrictions"] == 0
    assert {t["table"]: t["enforcement"] for t in data["tables"]}["public.orders"] == "installed"
    assert [s["subject_type"] for s in data["subject_types"]] == ["customer"]
    text = cli(db, "status", user="shop_owner").stdout
    assert "public.order_items" in text and "via order_id,placed_on -> public.orders(id,placed_on)" in text
    tables = json.loads(cli(db, "tables", "--json", user="shop_owner").stdout)
    assert len(tables) == 6


def test_protect_and_unprotect_from_the_cli(db: Db) -> None:
    db.owner.execute("create table notes (id int primary key, customer_id int references customers(id), body text)")
    result = cli(db, "protect", "notes", "--via", "customer_id", user="shop_owner")
    assert result.exit_code == 0, result.output
    assert "protected public.notes" in result.stderr
    assert cli(db, "unprotect", "notes", user="shop_owner").exit_code == 0
    assert db.scalar("select count(*) from privacy.protected_tables where table_name = 'notes'") == 0


def test_protect_warns_about_views_that_would_hand_out_restricted_rows(db: Db) -> None:
    db.owner.execute("create table notes (id int primary key, customer_id int references customers(id), body text)")
    db.owner.execute("create view recent_notes as select * from notes; grant select on recent_notes to app")
    result = cli(db, "protect", "notes", "--via", "customer_id", user="shop_owner")
    assert result.exit_code == 0
    assert "warning: view public.recent_notes reads public.notes with its owner's rights" in result.stderr
    assert "ALTER VIEW public.recent_notes SET (security_invoker = on)" in result.stderr


def test_subject_add_from_the_cli(empty_db: Db) -> None:
    empty_db.owner.execute("create table members (member_no text primary key, name text)")
    assert CliRunner().invoke(main, ["--dsn", empty_db.dsn(), "install"]).exit_code == 0
    result = CliRunner().invoke(main, ["--dsn", empty_db.dsn(), "subject", "add", "member", "--table", "members",
                                       "--key", "member_no"])
    assert result.exit_code == 0, result.output
    listed = json.loads(CliRunner().invoke(main, ["--dsn", empty_db.dsn(), "--json", "subject", "list"]).stdout)
    assert listed == [{"subject_type": "member", "root_table": "public.members", "key_column": "member_no",
                       "key_type": "text"}]


def test_roles(db: Db) -> None:
    result = cli(db, "roles", "create-app", "billing_app", user="shop_owner")
    assert result.exit_code == 0, result.output
    password = result.stdout.strip()
    assert len(password) >= 20
    checked = cli(db, "roles", "check", "billing_app")
    assert checked.exit_code == 0, checked.output
    import psycopg

    hold(db, 3)
    with psycopg.connect(db.cluster.dsn(db.name, user="billing_app")) as conn:
        with pytest.raises(psycopg.Error, match="privacy: DELETE"):
            conn.execute("delete from orders where id = 30")
    checked = cli(db, "--json", "roles", "check", "shop_owner")
    assert checked.exit_code == 1
    problems = json.loads(checked.stdout)["problems"]
    assert any("owner" in p for p in problems)
    assert cli(db, "roles", "check", "steward_user").exit_code == 1
    assert cli(db, "roles", "steward", "billing_app", user="shop_owner").exit_code == 0
    assert cli(db, "roles", "check", "billing_app").exit_code == 1


BAD_INPUT = [
    (["protect", "no_such_table", "--column", "x"], "does not exist"),
    (["protect", "products", "--column", "nope"], "has no column"),
    (["protect", "products", "--via", "name"], "is not a foreign key"),
    (["protect", "order_items", "--via", "product_id"], "which is not protected"),
    (["protect", "orders", "--column", "customer_id"], "already protected with another path"),
    (["protect", "products", "--subject", "martian", "--column", "id"], "unknown subject type"),
    (["protect", "products; drop table customers", "--column", "id"], "does not exist"),
    (["protect", "staff", "--referenced-by", "products.id"], "is not a foreign key"),
    (["unprotect", "customers"], "cannot be unprotected while the paths of"),
    (["unprotect", "products"], "is not protected"),
    (["subject", "add", "Bad Name", "--table", "products", "--key", "id"], "must be lowercase"),
    (["subject", "add", "product", "--table", "products", "--key", "name"], "must be a primary key or unique"),
    (["hold", "place", "999", "--case", "C", "--reason", "r"], "unknown subject customer/999"),
    (["hold", "place", "abc", "--case", "C", "--reason", "r"], "is not a valid customer key"),
    (["hold", "place", "3", "--case", " ", "--reason", "r"], "needs a case reference"),
    (["hold", "place", "3", "--case", "C", "--reason", "r", "--subject", "martian"], "unknown subject type"),
    (["hold", "release", "00000000-0000-0000-0000-000000000000", "--reason", "r", "--reference", "x"], "unknown legal hold"),
    (["hold", "release", "not-a-uuid", "--reason", "r", "--reference", "x"], "is not a hold or restriction id"),
    (["restrict", "verify", "00000000-0000-0000-0000-000000000000", "--note", "n"], "unknown restriction"),
    (["restrict", "approve", "00000000-0000-0000-0000-000000000000", "--evidence", " "], "unknown restriction"),
    (["recipient", "remove", "nobody"], "unknown recipient"),
    (["recipient", "ack", "nobody", "1"], "no notice of event 1"),
    (["restrict", "release", "00000000-0000-0000-0000-000000000000"], "unknown restriction"),
    (["roles", "check", "nobody"], "does not exist"),
    (["roles", "steward", "nobody"], "does not exist"),
    (["history", "3", "--subject", "martian"], None),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_changes_nothing(db: Db, args: list[str], message: str | None) -> None:
    before = state(db)
    result = cli(db, *args, user="shop_owner" if args[0] in ("protect", "unprotect", "subject", "roles") else "steward_user")
    if message is None:  # history of an unknown type: simply no events
        assert result.exit_code == 0
        return
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert state(db) == before


def test_usage_errors_exit_2(db: Db) -> None:
    for args in (["restrict", "place", "2", "--basis", "whim", "--reason", "r"],
                 ["protect", "orders"],
                 ["protect", "orders", "--column", "a", "--via", "b"],
                 ["hold", "place", "3"],
                 ["no-such-command"]):
        result = cli(db, *args)
        assert result.exit_code == 2, (args, result.output)


def test_missing_privileges_are_a_clear_error(db: Db) -> None:
    before = state(db)
    result = cli(db, "hold", "place", "3", "--case", "C", "--reason", "r", user="app")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: permission denied for")
    assert state(db) == before


@pytest.mark.parametrize("dsn,message", [
    ("host=127.0.0.1 port=1 dbname=x connect_timeout=2", "cannot connect"),
    ("this is not a dsn", "malformed connection string"),
    ("postgresql://[::1", "malformed connection string"),
])
def test_bad_dsn_is_a_clear_error(dsn: str, message: str) -> None:
    proc = subprocess.run([PYCTL, "--dsn", dsn, "status"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_path_that_does_not_lead_to_a_subject_is_refused(db: Db) -> None:
    db.owner.execute("create table reviews (id int primary key, product_id int references products (id))")
    before = state(db)
    result = cli(db, "protect", "reviews", "--via", "product_id", user="shop_owner")
    assert result.exit_code == 1
    assert "points at public.products, which is not protected" in result.stderr
    assert state(db) == before


def test_connection_from_database_url_and_pg_variables(db: Db) -> None:
    url = f"postgresql://steward_user@127.0.0.1:{db.cluster.port}/{db.name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    by_url = subprocess.run([PYCTL, "--json", "hold", "list"], env={**env, "DATABASE_URL": url},
                            capture_output=True, text=True, check=False)
    assert by_url.returncode == 0, by_url.stderr
    assert json.loads(by_url.stdout) == []
    by_pg = subprocess.run([PYCTL, "--json", "hold", "list"], capture_output=True, text=True, check=False,
                           env={**env, "PGHOST": "127.0.0.1", "PGPORT": str(db.cluster.port),
                                "PGUSER": "steward_user", "PGDATABASE": db.name})
    assert by_pg.returncode == 0, by_pg.stderr


def test_history_and_ledger_verify(db: Db) -> None:
    hold_id = hold(db, 3)
    events = json.loads(cli(db, "--json", "history", "3").stdout)
    assert [e["event"] for e in events] == ["hold_placed", "hold_digested"]
    assert events[0]["id"] == hold_id
    result = cli(db, "ledger", "verify")
    assert result.exit_code == 0 and "ledger verifies" in result.stdout


def test_create_app_sends_no_password_in_clear_and_it_logs_in(db: Db) -> None:
    """The server receives, and logs, only the SCRAM-SHA-256 verifier pyctl computed; the role logs in
    with the password (non-ASCII too: SASLprep); the toolkit's own schema is refused."""
    import psycopg

    hba = db.cluster.datadir / "pg_hba.conf"
    original = hba.read_text()
    db.su.execute("alter role shop_owner set log_statement = 'all'")
    try:
        hba.write_text("host all scram_app 127.0.0.1/32 scram-sha-256\nhost all scram_app2 127.0.0.1/32 scram-sha-256\n" + original)
        db.su.execute("select pg_reload_conf()")
        secret = "Pässwörd\u00a0with\u200bspaces-" + "x" * 8  # a no-break space and a zero-width one: SASLprep maps them
        result = cli(db, "roles", "create-app", "scram_app", "--password", secret, user="shop_owner")
        assert result.exit_code == 0, result.output
        generated = cli(db, "roles", "create-app", "scram_app2", user="shop_owner").stdout.strip()
        assert db.scalar("select rolpassword like 'SCRAM-SHA-256$4096:%' from pg_authid where rolname = 'scram_app'") is True
        for role, password in (("scram_app", secret), ("scram_app2", generated)):
            with psycopg.connect(db.cluster.dsn(db.name, user=role) + f" password='{password}'") as conn:
                assert conn.execute("select current_user").fetchone() == (role,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(db.cluster.dsn(db.name, user="scram_app") + " password='wrong'")
        log = db.cluster.log_text()
        assert "SCRAM-SHA-256$4096:" in log  # the statement was logged ...
        assert secret not in log and generated not in log and "Pässwörd" not in log  # ... without the password
    finally:
        hba.write_text(original)
        db.su.execute("select pg_reload_conf()")
        db.su.execute("alter role shop_owner reset log_statement")
    for schema in ("privacy", "pg_catalog", "information_schema"):
        refusal = cli(db, "roles", "create-app", "sneaky_app", "--schema", schema, user="shop_owner")
        assert refusal.exit_code == 1 and "is not the application's" in refusal.stderr
    assert db.scalar("select count(*) from pg_roles where rolname = 'sneaky_app'") == 0
    with pytest.raises(psycopg.Error, match="SCRAM-SHA-256 verifier"):
        db.owner.execute("select privacy.create_app_role('plain_app', 'hunter2', '{public}')")


def test_protect_creates_the_missing_index_on_the_path_or_warns_with_no_index(db: Db) -> None:
    db.owner.execute("create table visits (customer_id integer references customers (id), day date);"
                     "create table notes (customer_id integer references customers (id), body text);"
                     "insert into visits values (1, '2026-01-01'), (3, '2026-01-02')")
    indexes = "select count(*) from pg_index where indrelid = %s::regclass"
    assert db.scalar(indexes, ("visits",)) == 0
    result = cli(db, "protect", "visits", "--column", "customer_id", user="shop_owner")
    assert result.exit_code == 0, result.output
    assert "created the missing index: CREATE INDEX CONCURRENTLY ON public.visits (customer_id)" in result.stderr
    assert db.scalar("select count(*) from pg_index where indrelid = 'visits'::regclass and indisvalid") == 1
    assert not [r for r in db.su.execute("select object from privacy.doctor() where category = 'unindexed path'").fetchall()
                if r[0] == "public.visits"]
    result = cli(db, "protect", "notes", "--column", "customer_id", "--no-index", user="shop_owner")
    assert result.exit_code == 0 and "warning: no index on public.notes(customer_id)" in result.stderr
    assert db.scalar(indexes, ("notes",)) == 0
