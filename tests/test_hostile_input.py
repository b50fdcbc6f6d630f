"""The CLI under property-based testing (hypothesis): random and hostile arguments and
environments, driven in-process through click's CliRunner against a clone of the shop.

Whatever the input: never a traceback; exit 0, 1 or 2; on exit 1 exactly one line `Error: ...`
on stderr; and a command that fails changes nothing — not the toolkit's records, not the shop's
data, not the generated enforcement, not the cluster's roles.
"""

from __future__ import annotations

import contextlib
import os
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import APP_GRANTS, PROTECT_SQL, Db, hold, restrict
from pyctl import install
from pyctl.cli import main

# -- the commands --------------------------------------------------------------------------------


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from walk(command, path)


EXCLUDED = {("demo",)}  # starts PostgreSQL servers of its own
COMMANDS = [(path, command) for path, command in walk(main) if path not in EXCLUDED]
# Commands that read or write files named on the command line: their arguments stay inside
# the example's own temporary directory (no '/', no '..'), since the tests run as root.
FILE_COMMANDS = {("export",), ("export", "verify"), ("ledger", "export"), ("ledger", "import"), ("discover",), ("report",)}


def test_every_command_is_exercised() -> None:
    paths = {p for p, _ in COMMANDS}
    assert ("hold", "place") in paths and ("export", "verify") in paths and ("watch",) in paths and ("sync",) in paths
    assert len(paths) >= 40


# -- hostile values --------------------------------------------------------------------------------

SQL_FRAGMENTS = [
    "'; drop table customers; --", '"; drop table customers; --', "1; delete from privacy.ledger", "' or '1'='1",
    "3' or 1=1 --", "$$; drop schema privacy cascade; $$", "customers; truncate orders", "public.customers; drop table orders",
    '"crm data"."Support; Tickets"', "pg_catalog.pg_authid", "privacy.ledger", "x'); select pg_sleep(30); --",
    "E'\\x00'", "%s", "%(key)s", "{}", "{0}", "\\", "\\\\'", "'", '"', "`", "$1",
]
WEIRD_TEXT = [
    "", " ", "\t", "\n", "a\nb", "line\r\nbreak", "\x00", "a\x00b", "\udcff", "caf\udce9",  # NUL; bytes that are not UTF-8
    "é", "日本語", "🙂", "\u202e\u2066", "\ufeff", "\u0000\u0001\u001b[31m", "Ω" * 70, "x" * 5000, "-", "--", "-x", "--json",
    "-h", "--no-such-option", "--dsn", "--all", "--force", "--yes", "=", "a=b", "null", "true", "NaN",
]
NUMBERS = ["0", "-1", "1", "2", "3", "4", "42", "999", "1e309", "nan", "inf", "-inf", "2147483648", "9223372036854775808",
           "-9223372036854775809", "1" * 400, "0x10", "1_000", "٣", "3.0", " 3", "03"]
JSONS = ['{"a": 1}', "[1, 2]", '{"id": "3", "$where": "1"}', "[]", '"\\u0000"']
UUIDS = ["00000000-0000-0000-0000-000000000000", "7c1e0b6e-0b6e-4b6e-8b6e-7c1e0b6e0b6e", "{00000000-0000-0000-0000-000000000000}",
         "00000000000000000000000000000000", "urn:uuid:00000000-0000-0000-0000-000000000000"]
NAMES = ["customer", "customers", "public.customers", "orders", "public.orders_2026", "order_items", "addresses", "staff",
         "products", "activity_log", "id", "customer_id", "address_id", "order_id", "name", "public.customers.address_id",
         "app", "steward_user", "shop_owner", "postgres", "privacy_steward", "outsider", "pg_signal_backend",
         "accuracy", "unlawful", "legal-claims", "objection", "follower", "fork", "backup", "csv", "json", "ndjson", "sql",
         "crm", "staging", "public", "crm data", "privacy", "pg_catalog"]
DSN_LIKE = ["host=127.0.0.1 port=1 connect_timeout=1", "postgresql://[::1", "service=nope", "postgresql://u:secret@127.0.0.1:1/x",
            "NO_SUCH_VARIABLE", "HOME", "dbname='x", "host=/nonexistent port=5432", "sslmode=bogus", "options='-c x'"]
FILE_NAMES = ["out", "out.zip", "out.json", ".", "-", ".hidden", "a b", "ü", "x" * 300, "existing", "file.txt", "empty",
              "\x00", "a\x00b", "\udcff", "--out", "a\nb"]


