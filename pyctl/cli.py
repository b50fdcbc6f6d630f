"""The pyctl command line: a thin layer over the privacy.* SQL API."""

from __future__ import annotations

import errno
import functools
import json
import math
import secrets
import sys
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from . import __version__
from . import install as installer
from .commands import Settings, default_subject, json_option, key_list, print_placed, prove_holds, run, run_many, settings, show
from .db import PyctlError, connect, describe, require_installed, require_primary
from .export import export_command
from .output import emit_json, table

F = TypeVar("F", bound=Callable[..., Any])


# What str.splitlines() splits on: an error message quoting input shows them escaped, on one line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(message: str) -> str:
    return message.translate(_LINE_BREAKS)


class PyctlGroup(click.Group):
    """Turns expected failures into one 'Error: ...' line and exit code 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # No argument from a real command line holds a NUL; one passed in-process would reach
        # file names and connection strings cut short.
        for arg in args:
            if "\x00" in arg:
                raise click.UsageError(f"argument {one_line(repr(arg[:60]))} contains a NUL character", ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PyctlError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        except psycopg.Error as exc:
            raise click.ClickException(one_line(describe(exc))) from None
        except UnicodeError as exc:
            # Bytes that are not UTF-8 in an argument or the environment (Python keeps them as surrogates).
            if isinstance(exc, UnicodeEncodeError):
                raise click.ClickException(f"{exc.object[max(exc.start - 30, 0):exc.end + 30]!r} is not valid UTF-8") from None
            raise click.ClickException(one_line(str(exc))) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click's own handling: stdout was closed (pyctl ... | head)
            # A file or directory named on the command line that cannot be used (a name too long, ...).
            raise click.ClickException(one_line(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))) from None


def _not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if math.isnan(value):  # FloatRange lets NaN through
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


def wait_option(func: F) -> F:
    """Adds --wait-followers/--timeout: return only once every registered follower has replayed the change."""

    @click.option("--wait-followers", is_flag=True, help="Return only once every registered follower has replayed the change.")
    @click.option("--timeout", type=click.FloatRange(0, 86400), default=30.0, show_default=True, metavar="S",
                  callback=_not_nan, help="How long --wait-followers waits.")
    @functools.wraps(func)
    def wrapper(*args: Any, wait_followers: bool, timeout: float, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        if wait_followers:
            from .fleet import wait_for_followers

            conn = connect(settings().dsn)
            try:
                done = wait_for_followers(conn, timeout)
            finally:
                conn.close()
            click.echo(f"replayed on {len(done)} follower(s): {', '.join(done) or 'none registered'}", err=True)
        return result

    return wrapper  # type: ignore[return-value]


def check_table_name(name: str) -> str:
    """Resolve a table name the way PostgreSQL would, with a one-line error."""
    try:
        rows = run("select privacy.qualified(n.nspname, c.relname) as t from pg_catalog.pg_class c "
                   "join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = pg_catalog.to_regclass(%s)",
                   (name,), write=False)
    except PyctlError as exc:
        if "invalid name syntax" in str(exc):
            raise PyctlError(f"table {name} does not exist (not a valid table name)") from None
        raise
    if not rows or rows[0]["t"] is None:
        raise PyctlError(f"table {name} does not exist")
    return str(rows[0]["t"])


@click.group(cls=PyctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", metavar="DSN", help="libpq connection string or URL; default: DATABASE_URL, then the PG* variables.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables, for every command that prints data.")
@click.version_option(__version__, prog_name="pyctl")
@click.pass_context
def main(ctx: click.Context, dsn: str | None, as_json: bool) -> None:
    """Make PostgreSQL enforce legal holds and GDPR Art. 18 processing restrictions.

    \b
    Example:
        pyctl demo
        pyctl --dsn postgresql://owner@db/shop install
        pyctl hold place 42 --case 2026-CV-118 --reason "litigation hold"
    """
    ctx.obj = Settings(dsn=dsn, json=as_json)


# -- install, upgrade, uninstall, status ---------------------------------------------


@main.command()
@click.option("--steward-role", metavar="ROLE", help="Role whose members are stewards (default privacy_steward; created if missing).")
@json_option
def install(steward_role: str | None) -> None:
    """Install the toolkit into the database, or upgrade it (idempotent).

    Applies the packaged yoyo migrations, reloads every function from sql/ and
    regenerates the enforcement of every protected table.

    \b
    Example:
        pyctl --dsn "$DATABASE_URL" install
        pyctl install --steward-role dpo_team
    """
    result = installer.install(settings().dsn, steward_role)
    if settings().json:
        emit_json(result)
    else:
        applied = ", ".join(result["migrations_applied"]) or "none pending"
        click.echo(f"privacy toolkit {result['version']} installed (migrations: {applied}; "
                   f"steward role: {result['steward_role']}; tables regenerated: {result['tables_regenerated']})")


@main.command()
@click.option("--steward-role", metavar="ROLE", help="Change the steward role.")
@json_option
@click.pass_context
def upgrade(ctx: click.Context, steward_role: str | None) -> None:
    """Upgrade an installation to this version of the toolkit (same as install).

    \b
    Example:
        pip install --upgrade pyctl-privacy && pyctl upgrade
    """
    ctx.invoke(install, steward_role=steward_role)


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(yes: bool) -> None:
    """Remove everything the toolkit made; user data stays.

    Refused while any legal hold or processing restriction is active.

    \b
    Example:
        pyctl uninstall --yes
    """
    if not yes and sys.stdin.isatty():
        click.confirm("Remove the privacy toolkit and all enforcement from this database?", abort=True)
    result = installer.uninstall(settings().dsn)
    click.echo(f"privacy toolkit removed; {len(result['tables_released'])} table(s) no longer protected", err=True)


@main.command()
@json_option
def status() -> None:
    """Show the installation: version, migrations, subjects, tables, active holds.

    \b
    Example:
        pyctl status
        pyctl --json status
    """
    conn = connect(settings().dsn)
    try:
        require_installed(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            info = cur.execute(
                "select privacy.toolkit_version() as installed_version, "
                "(select value from privacy.settings where name = 'steward_role') as steward_role, "
                "pg_catalog.pg_is_in_recovery() as follower, "
                "(select count(*) from privacy.processing_restrictions where released_at is null and kind = 'legal_hold') as active_holds, "
                "(select count(*) from privacy.processing_restrictions where released_at is null and kind = 'restriction') as active_restrictions, "
                "(select count(*) from privacy.recipient_notices where acked_at is null) as pending_notices, "
                "(select is_copy from privacy.copy_status()) as unsynced_copy, "
                "(select count(*) from privacy.erasures where state = 'erased') as erased_subjects, "
                "(select count(*) from privacy.erasures where state = 'pending') as pending_erasures, "
                "(select coalesce(array_agg(distinct subject_type || '/' || subject_key), '{}') "
                "   from privacy.erased_rows_present()) as erased_data_present"
            ).fetchone() or {}
            migrations: list[str] = []
            for schema in ("privacy", "public"):
                found = cur.execute("select pg_catalog.to_regclass(%s) is not null "
                                    "and pg_catalog.has_table_privilege(%s, 'select') as x",
                                    (f"{schema}._yoyo_migration", f"{schema}._yoyo_migration"))
                if found.fetchone() == {"x": True}:
                    migrations += [r["migration_id"] for r in cur.execute(
                        sql.SQL("select migration_id from {}._yoyo_migration where migration_id like 'privacy-%%' "
                                "order by applied_at_utc").format(sql.Identifier(schema))).fetchall()]
            subjects = cur.execute(
                "select subject_type, privacy.qualified(table_schema, table_name) as root_table, key_column "
                "from privacy.subject_types order by 1"
            ).fetchall()
            tables = cur.execute(_TABLES_QUERY).fetchall()
    finally:
        conn.close()
    data = {"toolkit_version": __version__, **info, "migrations": migrations, "subject_types": subjects, "tables": tables}
    if settings().json:
        emit_json(data)
        if info.get("erased_data_present"):
            raise PyctlError(f"rows of {len(info['erased_data_present'])} erased subject(s) are present")
        return
    click.echo(f"toolkit {__version__}, installed {info.get('installed_version')}"
               f"{' (read-only follower)' if info.get('follower') else ''}")
    click.echo(f"migrations applied: {', '.join(migrations) or '(none recorded)'}")
    click.echo(f"steward role: {info.get('steward_role')}")
    if info.get("unsynced_copy"):
        click.echo("THIS DATABASE IS A COPY (fork, rollback or restored dump) not synced since: holds and releases made on "
                   "the primary since are missing; run pyctl sync from the primary, or pyctl ledger import here")
    click.echo(f"active legal holds: {info.get('active_holds')}, active processing restrictions: {info.get('active_restrictions')}, "
               f"pending recipient notices: {info.get('pending_notices')}")
    click.echo(f"erased subjects: {info.get('erased_subjects')}, queued erasures: {info.get('pending_erasures')}")
    back = info.get("erased_data_present") or []
    if back:
        click.echo(f"ERROR: rows of {len(back)} erased subject(s) are here again ({', '.join(back[:5])}"
                   f"{', ...' if len(back) > 5 else ''}): a restore or rollback brought them back; pyctl sync from the primary "
                   "erases them again (pyctl doctor names the tables)")
    click.echo("")
    table(subjects, ["subject_type", "root_table", "key_column"], "no subject types yet")
    click.echo("")
    table(tables, ["table", "subject_type", "path", "enforcement", "detail"], "no protected tables yet")
    if back:
        raise PyctlError(f"rows of {len(back)} erased subject(s) are present")


_TABLES_QUERY = """
select privacy.qualified(p.table_schema, p.table_name) as table, p.subject_type,
       privacy.describe_path(p) as path,
       coalesce((select case when bool_and(s.state = 'installed') then 'installed'
                             else (array_agg(s.state order by s.state = 'installed'))[1] end
                   from privacy.enforcement_status() s
                  where s.protected_table = privacy.qualified(p.table_schema, p.table_name)), 'missing') as enforcement,
       coalesce((select string_agg(s.relation || ': ' || s.detail, '; ') from privacy.enforcement_status() s
                  where s.protected_table = privacy.qualified(p.table_schema, p.table_name) and s.state <> 'installed'), '') as detail
  from privacy.protected_tables p
 order by p.id