# Injected into plausible values: line breaks, a byte that is not UTF-8, NUL, quotes, format markers.
POISON = ["\n", "\r", "\u2028", "\x85", "\udcff", "\x00", "'", '"', ";", "\\", "%s", "{}", " ", "\t", "é", "--"]


@st.composite
def poisoned(draw: st.DrawFn, plausible: list[str]) -> str:
    text = draw(st.sampled_from(plausible))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(POISON)) + text[at:]


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SQL_FRAGMENTS + WEIRD_TEXT + NUMBERS + JSONS + UUIDS + NAMES + DSN_LIKE),
        poisoned(NAMES + NUMBERS[:8] + UUIDS[:2] + FILE_NAMES[:6]),
        st.text(max_size=24),
        st.text(alphabet=string.printable, max_size=40),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.uuids().map(str),
    )


def sandboxed(token: str) -> str:
    """Keep file arguments inside the example's directory."""
    return token.replace("/", "_").replace("..", "._")


@st.composite
def arguments(draw: st.DrawFn, command: click.Command, known: list[str]) -> list[str]:
    """Arguments for COMMAND: its own options and arguments with hostile or plausible values,
    then extra hostile tokens, sometimes all shuffled."""
    value = st.one_of(hostile_text(), st.sampled_from(known), poisoned(known)) if known else hostile_text()
    args: list[str] = []
    for param in command.params:
        if param.name == "help" or not draw(st.integers(0, 9)) < (9 if param.required else 5):
            continue
        if isinstance(param, click.Option):
            name = draw(st.sampled_from(param.opts + param.secondary_opts))
            if param.is_flag:
                args.append(name)
                continue
            if isinstance(param.type, click.Choice):
                choice = st.sampled_from([str(c) for c in param.type.choices])
                args += [name, draw(st.one_of(choice, choice, choice, value))]
            elif isinstance(param.type, click.types.IntParamType | click.types.FloatParamType):
                args += [name, draw(st.one_of(st.sampled_from(NUMBERS), st.integers(-10, 10**6).map(str), value))]
            else:
                args += [name, draw(value)]
        elif isinstance(param, click.Argument):
            count = 1 if param.nargs == 1 else draw(st.integers(0, 3))
            args += [draw(value) for _ in range(count)]
    if draw(st.integers(0, 3)) == 0:  # stray tokens
        args += draw(st.lists(value, min_size=1, max_size=2))
    if draw(st.integers(0, 7)) == 0:
        args = draw(st.permutations(args))
    return list(args)


# -- what may not change ----------------------------------------------------------------------------

RECORDS = """
select (select count(*) from privacy.ledger), (select max(seq) from privacy.ledger),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x.id), '')) from privacy.processing_restrictions x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x.id), '')) from privacy.protected_tables x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x::text), '')) from privacy.subject_types x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x::text), '')) from privacy.subject_marks x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x::text), '')) from privacy.recipients x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x::text), '')) from privacy.recipient_notices x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x::text), '')) from privacy.fleet x),
       (select md5(coalesce(string_agg(to_jsonb(x)::text, ',' order by x::text), '')) from privacy.settings x),
       (select count(*) from privacy.corrections), (select count(*) from privacy.hold_digests),
       (select count(*) from privacy.break_glass)
"""
SHOP_DATA = """
select md5(string_agg(t, '|' order by t)) from (
    select 'c' || to_jsonb(x)::text as t from customers x union all select 'o' || to_jsonb(x)::text from orders x
    union all select 'i' || to_jsonb(x)::text from order_items x union all select 'l' || to_jsonb(x)::text from activity_log x
    union all select 'a' || to_jsonb(x)::text from addresses x union all select 's' || to_jsonb(x)::text from staff x
    union all select 'p' || to_jsonb(x)::text from products x
    union all select 't' || to_jsonb(x)::text from "crm data"."Support; Tickets" x) rows
"""
# Generated enforcement and the shape of the schemas: triggers, policies, row-level security, relations.
CATALOG = """
select md5(coalesce(string_agg(x, ',' order by x), '')) from (
    select concat_ws(' ', t.tgrelid::regclass, t.tgname, t.tgenabled, obj_description(t.oid, 'pg_trigger')) as x
      from pg_trigger t where not t.tgisinternal
    union all select concat_ws(' ', p.polrelid::regclass, p.polname, obj_description(p.oid, 'pg_policy')) from pg_policy p
    union all select concat_ws(' ', c.oid::regclass, c.relkind, c.relrowsecurity, array_to_string(c.relacl, ';'))
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname in ('public', 'crm data', 'privacy')
    union all select concat_ws(' ', nspname, array_to_string(nspacl, ';')) from pg_namespace) objects
"""
ROLES = "select string_agg(rolname || ':' || concat(rolsuper, rolcanlogin, rolcreaterole, rolbypassrls), ',' order by rolname) from pg_roles"
MEMBERS = "select coalesce(string_agg(roleid::regrole || '>' || member::regrole, ',' order by 1), '') from pg_auth_members"