"""


# -- subjects and tables -----------------------------------------------------------------


@main.group()
def subject() -> None:
    """Subject types: whose data is protected, and where their key lives."""


@subject.command("add")
@click.argument("subject_type", metavar="TYPE")
@click.option("--table", "table_name", required=True, metavar="T", help="The subject's root table, e.g. public.customers.")
@click.option("--key", "key_column", required=True, metavar="COLUMN", help="Its key column (primary key or unique).")
def subject_add(subject_type: str, table_name: str, key_column: str) -> None:
    """Register a subject type and protect its root table.

    \b
    Example:
        pyctl subject add customer --table public.customers --key id
    """
    resolved = check_table_name(table_name)
    run("select privacy.add_subject_type(%s, %s::regclass, %s)", (subject_type, resolved, key_column))
    click.echo(f"subject type {subject_type}: {resolved}.{key_column}", err=True)


@subject.command("list")
@json_option
def subject_list() -> None:
    """List the subject types.

    \b
    Example:
        pyctl subject list
    """
    rows = run("select subject_type, privacy.qualified(table_schema, table_name) as root_table, key_column, key_type "
               "from privacy.subject_types order by 1", write=False)
    show(rows, ["subject_type", "root_table", "key_column", "key_type"])


@main.command()
@click.argument("table_name", metavar="TABLE")
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (with --column; default: the only one).")
@click.option("--column", metavar="C", help="The table's own column that holds the subject key.")
@click.option("--via", metavar="FKCOL", help="A foreign-key column pointing at an already protected table.")
@click.option("--referenced-by", "referenced_by", metavar="TABLE.COL",
              help="A column of a protected table that points at this table (customers.address_id).")
@click.option("--shared-ok", "shared_ok", is_flag=True,
              help="With --referenced-by: protect it although other subjects share its rows (a store, a country).")
@click.option("--no-index", "no_index", is_flag=True,
              help="Do not create the missing index on the path column (CREATE INDEX CONCURRENTLY); only warn.")
def protect(table_name: str, subject_type: str | None, column: str | None, via: str | None,
            referenced_by: str | None, shared_ok: bool, no_index: bool) -> None:
    """Protect a table: its rows follow their subject's holds and restrictions.

    --referenced-by refuses a shared lookup table (a row several subjects point at:
    a restriction would hide it from every subject, a hold freeze it for all) unless
    --shared-ok says that is what you want. Without an index on the path column,
    placing a hold reads the whole table while the subject's writers wait: protect
    creates it (CREATE INDEX CONCURRENTLY, after protecting) unless --no-index.

    \b
    Example:
        pyctl protect public.orders --column customer_id
        pyctl protect public.order_items --via order_id
        pyctl protect public.addresses --referenced-by public.customers.address_id
        pyctl protect public.store --referenced-by public.customer.store_id --shared-ok
    """
    chosen = [x for x in (column, via, referenced_by) if x]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --column, --via, --referenced-by")
    if shared_ok and not referenced_by:
        raise click.UsageError("--shared-ok goes with --referenced-by")
    resolved = check_table_name(table_name)
    if column:
        run("select privacy.protect(%s::regclass, %s, %s)", (resolved, default_subject(subject_type), column))
    elif via:
        if subject_type:
            raise click.UsageError("--subject goes with --column; --via takes the subject of the table it points at")
        run("select privacy.protect_via(%s::regclass, %s)", (resolved, via))
    else:
        assert referenced_by is not None
        ref_table, _, ref_column = referenced_by.rpartition(".")
        if not ref_table or not ref_column:
            raise click.UsageError("--referenced-by takes TABLE.COLUMN, e.g. public.customers.address_id")
        ref_resolved = check_table_name(ref_table)
        run("select privacy.protect_referenced_by(%s::regclass, %s::regclass, %s, %s)",
            (resolved, ref_resolved, ref_column, shared_ok))
    rows = run("select privacy.describe_path(p) as path from privacy.protected_tables p "
               "where privacy.qualified(p.table_schema, p.table_name) = %s", (resolved,), write=False)
    click.echo(f"protected {resolved} ({rows[0]['path'] if rows else '?'})", err=True)
    # Views that read it with their owner's rights would hand restricted rows out: say so now.
    exposed = run("select finding, fix from privacy.doctor() where category in ('definer view', 'materialized view') "
                  "and position(%s in finding) > 0", (resolved,), write=False)
    for e in exposed:
        click.echo(f"warning: {e['finding']}; fix: {e['fix']}", err=True)
    unindexed = run("select finding, fix from privacy.doctor() where category = 'unindexed path' and object = %s",
                    (resolved,), write=False)  # (doctor names tables schema-qualified, as check_table_name does)
    for u in unindexed:
        if no_index:
            click.echo(f"warning: {u['finding']}; fix: {u['fix']}", err=True)
            continue
        if create_index_concurrently(u["fix"]):
            click.echo(f"created the missing index: {u['fix']}", err=True)


def create_index_concurrently(statement: str) -> bool:
    """Runs doctor's CREATE INDEX CONCURRENTLY (identifiers quoted by it) outside any transaction;
    on a partitioned table (which PostgreSQL cannot index concurrently) says how instead."""
    assert statement.startswith("CREATE INDEX CONCURRENTLY ON ")
    conn = connect(settings().dsn)
    try:
        conn.execute(statement.encode())
        return True
    except psycopg.errors.FeatureNotSupported as exc:
        click.echo(f"warning: the path column has no index and {describe(exc)}: create it with CREATE INDEX ON ONLY "
                   "the table, CREATE INDEX CONCURRENTLY on each partition and ALTER INDEX ... ATTACH PARTITION", err=True)
        return False
    except psycopg.Error as exc:
        raise PyctlError(f"protected, but the index could not be created ({describe(exc)}): run {statement}") from None
    finally:
        conn.close()


@main.command()
@click.argument("table_name", metavar="TABLE")
def unprotect(table_name: str) -> None:
    """Remove a table's enforcement (refused while it holds held or restricted rows).

    \b
    Example:
        pyctl unprotect public.support_tickets
    """
    resolved = check_table_name(table_name)
    run("select privacy.unprotect(%s::regclass)", (resolved,))
    click.echo(f"unprotected {resolved}", err=True)


@main.command()
@json_option
def tables() -> None:
    """List the protected tables, their paths and the state of their enforcement.

    \b
    Example:
        pyctl tables
    """
    show(run(_TABLES_QUERY, write=False), ["table", "subject_type", "path", "enforcement", "detail"],
         "no protected tables yet")


# -- holds and restrictions ------------------------------------------------------------------


_LIST_QUERY = """
select id, subject_type || '/' || subject_key as subject, {extra}, reason, state,
       placed_by, placed_at, released_by, released_at, release_reason
  from privacy.processing_restrictions
 where kind = %s {filter}
 order by placed_at