def snapshot(db: Db) -> tuple[Any, ...]:
    su = db.su
    records = su.execute(RECORDS).fetchone() if su.execute("select to_regclass('privacy.ledger') is not null").fetchone() == (True,) \
        else ("the toolkit is not installed",)
    return (records, *(su.execute(q).fetchone() for q in (SHOP_DATA, CATALOG, ROLES, MEMBERS)))


@pytest.fixture
def hostile_db(db: Db) -> Iterator[tuple[Db, list[str]]]:
    """The shop with a hold, a restriction, a recipient and a registered copy; the values an
    attacker might know (their ids, names, the database's own DSN) for the generator."""
    hold_id = hold(db, 3)
    restriction_id = restrict(db, 2)
    db.steward.execute("select privacy.add_recipient('crm', 'CRM sync')")
    db.owner.execute("select privacy.fleet_add('staging', 'fork', 'host=127.0.0.1 port=1 dbname=x connect_timeout=1', null)")
    head = db.scalar("select max(seq) from privacy.ledger")
    known = [hold_id, restriction_id, hold_id.upper(), str(head), db.dsn("shop_owner"), db.dsn("app"),
             f"postgresql://steward_user@127.0.0.1:{db.cluster.port}/{db.name}"]
    roles, members = db.su.execute(ROLES).fetchone(), db.su.execute(MEMBERS).fetchone()
    yield db, known
    restore_roles(db, roles, members)


def restore_roles(db: Db, roles: Any, members: Any) -> None:
    """Undo what a successful command did to the cluster (roles are shared by every test database)."""
    su = db.su
    before_roles = {r.split(":")[0] for r in roles[0].split(",")}
    for (name,) in su.execute("select rolname from pg_roles").fetchall():
        if name not in before_roles:
            su.execute(psycopg.sql.SQL("drop owned by {} cascade").format(psycopg.sql.Identifier(name)))
            su.execute(psycopg.sql.SQL("drop role {}").format(psycopg.sql.Identifier(name)))
    before_members = set(filter(None, members[0].split(",")))
    for (role, member) in su.execute("select roleid::regrole::text, member::regrole::text from pg_auth_members").fetchall():
        if f"{role}>{member}" not in before_members:
            su.execute(f"revoke {role} from {member}")
    assert (su.execute(ROLES).fetchone(), su.execute(MEMBERS).fetchone()) == (roles, members)


def reinstall_if_gone(db: Db) -> None:
    """A successful `uninstall` is allowed; put the toolkit back for the next example."""
    if db.su.execute("select to_regnamespace('privacy') is null").fetchone() == (True,):
        install.install(db.dsn("shop_owner"))
        db.owner.execute(PROTECT_SQL)
        db.owner.execute(APP_GRANTS)
        db.su.execute("grant privacy_steward to steward_user")


def documented_partial(args: list[str], stderr: str) -> bool:
    """Outcomes the README documents as "failed, but the change stands": the hold is placed although a
    follower did not replay it in time; doctor --fix applied fixes and reports what remains; the
    ledger recorded an export that could not be renamed into place."""
    return ("the change is in force on the primary" in stderr or "the ledger recorded the export" in stderr
            or ("doctor" in args and "--fix" in args and "error(s), " in stderr))


def check(result: Result, before: tuple[Any, ...], after: tuple[Any, ...], args: list[str]) -> None:
    context = f"pyctl {args!r} -> {result.exit_code}\nstdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}"
    assert result.exit_code in (0, 1, 2), context
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{result.exception!r}\n{context}"
    assert "Traceback" not in result.stdout + result.stderr, context
    if result.exit_code == 1:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and result.stderr.endswith("\n"), context
    if result.exit_code == 2:
        assert result.stderr.startswith(("Usage: ", "Error: ")), context  # click's usage errors
    if result.exit_code != 0 and not (result.exit_code == 1 and documented_partial(args, result.stderr)):
        assert after == before, f"a failed command changed something\n{context}"


def invoke(args: list[str], env: dict[str, str | None], tmp_path: Path) -> Result:
    runner = CliRunner()
    with tempfile.TemporaryDirectory(dir=tmp_path, ignore_cleanup_errors=True) as scratch, contextlib.chdir(scratch):
        Path("existing").mkdir()
        Path("existing/data.csv").write_text("x\n")
        Path("empty").mkdir()
        Path("file.txt").write_text("not an export\n")
        return runner.invoke(main, args, env=env, catch_exceptions=True)


PG_VARIABLES = ["DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGOPTIONS", "PGSSLMODE",
                "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTZ", "PGDATESTYLE",
                "PGAPPNAME", "PGTARGETSESSIONATTRS", "PGGSSENCMODE", "PGSSLROOTCERT", "PGCHANNELBINDING", "PGSYSCONFDIR",
                "PGREQUIREAUTH", "PGLOADBALANCEHOSTS"]
CLEAN_ENV: dict[str, str | None] = {name: None for name in PG_VARIABLES}


def values_for(path: tuple[str, ...], known: list[str]) -> list[str]:
    return known + FILE_NAMES if path in FILE_COMMANDS else known


def finish_args(path: tuple[str, ...], args: list[str]) -> list[str]:
    if path in FILE_COMMANDS:
        args = [sandboxed(a) for a in args]
    if path == ("watch",):
        args = [*args, "--idle-timeout", "0.05"]  # the last one counts: never wait for events that do not come
    return args


HOSTILE = settings(max_examples=800, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@HOSTILE
@given(data=st.data())
def test_any_command_with_hostile_arguments(hostile_db: tuple[Db, list[str]], tmp_path: Path, data: st.DataObject) -> None:
    db, known = hostile_db
    path, command = data.draw(st.sampled_from(COMMANDS), label="command")
    user = data.draw(st.sampled_from(["steward_user", "shop_owner", "app", "outsider"]), label="user")
    args = finish_args(path, [*path, *data.draw(arguments(command, values_for(path, known)), label="arguments")])
    front = data.draw(st.sampled_from([[], ["--json"]]), label="global options")
    argv = ["--dsn", db.dsn(user), *front, *args]
    before = snapshot(db)
    result = invoke(argv, CLEAN_ENV, tmp_path)
    after = snapshot(db)
    check(result, before, after, argv)
    event(f"exit {result.exit_code}")
    reinstall_if_gone(db)


def env_value(name: str, db: Db) -> st.SearchStrategy[str]:
    """Garbage for one variable, or now and then the right value (so that the rest is what fails)."""
    garbage = st.one_of(hostile_text(), st.sampled_from(DSN_LIKE)).filter(lambda v: "\x00" not in v)
    right = {"DATABASE_URL": f"postgresql://steward_user@127.0.0.1:{db.cluster.port}/{db.name}", "PGHOST": "127.0.0.1",
             "PGPORT": str(db.cluster.port), "PGDATABASE": db.name, "PGUSER": "steward_user"}
    if name in ("PGHOST", "PGHOSTADDR"):
        # no address that routes anywhere: a connection attempt must fail at once
        garbage = st.sampled_from(["", "/nonexistent", "/tmp/no such dir", "no such host;", "\udcff", "é", "-", "[::1", "x" * 300,
                                   "127.0.0.1,/nonexistent", "0.0.0.0"])
    return st.one_of(garbage, st.just(right[name])) if name in right else garbage


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_command_with_a_hostile_environment(hostile_db: tuple[Db, list[str]], tmp_path: Path, data: st.DataObject) -> None:
    db, known = hostile_db
    path, command = data.draw(st.sampled_from(COMMANDS), label="command")
    args = finish_args(path, [*path, *data.draw(arguments(command, values_for(path, known)), label="arguments")])
    names = data.draw(st.lists(st.sampled_from(PG_VARIABLES), min_size=1, max_size=5, unique=True), label="variables")
    env = dict(CLEAN_ENV)
    for name in names:
        env[name] = data.draw(env_value(name, db), label=name)
    before = snapshot(db)
    result = invoke(args, env, tmp_path)
    after = snapshot(db)
    check(result, before, after, args)
    reinstall_if_gone(db)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_hostile_dsn(hostile_db: tuple[Db, list[str]], tmp_path: Path, data: st.DataObject) -> None:
    db, _ = hostile_db
    dsn = data.draw(st.one_of(hostile_text(), st.sampled_from(DSN_LIKE),
                              st.sampled_from(["dbname", "user", "port", "options", "sslmode", "service", "application_name"]).flatmap(
                                  lambda key: hostile_text().map(lambda v: f"host=127.0.0.1 port={db.cluster.port} dbname={db.name} "
                                                                           f"user=steward_user {key}={v!r}"))), label="dsn")
    path, command = data.draw(st.sampled_from([(p, c) for p, c in COMMANDS if not isinstance(c, click.Group) or p == ("export",)]),
                              label="command")
    args = finish_args(path, ["--dsn", dsn, *path, *data.draw(arguments(command, values_for(path, [])), label="arguments")])
    before = snapshot(db)
    result = invoke(args, CLEAN_ENV, tmp_path)
    check(result, before, snapshot(db), args)
    reinstall_if_gone(db)


# -- regressions: what hypothesis found, as plain tests ------------------------------------------------

PYCTL = str(Path(sys.executable).with_name("pyctl"))


def cli(db: Db, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], env=CLEAN_ENV, catch_exceptions=True)