"""


@main.group()
def hold() -> None:
    """Legal holds: preserve a subject's data (no change, no deletion)."""


@hold.command("place")
@click.argument("key", required=False)
@click.option("--from-file", "keys_file", type=click.File("r", encoding="utf-8"), metavar="FILE",
              help="One key per line (- for standard input): one hold each, in one transaction; all or none.")
@click.option("--case", "case_ref", required=True, metavar="REF", help="The matter, e.g. 2026-CV-118.")
@click.option("--reason", required=True, metavar="TEXT", help="Why the data must be preserved.")
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@json_option
@wait_option
def hold_place(key: str | None, keys_file: TextIO | None, case_ref: str, reason: str, subject_type: str | None) -> None:
    """Place a legal hold on a subject (or on every key of a file); prints the hold's id
    (with --from-file: each key and its hold's id).

    The hold is in force when it is placed (one transaction for all the keys); then the
    proof of each (its digests: what the held data is) is computed, each in a
    transaction of its own. If that is interrupted, `pyctl hold prove --all` completes it.

    \b
    Example:
        pyctl hold place 42 --case 2026-CV-118 --reason "Smith v. Shop: preserve orders"
        pyctl hold place --from-file custodians.txt --case 2026-CV-118 --reason "custodians named by counsel"
    """
    keys = key_list(key, keys_file)
    rows = run("select subject_key as key, hold_id as id from privacy.place_holds(%s, %s, %s, %s)",
               (default_subject(subject_type), keys, case_ref, reason), progress="placing the hold")
    print_placed(rows, many=keys_file is not None)
    prove_holds([str(r["id"]) for r in rows])


@hold.command("prove")
@click.argument("hold_id", metavar="ID", required=False)
@click.option("--all", "all_holds", is_flag=True, help="Every active hold whose proof is pending.")
def hold_prove(hold_id: str | None, all_holds: bool) -> None:
    """Compute the preservation proof of a hold placed without one yet (placement
    interrupted after the hold took effect, or placed from SQL with privacy.place_hold).

    \b
    Example:
        pyctl hold prove --all
    """
    if bool(hold_id) == all_holds:
        raise click.UsageError("give a hold ID or --all")
    ids = [_uuid(hold_id)] if hold_id else [str(r["hold_id"]) for r in run("select hold_id from privacy.pending_proofs()", write=False)]
    click.echo(f"proved {prove_holds(ids)} hold(s)", err=True)


@hold.command("release")
@click.argument("hold_id", metavar="ID")
@click.option("--reason", required=True, metavar="TEXT", help="Why the hold ends (case closed, counsel's instruction).")
@click.option("--reference", required=True, metavar="TEXT",
              help="Reference for the release: the order that closed the case, counsel's instruction.")
@wait_option
def hold_release(hold_id: str, reason: str, reference: str) -> None:
    """Release one legal hold; other holds on the subject stay in force.

    \b
    Example:
        pyctl hold release 7c1e... --reason "case settled" --reference "order of dismissal 2027-03-01"
    """
    run("select privacy.release_hold(%s::uuid, %s, %s)", (_uuid(hold_id), reason, reference))
    click.echo(f"released legal hold {hold_id}", err=True)


@hold.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include released holds.")
@json_option
def hold_list(show_all: bool) -> None:
    """List active legal holds (--all: released ones too).

    \b
    Example:
        pyctl hold list
    """
    query = _LIST_QUERY.format(extra="case_ref as case", filter="" if show_all else "and released_at is null")
    show(run(query, ("legal_hold",), write=False),
         ["id", "subject", "case", "reason", "state", "placed_by", "placed_at"]
         + (["released_at", "release_reason"] if show_all else []))


@hold.command("verify")
@click.argument("hold_id", metavar="ID", required=False)
@click.option("--all", "all_holds", is_flag=True, help="Verify every active legal hold.")
@json_option
def hold_verify(hold_id: str | None, all_holds: bool) -> None:
    """Prove that held data is what it was when the hold began; exit 1 on any violation.

    Per protected table: unchanged, rows added since (allowed under a hold), or a
    violation (rows changed or missing, named by primary key). Read-only: runs on
    followers, forks and restored backups too (where a hold whose proof is still
    pending shows as 'proof pending'; on the primary it is computed first).

    \b
    Example:
        pyctl hold verify 7c1e...
        pyctl --dsn "$FOLLOWER_URL" hold verify --all
    """
    if bool(hold_id) == all_holds:
        raise click.UsageError("give a hold ID or --all")
    ids = [_uuid(hold_id)] if hold_id else [str(r["id"]) for r in run(
        "select id from privacy.processing_restrictions where kind = 'legal_hold' and released_at is null order by placed_at",
        write=False)]
    results = []
    for one in ids:
        for row in run("select table_name as table, status, rows_at_hold, rows_now, added, changed, missing "
                       "from privacy.verify_hold(%s::uuid)", (one,), write=False):
            results.append({"hold": one, **row})
    if settings().json:
        emit_json(results)
    else:
        table([{**r, "changed": ", ".join(json.dumps(x) for x in r["changed"]),
                "missing": ", ".join(json.dumps(x) for x in r["missing"])} for r in results],
              ["hold", "table", "status", "rows_at_hold", "rows_now", "added", "changed", "missing"], "no active legal holds")
    violations = [r for r in results if r["status"] == "violation"]
    if violations:
        raise PyctlError(f"{len(violations)} table(s) changed since the hold began: "
                         + ", ".join(f"{r['table']} (hold {r['hold']})" for r in violations))


@main.group()
def restrict() -> None:
    """Processing restrictions (GDPR Art. 18): store only, do not process."""


@restrict.command("place")
@click.argument("key", required=False)
@click.option("--from-file", "keys_file", type=click.File("r", encoding="utf-8"), metavar="FILE",
              help="One key per line (- for standard input): one restriction each, in one transaction; all or none.")
@click.option("--basis", required=True, type=click.Choice(["accuracy", "unlawful", "legal-claims", "objection"]),
              help="GDPR Art. 18(1) (a) accuracy contested, (b) unlawful, (c) legal claims, (d) objection.")
@click.option("--reason", required=True, metavar="TEXT", help="What the subject asked for and why.")
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@click.option("--purpose", "purposes", multiple=True, metavar="P",
              help="Restrict for this purpose only (repeatable); other application roles keep processing.")
@click.option("--except", "exceptions", multiple=True, metavar="P",
              help="Roles of this purpose keep reading, not writing (Art. 18(2); repeatable; not with --purpose).")
@json_option
@wait_option
def restrict_place(key: str | None, keys_file: TextIO | None, basis: str, reason: str, subject_type: str | None,
                   purposes: tuple[str, ...], exceptions: tuple[str, ...]) -> None:
    """Restrict processing of a subject's data (or of every key of a file); prints the
    restriction's id (with --from-file: each key and its restriction's id).

    Without --purpose every application role loses sight of the subject's rows;
    with it, only the roles serving those purposes (pyctl purpose list).

    \b
    Example:
        pyctl restrict place 42 --basis accuracy --reason "contests billing address"
        pyctl restrict place --from-file objections.txt --basis objection --reason "objected, Art. 21"
        pyctl restrict place 42 --basis objection --purpose marketing --reason "Art. 21(3) objection, email 2026-12-01"
        pyctl restrict place 42 --basis accuracy --except legal-claims --reason "contests invoice; claim pending"
    """
    if purposes and exceptions:
        raise click.UsageError("--except is for restrictions without --purpose: a scoped one leaves other purposes alone")
    keys = key_list(key, keys_file)
    if keys_file is not None and (purposes or exceptions):
        raise click.UsageError("--from-file places restrictions for every application role: without --purpose or --except")
    if keys_file is None:
        rows = run("select %s as key, privacy.place_restriction(%s, %s, %s, %s, %s::text[], %s::text[]) as id",
                   (keys[0], default_subject(subject_type), keys[0], basis, reason, list(purposes), list(exceptions)))
    else:
        rows = run("select subject_key as key, restriction_id as id from privacy.place_restrictions(%s, %s, %s, %s)",
                   (default_subject(subject_type), keys, basis, reason))
    print_placed(rows, many=keys_file is not None)


@restrict.command("verify")
@click.argument("restriction_id", metavar="ID")
@click.option("--note", required=True, metavar="TEXT", help="What was checked: accuracy verified, data corrected, grounds assessed.")
def restrict_verify(restriction_id: str, note: str) -> None:
    """Record that the restriction's grounds were verified (lifecycle step 1).

    \b
    Example:
        pyctl restrict verify 3f2a... --note "address checked against the utility bill; corrected"
    """
    run("select privacy.verify_restriction(%s::uuid, %s)", (_uuid(restriction_id), note))
    click.echo(f"restriction {restriction_id}: verified", err=True)


@restrict.command("notify")
@click.argument("restriction_id", metavar="ID")
@click.option("--via", required=True, metavar="TEXT", help="How the subject was told the restriction will be lifted.")
def restrict_notify(restriction_id: str, via: str) -> None:
    """Record that the subject was told the restriction will be lifted (Art. 18(3)).

    \b
    Example:
        pyctl restrict notify 3f2a... --via "email to ben@example.com, ticket 5521"
    """
    run("select privacy.notify_subject(%s::uuid, %s)", (_uuid(restriction_id), via))
    click.echo(f"restriction {restriction_id}: subject notified", err=True)


@restrict.command("approve")
@click.argument("restriction_id", metavar="ID")
@click.option("--evidence", required=True, metavar="TEXT", help="Where the subject's approval to resume is recorded.")
def restrict_approve(restriction_id: str, evidence: str) -> None:
    """Record the subject's approval to resume processing.

    \b
    Example:
        pyctl restrict approve 3f2a... --evidence "reply to ticket 5521, 2026-12-01"
    """
    run("select privacy.approve_release(%s::uuid, %s)", (_uuid(restriction_id), evidence))
    click.echo(f"restriction {restriction_id}: approval recorded", err=True)


@restrict.command("release")
@click.argument("restriction_id", metavar="ID")
@click.option("--force", is_flag=True, help="Release although required lifecycle steps are missing (needs --reason).")
@click.option("--reason", metavar="TEXT", help="Why it is lifted (required with --force).")
@wait_option
def restrict_release(restriction_id: str, force: bool, reason: str | None) -> None:
    """Release a processing restriction once its lifecycle is complete.

    Required before release, by basis: accuracy: verify, notify, approve;
    objection: verify, notify; unlawful and legal-claims: notify.

    \b
    Example:
        pyctl restrict release 3f2a...
        pyctl restrict release 3f2a... --force --reason "court order 2026-77 lifts it"
    """
    if force and not (reason and reason.strip()):
        raise click.UsageError("--force needs --reason")
    run("select privacy.release_restriction(%s::uuid, %s, %s)", (_uuid(restriction_id), reason, force))
    click.echo(f"released processing restriction {restriction_id}" + (" (forced)" if force else ""), err=True)


@restrict.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include released restrictions.")
@json_option
def restrict_list(show_all: bool) -> None:
    """List active processing restrictions (--all: released ones too).

    \b
    Example:
        pyctl restrict list
    """
    query = _LIST_QUERY.format(extra="basis, array_to_string(privacy.missing_steps(processing_restrictions), ', ') as missing_steps, "
                                     + _SCOPE_COLUMNS,
                               filter="" if show_all else "and released_at is null")
    show(run(query, ("restriction",), write=False),
         ["id", "subject", "basis", "purposes", "except", "reason", "state", "missing_steps", "placed_by", "placed_at"]
         + (["released_at", "release_reason"] if show_all else []))


_SCOPE_COLUMNS = """
       coalesce((select string_agg(s.purpose, ', ' order by s.purpose) from privacy.restriction_purposes s
                  where s.restriction_id = processing_restrictions.id and s.kind = 'scope'), 'all') as purposes,
       coalesce((select string_agg(s.purpose, ', ' order by s.purpose) from privacy.restriction_purposes s
                  where s.restriction_id = processing_restrictions.id and s.kind = 'exception'
                    and s.withdrawn_at is null), '') as except"""


@restrict.group("exception")
def restrict_exception() -> None:
    """Exceptions to a restriction (GDPR Art. 18(2)): a purpose whose roles keep reading."""


@restrict_exception.command("add")
@click.argument("restriction_id", metavar="ID")
@click.argument("purpose")
@click.option("--reason", required=True, metavar="TEXT", help="The ground under Art. 18(2): legal claims, consent, another's rights.")
def restrict_exception_add(restriction_id: str, purpose: str, reason: str) -> None:
    """Let the roles of PURPOSE read (not write) the restricted subject's rows.

    \b
    Example:
        pyctl restrict exception add 3f2a... legal-claims --reason "defence of claim 2026-CV-204"
    """
    run("select privacy.add_exception(%s::uuid, %s, %s)", (_uuid(restriction_id), purpose, reason))
    click.echo(f"restriction {restriction_id}: {purpose} may read the subject's rows", err=True)


@restrict_exception.command("withdraw")
@click.argument("restriction_id", metavar="ID")
@click.argument("purpose")
@click.option("--reason", required=True, metavar="TEXT", help="Why the exception ends.")
def restrict_exception_withdraw(restriction_id: str, purpose: str, reason: str) -> None:
    """Withdraw a purpose's exception: its roles lose sight of the rows again.

    \b
    Example:
        pyctl restrict exception withdraw 3f2a... legal-claims --reason "claim settled"
    """
    run("select privacy.withdraw_exception(%s::uuid, %s, %s)", (_uuid(restriction_id), purpose, reason))
    click.echo(f"restriction {restriction_id}: exception for {purpose} withdrawn", err=True)


# -- purposes ------------------------------------------------------------------------------


@main.group()
def purpose() -> None:
    """Purposes: kinds of processing (marketing, billing, legal-claims) that restrictions may name."""


@purpose.command("add")
@click.argument("name")
@click.option("--description", default="", metavar="TEXT", help="What processing the purpose covers.")
def purpose_add(name: str, description: str) -> None:
    """Register a purpose and create its group role; prints the role's name.

    Application roles serve the purpose by being members of the role
    (pyctl roles create-app ROLE --purpose NAME, or pyctl purpose grant).
    The toolkit's owner only; at most 13 purposes.

    \b
    Example:
        pyctl purpose add marketing --description "newsletters, ads, profiling for offers"
    """
    rows = run("select privacy.add_purpose(%s, %s) as role", (name, description))
    click.echo(rows[0]["role"])


@purpose.command("grant")
@click.argument("role")
@click.argument("purpose_name", metavar="PURPOSE")
def purpose_grant(role: str, purpose_name: str) -> None:
    """Make an existing role serve a purpose (a member of its group role).

    \b
    Example:
        pyctl purpose grant newsletter_app marketing
    """
    run("select privacy.grant_purpose(%s, %s)", (role, purpose_name))
    click.echo(f"{role} now serves {purpose_name}", err=True)


@purpose.command("list")
@json_option
def purpose_list() -> None:
    """List the purposes, their roles, mark bits and the roles serving each.

    \b
    Example:
        pyctl purpose list
    """
    rows = run("select p.name, p.role_name as role, 1 << p.bit as mark_bit, "
               "coalesce((select string_agg(m.rolname, ', ' order by m.rolname) from pg_catalog.pg_roles m "
               "           join pg_catalog.pg_auth_members a on a.member = m.oid "
               "           join pg_catalog.pg_roles g on g.oid = a.roleid where g.rolname = p.role_name), '') as members, "
               "p.description from privacy.purposes p order by p.bit", write=False)
    show(rows, ["name", "role", "mark_bit", "members", "description"], "no purposes: pyctl purpose add NAME")