def one_error_line(result: Result | subprocess.CompletedProcess[str]) -> str:
    code = result.exit_code if isinstance(result, Result) else result.returncode
    stderr = result.stderr
    assert code == 1, (code, result.stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def test_an_error_quoting_a_line_break_stays_on_one_line(db: Db, tmp_path: Path) -> None:
    before = snapshot(db)
    line = one_error_line(cli(db, "ledger", "import", str(tmp_path / "no\rsuch\nfile")))
    assert "no\\rsuch\\nfile" in line
    line = one_error_line(cli(db, "recipient", "remove", "two\nlines\u2028three"))
    assert "unknown recipient" in line
    assert snapshot(db) == before


def test_bytes_that_are_not_utf8_in_an_argument_or_pghost_are_one_clear_line(db: Db) -> None:
    before = snapshot(db)
    for args in ([b"hold", b"place", b"\xff3", b"--case", b"C", b"--reason", b"r"], [b"recipient", b"add", b"caf\xe9"],
                 [b"history", b"\xff"], [b"protect", b"\xfe", b"--column", b"id"]):
        proc = subprocess.run([PYCTL.encode(), b"--dsn", db.dsn("shop_owner").encode(), *args], capture_output=True, text=True, check=False)
        assert "is not valid UTF-8" in one_error_line(proc)
    env = {k: v for k, v in os.environ.items() if k not in PG_VARIABLES}
    for name, value in (("PGHOST", "\udcff"), ("DATABASE_URL", "postgresql://\udcff@127.0.0.1/x"), ("PGUSER", "\udcff")):
        proc = subprocess.run([PYCTL, "status"], env={**env, "PGPORT": str(db.cluster.port), "PGHOST": "127.0.0.1", name: value},
                              capture_output=True, text=True, check=False)
        one_error_line(proc)
    assert snapshot(db) == before


def test_file_names_that_cannot_be_used_are_one_clear_line(db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = snapshot(db)
    for args, message in ((["export", "3", "--out", "x" * 300], "File name too long"),
                          (["export", "verify", "x" * 5000], "File name too long"),
                          (["ledger", "export", "x" * 300], "File name too long"),
                          (["ledger", "export", "."], "it is a directory"),
                          (["ledger", "export", str(tmp_path)], "it is a directory"),
                          (["ledger", "import", "x" * 5000], "File name too long")):
        assert message in one_error_line(cli(db, *args)), args
    assert list(tmp_path.iterdir()) == []
    assert snapshot(db) == before


def test_a_nul_character_in_an_argument_is_a_usage_error(db: Db) -> None:
    before = snapshot(db)
    for args in (["export", "3", "--out", "a\x00b"], ["ledger", "export", "\x00"], ["hold", "place", "3", "--case", "C\x00", "--reason", "r"]):
        result = cli(db, *args)
        assert result.exit_code == 2 and "contains a NUL character" in result.stderr, result.output
    assert snapshot(db) == before


def test_wait_followers_takes_a_finite_number_of_seconds(db: Db) -> None:
    assert cli(db, "fleet", "add", "gone", "--dsn", "host=127.0.0.1 port=1 connect_timeout=1", "--kind", "follower",
               user="shop_owner").exit_code == 0
    before = snapshot(db)
    for timeout in ("inf", "nan", "-1", "1e308"):
        result = cli(db, "hold", "place", "3", "--case", "C", "--reason", "r", "--wait-followers", "--timeout", timeout)
        assert result.exit_code == 2 and "--timeout" in result.stderr, result.output
    assert snapshot(db) == before


def test_waiting_for_a_registered_follower_that_is_not_one_fails_at_once(db: Db) -> None:
    assert cli(db, "fleet", "add", "promoted", "--dsn", db.dsn("postgres"), "--kind", "follower", user="shop_owner").exit_code == 0
    started = time.monotonic()
    result = cli(db, "hold", "place", "3", "--case", "C", "--reason", "r", "--wait-followers", "--timeout", "20")
    assert "follower promoted is not a follower (it is not in recovery" in one_error_line(result)
    assert time.monotonic() - started < 10
    assert db.scalar("select privacy.is_held('customer', 3)") is True  # in force on the primary, as documented