class EraseGroup(PyctlGroup):
    """`erase KEY ...` and `erase --from-file F ...` run the group's default command; `pending` and `certificate` are subcommands."""

    default: click.Command | None = None
    DEFAULT = "KEY"  # never in self.commands: whatever the first argument is, it reaches the default command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == self.DEFAULT:
            return self.default
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.DEFAULT, *args]
        return super().parse_args(ctx, args)


@main.group(cls=EraseGroup)
def erase() -> None:
    """Erase a subject's data once no hold needs it (GDPR Art. 17), with proof.

    \b
    pyctl erase KEY --reason TEXT [--reference REF] [--subject TYPE] [--after-holds] [--dry-run]
    pyctl erase --from-file KEYS --reason TEXT [--reference REF] [--subject TYPE]
    pyctl erase pending
    pyctl erase certificate ID

    Deletes every row of the subject from every protected table, children before
    parents, in one transaction, and leaves one 'erasure' ledger event with per-table
    row counts and digests. Refused while a legal hold or a legal-claims restriction
    is active (naming it); --after-holds queues it until the last one is released.
    Stewards only. `pyctl sync` replays erasures onto forks and restored backups.

    \b
    Example:
        pyctl erase 42 --reason "retention ended" --dry-run
        pyctl erase 42 --reason "case settled, retention ended" --reference "DPO-2027-14" --after-holds
        pyctl erase --from-file closed-accounts.txt --reason "accounts closed in 2019"
    """


@click.command("erase")
@click.argument("key", required=False)
@click.option("--reason", metavar="TEXT", help="Why the data goes (retention ended, the subject's request).")
@click.option("--reference", metavar="REF", help="The decision: a ticket, the DPO's instruction, the order.")
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@click.option("--after-holds", is_flag=True, help="Queue it while a hold is active: it runs when the last hold is released.")
@click.option("--dry-run", is_flag=True, help="Print the per-table counts and what stands in the way; change nothing.")
@click.option("--from-file", "from_file", type=click.File("r", encoding="utf-8"), metavar="KEYS",
              help="Erase many subjects (one key a line; # comments), in one transaction.")
@json_option
def erase_run(key: str | None, reason: str | None, reference: str | None, subject_type: str | None,
              after_holds: bool, dry_run: bool, from_file: Any) -> None:
    """Erase one subject (KEY) or many (--from-file).

    \b
    Example:
        pyctl erase 42 --reason "retention ended" --dry-run
    """
    if bool(key) == bool(from_file):
        raise click.UsageError("give a KEY or --from-file KEYS")
    if not reason:
        raise click.UsageError("--reason is required")
    subject = default_subject(subject_type)
    if from_file:
        if after_holds or dry_run:
            raise click.UsageError("--after-holds and --dry-run take a single KEY")
        keys = [line.strip() for line in from_file if line.strip() and not line.strip().startswith("#")]
        if not keys:
            raise PyctlError("the file lists no keys")
        rows = run("select subject_key as key, outcome, detail from privacy.erase_many(%s, %s, %s, %s)",
                   (subject, keys, reason, reference))
        if settings().json:
            emit_json(rows)
        else:
            table([{"key": r["key"], "outcome": r["outcome"],
                     "detail": (r["detail"] or {}).get("why") or _erased_summary(r["detail"] or {})} for r in rows],
                  ["key", "outcome", "detail"])
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())), err=True)
        if counts.get("failed"):
            raise PyctlError(f"{counts['failed']} subject(s) could not be erased: see above; the others were")
        return
    result = run("select privacy.erase(%s, %s, %s, %s, %s, %s) as r",
                 (subject, key, reason, reference, after_holds, dry_run))[0]["r"]
    if settings().json:
        emit_json(result)
        return
    state = result.get("state")
    if state == "pending":
        click.echo(result["id"])
        click.echo(f"erasure {result['id']} of {subject}/{result['subject_key']} queued: it runs when "
                   f"{_blockers(result.get('waiting_for') or [])} is released", err=True)
        return
    table(result.get("tables") or [], ["table", "rows", "sha256"] + (["kept"] if any("kept" in t for t in result.get("tables") or []) else []))
    total = sum(int(t.get("rows", 0)) for t in result.get("tables") or [])
    if state == "dry_run":
        waiting = result.get("waiting_for") or []
        click.echo(f"dry run: {total} row(s) of {subject}/{result['subject_key']} would be erased; nothing was changed"
                   + (f"; refused now: {_blockers(waiting)} is active (--after-holds queues it)" if waiting else ""), err=True)
        return
    kept = sum(int(t.get("kept", 0)) for t in result.get("tables") or [])
    click.echo(f"erased {subject}/{result['subject_key']}: {total} row(s); ledger event {result['ledger_seq']}"
               + (f"; {kept} shared row(s) kept (still referenced by other data)" if kept else "")
               + f"; certificate: pyctl erase certificate {result['id']}", err=True)


EraseGroup.default = erase_run


def _blockers(blockers: list[dict[str, Any]]) -> str:
    return ", ".join(f"legal hold {b['id']} (case {b.get('case')})" if b.get("kind") == "legal_hold"
                     else f"restriction {b['id']} (legal-claims)" for b in blockers) or "nothing"


def _erased_summary(detail: dict[str, Any]) -> str:
    tables = detail.get("tables") or []
    return f"erasure {detail.get('id')}: {sum(int(t.get('rows', 0)) for t in tables)} row(s) in {len(tables)} table(s)"


@erase.command("pending")
@json_option
def erase_pending() -> None:
    """List queued erasures and what each waits for.

    \b
    Example:
        pyctl erase pending
    """
    rows = run("select id, subject_type || '/' || subject_key as subject, reason, reference, requested_by, requested_at, "
               "waiting_for, why from privacy.pending_erasures()", write=False)
    if settings().json:
        emit_json(rows)
    else:
        table(rows, ["id", "subject", "reason", "requested_by", "requested_at", "why"], "no queued erasures")


@erase.command("certificate")
@click.argument("erasure_id", metavar="ID")
@json_option
def erase_certificate(erasure_id: str) -> None:
    """Print the certificate of an erasure and check it against the ledger; exit 1 if a check fails.

    What was destroyed (per table: rows and the sha256 of their row hashes), when, by
    whom, why, and its ledger entry; checked: the entry is there and its hash covers
    it, the chain verifies, the recorded row hashes add up, no row of the subject is back.

    \b
    Example:
        pyctl erase certificate 5d0c...
        pyctl --json erase certificate 5d0c... > certificate.json
    """
    doc = run("select privacy.erasure_certificate(%s::uuid) as c", (_uuid(erasure_id, "an erasure"),), write=False)[0]["c"]
    if settings().json:
        emit_json(doc)
    else:
        c = doc["certificate"]
        click.echo(f"CERTIFICATE OF ERASURE {c['erasure_id']}")
        click.echo(f"subject:      {c['subject_type']}/{c['subject_key']}")
        click.echo(f"reason:       {c.get('reason')}" + (f" (reference {c['reference']})" if c.get("reference") else ""))
        click.echo(f"requested by: {c.get('requested_by')} at {c.get('requested_at')}")
        click.echo(f"erased by:    {c.get('erased_by')} at {c.get('erased_at')}" + (f" (replayed from {c['source']})" if c.get("source") else ""))
        click.echo(f"ledger:       event {c['ledger']['seq']} ({c['ledger']['event']}), sha256 {c['ledger']['hash']}")
        click.echo(f"rows erased:  {c.get('rows')}")
        table(c.get("tables") or [], ["table", "rows", "sha256"])
        for name, ok in doc["checks"].items():
            click.echo(f"check {name}: {'ok' if ok else 'FAILED'}")
    if not doc["valid"]:
        failed = [k for k, v in doc["checks"].items() if not v]
        raise PyctlError(f"erasure {erasure_id}: the certificate does not check out ({', '.join(failed)})")


def _uuid(value: str, what: str = "a hold or restriction") -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PyctlError(f"{value!r} is not {what} id (a UUID)") from None


# -- ledger and history ------------------------------------------------------------------


@main.group()
def ledger() -> None:
    """The append-only, hash-chained record of every event."""


@ledger.command("verify")
@json_option
def ledger_verify() -> None:
    """Recompute the ledger's hash chain; name the first broken entry.

    \b
    Example:
        pyctl ledger verify
    """
    rows = run("select seq, problem from privacy.verify_ledger()", write=False)
    count = run("select count(*) as n, max(seq) as head, "
                "(select encode(hash, 'hex') from privacy.ledger order by seq desc limit 1) as head_hash from privacy.ledger",
                write=False)[0]
    if settings().json:
        emit_json({"ok": not rows, "entries": count["n"], "head": count["head"], "head_hash": count["head_hash"], "problems": rows})
    elif not rows:
        click.echo(f"ledger verifies: {count['n']} entries, head {count['head']} (sha256 {count['head_hash']})")
    if rows:
        raise PyctlError(f"ledger broken at entry {rows[0]['seq']}: {rows[0]['problem']}")


@main.command()
@click.argument("key")
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@json_option
def history(key: str, subject_type: str | None) -> None:
    """Show a subject's events, in order.

    \b
    Example:
        pyctl history 42
    """
    rows = run("select seq, recorded_at, event, restriction_id as id, session_role, acting_role, payload "
               "from privacy.ledger where subject_type = %s and subject_key = %s order by seq",
               (default_subject(subject_type), key), write=False)
    show(rows, ["seq", "recorded_at", "event", "id", "session_role", "payload"], f"no events for {key}")


@main.command()
@click.option("--out", required=True, metavar="FILE", help="Where to write the report ('-': stdout).")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True,
              help="html: one self-contained, printable document; json: the same facts.")
@click.option("--case", "case_ref", metavar="REF", help="Only the legal holds of this case (and restrictions on their subjects).")
@click.option("--subject", "subject", nargs=2, metavar="TYPE KEY", help="Only this subject's holds and restrictions.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]), metavar="DATE",
              help="Only holds and restrictions in force at some time since DATE (UTC).")
@click.option("--no-fleet", "no_fleet", is_flag=True, help="Do not connect to the fleet's copies to see whether they have each hold.")
@json_option
def report(out: str, fmt: str, case_ref: str | None, subject: tuple[str, str] | None, since: Any, no_fleet: bool) -> None:
    """Write the report counsel and the DPO read, print and check.

    Per legal hold: case, subject, who placed it, when and why, its ledger events,
    its preservation digests and their verification now, the exports made under
    it with their manifest hashes, and whether each fleet copy has it. Per
    restriction: basis, each lifecycle step with its evidence, the recipients told
    (Art. 19) and the release. Then coverage, doctor's findings, the ledger's head
    hash and whether the chain verifies, a timeline, and how to check every hash.
    Run it as a steward. Prints the path; the file's sha256 goes to stderr.

    \b
    Example:
        pyctl report --out report.html
        pyctl report --out case-118.html --case 2026-CV-118
        pyctl report --out customer-42.json --format json --subject customer 42
    """
    import datetime as dt

    from .report import Filters, write

    since_utc = since.replace(tzinfo=dt.UTC) if since is not None else None
    filters = Filters(case=case_ref, subject_type=subject[0] if subject else None, subject_key=subject[1] if subject else None,
                      since=since_utc)
    result = write(settings().dsn, out, fmt, filters, check_fleet=not no_fleet)
    text = result.pop("text")
    if out == "-":
        sys.stdout.write(text)
    elif settings().json:
        emit_json(result)
    else:
        click.echo(click.format_filename(out))
    click.echo(f"report: {result['holds']} legal hold(s) ({result['holds_violated']} violated), {result['restrictions']} restriction(s), "
               f"ledger {'verifies' if result['ledger_verifies'] else 'BROKEN'}; sha256 {result['sha256']}", err=True)


# -- discover, coverage, doctor -----------------------------------------------------------------


@main.command()
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@click.option("--apply", "apply_plan", is_flag=True, help="Protect every table of the plan, in one transaction.")
@click.option("--emit-migration", "emit_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Write a yoyo migration that protects the plan through the SQL API, for review.")
@click.option("--dismiss", "dismiss_table", metavar="TABLE",
              help="Record that TABLE (listed by discover) needs no protection; needs --reason.")
@click.option("--undismiss", "undismiss_table", metavar="TABLE", help="Withdraw the dismissal of TABLE.")
@click.option("--reason", metavar="TEXT", help="Why the table is dismissed (with --dismiss).")
@json_option
def discover(subject_type: str | None, apply_plan: bool, emit_dir: str | None, dismiss_table: str | None,
             undismiss_table: str | None, reason: str | None) -> None:
    """Find every table holding a subject's data and print a protection plan.

    Walks foreign keys from the subject's root table at any depth (composite keys,
    other schemas, and keys declared on every partition or inheritance child
    included), adds the tables the subject's row points at when their rows are the
    subject's own, lists shared lookup tables (a store many subjects point at) as
    "shared, not protected" with the sharing measured, and lists columns named like
    the key that have no foreign key (unconfirmed). --apply never protects shared
    tables, unconfirmed columns or dismissed tables. A table a person decided needs
    no protection is dismissed with a reason (recorded in the ledger); coverage then
    lists it instead of failing on it.

    \b
    Example:
        pyctl discover --subject customer
        pyctl discover --subject customer --emit-migration migrations/
        pyctl discover --subject customer --apply
        pyctl discover --subject customer --dismiss public.newsletter --reason "emails only, no customer ids"
        pyctl discover --subject customer --undismiss public.newsletter
    """
    from .discover import apply, emit_migration, plan, show_plan

    chosen = default_subject(subject_type)
    if dismiss_table or undismiss_table:
        if (dismiss_table and undismiss_table) or apply_plan or emit_dir:
            raise click.UsageError("--dismiss and --undismiss go alone")
        if dismiss_table:
            if not reason or not reason.strip():
                raise click.UsageError("--dismiss needs --reason TEXT: who decided what, and why")
            run("select privacy.dismiss(%s, %s::regclass, %s)", (chosen, check_table_name(dismiss_table), reason))
            click.echo(f"dismissed {dismiss_table} for {chosen}: {reason}", err=True)
        else:
            assert undismiss_table is not None
            run("select privacy.undismiss(%s, %s::regclass)", (chosen, check_table_name(undismiss_table)))
            click.echo(f"{undismiss_table} is no longer dismissed for {chosen}", err=True)
        return
    if reason:
        raise click.UsageError("--reason goes with --dismiss")
    steps = plan(settings().dsn, chosen)
    if settings().json and not (apply_plan or emit_dir):
        emit_json(steps)
    else:
        show_plan(steps)
    if emit_dir:
        path = emit_migration(steps, chosen, emit_dir)
        click.echo(f"wrote {path}", err=True)
    if apply_plan:
        done = apply(settings().dsn, steps)
        click.echo(f"protected {len(done)} table(s): {', '.join(done) or 'none needed'}", err=True)


@main.command()
@json_option
def coverage() -> None:
    """List tables holding a subject's key that are neither protected nor dismissed; exit 1 if any.

    A table counts when a foreign key leads from it to the subject (also one declared
    on every partition only) or when a column is named like the subject's key
    (unconfirmed): protect it, or dismiss it with pyctl discover --dismiss. Dismissed
    tables (who decided, why) and shared lookup tables left unprotected are listed too.

    \b
    Example:
        pyctl coverage && echo "every table is protected"
    """
    rows = run("select subject_type, table_name as table, kind, status, gap, array_to_string(columns, ',') as columns, "
               "parent_table, note, dismissed_by, dismissed_at, reason from privacy.coverage()", write=False)
    gaps = [r for r in rows if r["gap"]]
    if settings().json:
        emit_json(rows)
    elif rows:
        table([{**r, "why": r["reason"] if r["status"] == "dismissed" else r["note"],
                "by": r["dismissed_by"] or ""} for r in rows],
              ["subject_type", "table", "kind", "status", "columns", "by", "why"])
    if gaps:
        raise PyctlError(f"{len(gaps)} table(s) holding subject keys are neither protected nor dismissed: "
                         "pyctl discover --apply protects the confirmed ones; protect or dismiss the rest")
    if not settings().json:
        done = [r for r in rows if r["status"] == "dismissed"]
        click.echo("every reachable table is protected" + (f" ({len(done)} dismissed)" if done else ""))


@main.command()
@click.option("--fix", "apply_fixes", is_flag=True, help="Apply the safe fixes (security_invoker on views, regenerate enforcement).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@json_option
def doctor(apply_fixes: bool, strict: bool) -> None:
    """Find every way restricted roles can still reach protected rows; exit 1 on errors.

    Errors weaken enforcement (missing or altered triggers and policies, definer
    views, materialized views, rules, publications, ...); warnings name roles and
    channels that see everything, which applications must never use.

    \b
    Example:
        pyctl doctor
        pyctl doctor --fix
    """
    query = "select severity, category, object, finding, fix, fix_sql from privacy.doctor()"
    rows = run(query, write=False)
    if apply_fixes:
        fixes = list(dict.fromkeys(r["fix_sql"] for r in rows if r["fix_sql"]))
        if fixes:
            conn = connect(settings().dsn)
            try:
                require_primary(conn)
                with conn.transaction():
                    for statement in fixes:
                        conn.execute(statement.encode())
            except psycopg.Error as exc:
                raise PyctlError(f"fix failed: {describe(exc)}") from None
            finally:
                conn.close()
            click.echo(f"applied {len(fixes)} fix(es)", err=True)
            rows = run(query, write=False)
    if settings().json:
        emit_json(rows)
    elif not rows:
        click.echo("no findings")
    else:
        for r in rows:
            click.echo(f"{r['severity'].upper()} [{r['category']}] {r['finding']}\n    fix: {r['fix']}")
    errors = sum(1 for r in rows if r["severity"] == "error")
    warnings = len(rows) - errors
    if errors or (strict and warnings):
        raise PyctlError(f"{errors} error(s), {warnings} warning(s)")


# -- recipients and watch (GDPR Art. 19) ----------------------------------------------------


@main.group()
def recipient() -> None:
    """Recipients of the data, who must be told of every restriction (Art. 19)."""


@recipient.command("add")
@click.argument("name")
@click.option("--description", default="", metavar="TEXT", help="Who or what the recipient is.")
def recipient_add(name: str, description: str) -> None:
    """Register a recipient; each restriction placed or released creates a notice for it.

    \b
    Example:
        pyctl recipient add salesforce --description "CRM sync, owned by the sales ops team"
    """
    run("select privacy.add_recipient(%s, %s)", (name, description))
    click.echo(f"recipient {name} added", err=True)


@recipient.command("list")
@json_option
def recipient_list() -> None:
    """List the recipients and how many notices each has pending.

    \b
    Example:
        pyctl recipient list
    """
    show(run("select r.name, r.description, r.added_at, "
             "(select count(*) from privacy.recipient_notices n where n.recipient = r.name and n.acked_at is null) as pending "
             "from privacy.recipients r order by r.name", write=False),
         ["name", "description", "pending", "added_at"])


@recipient.command("remove")
@click.argument("name")
def recipient_remove(name: str) -> None:
    """Remove a recipient (refused while it has pending notices).

    \b
    Example:
        pyctl recipient remove old_newsletter_tool
    """
    run("select privacy.remove_recipient(%s)", (name,))
    click.echo(f"recipient {name} removed", err=True)


@recipient.command("pending")
@json_option
def recipient_pending() -> None:
    """List the notices recipients have not been told of yet.

    \b
    Example:
        pyctl recipient pending
    """
    show(run("select recipient, seq as event, event as kind, subject_type || '/' || subject_key as subject, id, created_at "
             "from privacy.pending_notices()", write=False),
         ["recipient", "event", "kind", "subject", "id", "created_at"], "no pending notices")


@recipient.command("ack")
@click.argument("name")
@click.argument("event", type=int)
def recipient_ack(name: str, event: int) -> None:
    """Record that a recipient was told of an event (its ledger position).

    \b
    Example:
        pyctl recipient ack salesforce 42
    """
    run("select privacy.ack_notice(%s, %s)", (name, event))
    click.echo(f"recipient {name} told of event {event}", err=True)


@main.command()
@click.option("--since", default=0, type=click.IntRange(0, 2**63 - 1), metavar="POSITION",
              help="Print events after this ledger position (default: all).")
@click.option("--limit", type=int, metavar="N", help="Stop after N events.")
@click.option("--idle-timeout", type=float, metavar="SECONDS", help="Stop after this long without an event.")
def watch(since: int, limit: int | None, idle_timeout: float | None) -> None:
    """Print ledger events as JSON lines, as they happen; resumable with --since.

    Each line has the event's ledger position (seq), time, kind, subject and
    hold or restriction id; no reasons. After a disconnect it reconnects and
    resumes after the last position it printed, so nothing is lost or repeated.

    \b
    Example:
        pyctl watch --since 1200 | kafka-console-producer --topic privacy-events
    """
    from .watch import follow

    follow(settings().dsn, since=since, limit=limit, idle_timeout=idle_timeout)


# -- followers, forks and restored backups ---------------------------------------------------


@ledger.command("export")
@click.argument("path", metavar="FILE")
@json_option
def ledger_export(path: str) -> None:
    """Write the ledger and everything a copy needs to catch up to a file.

    For a primary that may be gone or out of reach later: `pyctl ledger import`
    brings a fork or restored backup to this state from the file.

    \b
    Example:
        pyctl ledger export /backups/privacy-ledger-2026-11-26.json
    """
    from .fleet import export_state

    result = export_state(settings().dsn, path)
    if settings().json:
        emit_json(result)
    else:
        click.echo(f"wrote {result['file']}: {result['entries']} ledger entries, sha256 {result['sha256']}")


@ledger.command("import")
@click.argument("path", metavar="FILE")
@json_option
def ledger_import(path: str) -> None:
    """Bring this fork or restored backup to the state recorded in a ledger file.

    Idempotent and resumable, like sync; conflicting corrections are reported, not applied.

    \b
    Example:
        pyctl --dsn "$RESTORED_URL" ledger import /backups/privacy-ledger-2026-11-26.json
    """
    from .fleet import read_state, sync

    state = read_state(path)
    report = sync(settings().dsn or "", state, "this database", progress=sys.stderr.isatty())
    _print_sync([report])


@main.group()
def fleet() -> None:
    """The copies of this database: followers, forks, restored backups."""


@fleet.command("add")
@click.argument("name")
@click.option("--dsn", "copy_dsn", required=True, metavar="DSN",
              help="The copy's connection string, or the NAME of an environment variable holding it (nothing secret is stored).")
@click.option("--kind", required=True, type=click.Choice(["follower", "fork", "backup"]))
def fleet_add(name: str, copy_dsn: str, kind: str) -> None:
    """Register a copy of this database.

    \b
    Example:
        pyctl fleet add replica1 --dsn HEROKU_POSTGRESQL_NAVY_URL --kind follower
        pyctl fleet add staging --dsn "postgresql://owner@staging/shop" --kind fork
    """
    import re

    env = copy_dsn if re.fullmatch(r"[A-Z_][A-Z0-9_]*", copy_dsn) else None
    if env is None:
        try:
            psycopg.conninfo.conninfo_to_dict(copy_dsn)
        except psycopg.ProgrammingError as exc:
            raise PyctlError(f"malformed connection string for {name}: {describe(exc)}") from None
    run("select privacy.fleet_add(%s, %s, %s, %s)", (name, kind, None if env else copy_dsn, env))
    click.echo(f"registered {kind} {name}" + (f" (DSN from ${env})" if env else ""), err=True)


@fleet.command("list")
@json_option
def fleet_list() -> None:
    """List the registered copies.

    \b
    Example:
        pyctl fleet list
    """
    rows = run("select name, kind, case when dsn_env is not null then '$' || dsn_env "
               "else regexp_replace(regexp_replace(dsn, 'password=\\S+', 'password=***', 'g'), ':[^:@/]+@', ':***@', 'g') end as dsn, added_at "
               "from privacy.fleet order by name", write=False)
    show(rows, ["name", "kind", "dsn", "added_at"], "no copies registered")


@fleet.command("remove")
@click.argument("name")
def fleet_remove(name: str) -> None:
    """Forget a registered copy (the copy itself is untouched).

    \b
    Example:
        pyctl fleet remove staging
    """
    run("select privacy.fleet_remove(%s)", (name,))
    click.echo(f"removed {name} from the fleet", err=True)


@fleet.command("status")
@json_option
def fleet_status() -> None:
    """One line per copy: reachable, follower or writable, lag or how far behind; exit 1 if any is behind.

    \b
    Example:
        pyctl fleet status
    """
    from .fleet import copy_report, fleet_rows

    conn = connect(settings().dsn)
    try:
        require_installed(conn)
        reports = [copy_report(conn, row) for row in fleet_rows(conn)]
    finally:
        conn.close()
    show(reports, ["name", "kind", "reachable", "role", "lag_bytes", "lag_seconds", "latest_event_visible", "behind", "ahead", "detail"],
         "no copies registered")
    bad = [r["name"] for r in reports if not r["ok"]]
    if bad:
        raise PyctlError(f"{len(bad)} copy(ies) behind or unreachable: {', '.join(bad)}")


@main.command("sync")
@click.argument("names", nargs=-1, metavar="NAME")
@click.option("--all", "sync_all", is_flag=True, help="Every registered fork and backup.")
@json_option
def sync_command(names: tuple[str, ...], sync_all: bool) -> None:
    """Bring forks and restored backups up to this primary's state.

    Holds, restrictions, lifecycle steps, releases and corrections made since the
    copy was taken; a correction applies only where the row still holds its old
    value, else it is reported as a conflict. Idempotent and resumable.

    \b
    Example:
        pyctl sync staging
        pyctl sync --all
    """
    from .fleet import sync_from_primary

    if bool(names) == sync_all:
        raise click.UsageError("give copy names or --all")
    reports = sync_from_primary(settings().dsn, list(names) or None, progress=sys.stderr.isatty())
    _print_sync(reports)


def _print_sync(reports: list[dict[str, Any]]) -> None:
    if settings().json:
        emit_json(reports)
        return
    for r in reports:
        entries = ", ".join(f"{n} {k}" for k, n in sorted(r["entries"].items())) or "none new"
        click.echo(f"{r['target']}: synced up to event {r.get('up_to_seq')} of {r['source']}; registry +{r['registry']}; "
                   f"source entries replayed: {entries}; rows re-marked {r.get('rows_remarked', 0)}; "
                   f"conflicts {r.get('conflicts', 0)}; refused {r.get('refused', 0)}")
        for x in r.get("erasures_reapplied") or []:
            click.echo(f"  erasure {x.get('erasure')} of {x.get('subject')}: {x.get('outcome')}" + (f" ({x['why']})" if x.get("why") else ""))
        for c in r.get("conflict_details", []):
            d = c["detail"]
            if d.get("operation") == "ERASE":
                click.echo(f"  conflict: erasure {d.get('erasure')} of {d.get('subject')} (source entry {c['source_seq']}): {d.get('why')}")
                continue
            click.echo(f"  conflict: {d.get('operation')} {d.get('table')} {json.dumps(d.get('row'))} (source entry {c['source_seq']}): "
                       f"the row no longer holds {json.dumps(d.get('before'))}; left alone")
        for c in r.get("refused_details", []):
            click.echo(f"  refused: source entry {c['source_seq']} ({c['event']}): {c['detail'].get('why')}")
    refused = [r for r in reports if r.get("refused")]
    if refused:
        raise PyctlError(f"{sum(r['refused'] for r in refused)} entries of the source's ledger were refused "
                         "(not vouched for, or not allowed here): see above; everything else was synced")


# -- roles -----------------------------------------------------------------------------------


@main.group()
def roles() -> None:
    """Create and check the roles applications and stewards connect as."""


@roles.command("create-app")
@click.argument("role")
@click.option("--password", metavar="TEXT", help="Login password (default: a generated one, printed once). Only its SCRAM verifier is sent.")
@click.option("--schema", "schemas", multiple=True, metavar="NAME",
              help="Schemas whose tables the application uses (default: those holding protected tables).")
@click.option("--purpose", "purposes", multiple=True, metavar="P",
              help="A purpose the application serves (repeatable; default: none, a general role).")
@json_option
def roles_create_app(role: str, password: str | None, schemas: tuple[str, ...], purposes: tuple[str, ...]) -> None:
    """Create a login role for an application, subject to every hold and restriction.

    It gets SELECT, INSERT, UPDATE, DELETE on the tables and USAGE on the
    sequences of the given schemas, and nothing that bypasses enforcement. The
    password is turned into a SCRAM-SHA-256 verifier here: the server never
    receives (nor logs) it in clear.

    With --purpose it serves those purposes: restrictions scoped to one of
    them hide the subject's rows from it, and exceptions for one let it read.

    \b
    Example:
        pyctl roles create-app shop_app
        pyctl roles create-app newsletter_app --purpose marketing
    """
    from .roles import scram_sha256_verifier

    secret = password or secrets.token_urlsafe(18)
    if not schemas:
        found = run("select distinct table_schema from privacy.protected_tables order by 1", write=False)
        schemas = tuple(r["table_schema"] for r in found) or ("public",)
    run_many([("select privacy.create_app_role(%s, %s, %s::name[])", (role, scram_sha256_verifier(secret), list(schemas))),
              *(("select privacy.grant_purpose(%s, %s)", (role, p)) for p in purposes)])
    data = {"role": role, "password": None if password else secret, "schemas": list(schemas), "purposes": list(purposes)}
    if settings().json:
        emit_json(data)
    else:
        click.echo(f"created application role {role} (tables in: {', '.join(schemas)}; "
                   f"purposes: {', '.join(purposes) or 'none, a general role'})", err=True)
        if not password:
            click.echo(secret)


@roles.command("check")
@click.argument("role")
@json_option
def roles_check(role: str) -> None:
    """Say whether a role is really restricted; exit 1 when it is not.

    A restricted role is not a superuser, has no BYPASSRLS, does not own a
    protected table nor belong to an owner, and is not a steward.

    \b
    Example:
        pyctl roles check shop_app
    """
    if not run("select 1 from pg_catalog.pg_roles where rolname = %s", (role,), write=False):
        raise PyctlError(f"role {role} does not exist")
    problems = [r["problem"] for r in run("select problem from privacy.role_problems(%s)", (role,), write=False)]
    if settings().json:
        emit_json({"role": role, "restricted": not problems, "problems": problems})
    elif not problems:
        click.echo(f"{role} is restricted: every hold and restriction applies to it")
    else:
        for problem in problems:
            click.echo(f"{role}: {problem}")
    if problems:
        raise PyctlError(f"{role} is not restricted ({len(problems)} problem(s))")


@roles.command("steward")
@click.argument("role")
def roles_steward(role: str) -> None:
    """Make a role a steward: it places and lifts holds and sees restricted data.

    \b
    Example:
        pyctl roles steward alice
    """
    run("select privacy.add_steward(%s)", (role,))
    steward = run("select privacy.steward_role() as r", write=False)[0]["r"]
    click.echo(f"{role} is now a member of {steward}", err=True)


# -- demo --------------------------------------------------------------------------------------


@main.command()
@click.option("--keep", is_flag=True, help="Keep the cluster running at the end and print its DSN.")
def demo(keep: bool) -> None:
    """Walk through a legal hold and a processing restriction on a throwaway database.

    Starts a temporary PostgreSQL, creates a small shop, installs the toolkit and
    shows what the application role sees and what is refused.

    \b
    Example:
        pyctl demo
        pyctl demo --keep
    """
    from .demo import run_demo

    run_demo(main, keep=keep)  # the command group is passed in: demo.py does not import cli.py


# -- commands defined in their own modules ---------------------------------------------------

main.add_command(export_command)
