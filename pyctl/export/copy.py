"""Reading the subject's rows with COPY from one snapshot, and `export()` itself."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..db import PyctlError, connect, describe, heal, only_subject_type, require_installed, require_primary
from .manifest import FORMATS, MANIFEST_KIND, SESSION_SETTINGS, _Member, _Staging, _Target, _write_manifest, check_output
from .plan import (
    _check_complete,
    _plan,
    _privileges,
    _Progress,
    _refuse_unprivileged,
    _safe,
    _Subject,
    _subject_dir_name,
    _Table,
)

# COPY ... (FORMAT csv) with a delimiter and a quote that the generated text never
# contains, so that each row (a JSON object, an INSERT statement) arrives verbatim.
_VERBATIM = sql.SQL("(FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')")

_NEEDS_ESCAPE = re.compile(r"[\n\r\x1e\x1f]")


def _literal(column: sql.Composable) -> sql.Composed:
    """SQL text of a value as a literal on one line (NULL for null; E'...' escapes for line breaks)."""
    text = sql.SQL("({})::text").format(column)
    return sql.SQL(
        "coalesce(case when {t} ~ '[\\n\\r\\x1e\\x1f]' then 'E' || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace("
        "pg_catalog.replace(pg_catalog.ltrim(pg_catalog.quote_literal({t}), 'E'), E'\\n', '\\n'), E'\\r', '\\r'), "
        "E'\\x1e', '\\x1e'), E'\\x1f', '\\x1f') else pg_catalog.quote_literal({t}) end, 'NULL')"
    ).format(t=text)


def _copy_statement(conn: psycopg.Connection, fmt: str, table: _Table, query: str) -> sql.Composed:
    rows = sql.SQL(query)  # composed by privacy.subject_rows_sql(): identifiers quoted, the key a literal
    if fmt == "csv":
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(rows)
    if fmt in ("json", "ndjson"):
        # A json column may hold line breaks as whitespace (strings cannot): a space means the same.
        return sql.SQL("COPY (select pg_catalog.replace(pg_catalog.replace(pg_catalog.row_to_json(s)::text, E'\\n', ' '), "
                       "E'\\r', ' ') from ({}) s) TO STDOUT {}").format(rows, _VERBATIM)
    for name in (table.schema, table.relname, *table.insertable):
        if _NEEDS_ESCAPE.search(name):
            raise PyctlError(f"{table.name} cannot be exported as sql: a table or column name contains a line break; use --format csv")
    prefix = sql.SQL("insert into {} ({}) {}values (").format(
        sql.Identifier(table.schema, table.relname), sql.SQL(", ").join(sql.Identifier(c) for c in table.insertable),
        sql.SQL("overriding system value " if table.identity_always else ""),
    ).as_string(conn)
    values = sql.SQL(" || ', ' || ").join(_literal(sql.SQL("s.{}").format(sql.Identifier(c))) for c in table.insertable)
    return sql.SQL("COPY (select {} || {} || ');' from ({}) s) TO STDOUT {}").format(
        sql.Literal(prefix), values if table.insertable else sql.Literal(""), rows, _VERBATIM)


def _sql_header(table: _Table, subject: _Subject, snapshot: dict[str, Any]) -> bytes:
    lines = [
        f"-- {MANIFEST_KIND}: {json.dumps(table.name)}",
        f"-- subject {json.dumps(subject.subject_type + '/' + subject.key)}, snapshot {snapshot['taken_at']}",
        "-- Load into an empty copy of the schema, the files in name order: psql -v ON_ERROR_STOP=1 -f FILE",
        "set standard_conforming_strings = on;",
        "set client_encoding = 'UTF8';",
        f"set datestyle = '{SESSION_SETTINGS['DateStyle']}';",
        f"set intervalstyle = '{SESSION_SETTINGS['IntervalStyle']}';",
        "begin;",
        "",
    ]
    return "\n".join(lines).encode()


def _copy_table(conn: psycopg.Connection, fmt: str, table: _Table, query: str, member: _Member,
                subject: _Subject, snapshot: dict[str, Any], progress: _Progress) -> int:
    """Stream one table's rows of the subject into MEMBER; the number of rows."""
    statement = _copy_statement(conn, fmt, table, query)
    base = progress.rows
    n = 0
    if fmt == "sql":
        member.write(_sql_header(table, subject, snapshot))
    elif fmt == "json":
        member.write(b"[\n")
    with conn.cursor() as cur, cur.copy(statement) as copy:
        if fmt == "json":
            for data in copy:
                if n:
                    member.write(b",\n")
                member.write(data[:-1])  # each COPY message is one row, with its newline
                n += 1
                if not n & 0x3FFF:
                    progress.rows = base + n
                    progress.update(table.name)
        else:
            for data in copy:
                member.write(data)
                n += 1
                if not n & 0x3FFF:
                    progress.rows = base + n
                    progress.update(table.name)
    if fmt == "csv":
        n -= 1  # the header
    if fmt == "json":
        member.write(b"\n]\n" if n else b"]\n")
    elif fmt == "sql":
        member.write(b"commit;\n")
    progress.rows = base + n
    return n


def _snapshot_info(conn: psycopg.Connection) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        info = cur.execute(
            "select pg_catalog.to_char(pg_catalog.statement_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') as taken_at, "
            "pg_catalog.pg_current_snapshot()::text as snapshot, "
            "pg_catalog.current_setting('transaction_isolation') as isolation, "
            "pg_catalog.current_setting('transaction_read_only') = 'on' as read_only, "
            "pg_catalog.current_database()::text as database, "
            "pg_catalog.current_setting('server_version') as server_version, "
            "pg_catalog.current_setting('server_version_num')::integer as server_version_num, "
            "session_user::text as session_role, current_user::text as current_role, "
            "privacy.toolkit_version() as installed_version, "
            "(select l.seq from privacy.ledger l order by l.seq desc limit 1) as ledger_seq, "
            "(select pg_catalog.encode(l.hash, 'hex') from privacy.ledger l order by l.seq desc limit 1) as ledger_hash, "
            "pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'execute') as can_read_control"
        ).fetchone()
        assert info is not None
        sysid = None
        if info.pop("can_read_control"):
            row = cur.execute("select system_identifier::text as s from pg_catalog.pg_control_system()").fetchone()
            sysid = row["s"] if row else None
        if sysid is None:
            row = cur.execute("select pg_catalog.split_part(value, ':', 1) as s from privacy.settings where name = 'database_identity'").fetchone()
            sysid = row["s"] if row else None
        info["system_identifier"] = sysid
    return info


def _subject_state(conn: psycopg.Connection, subject: _Subject) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        active = cur.execute(
            "select r.id::text as id, r.kind, r.case_ref, r.basis, "
            "pg_catalog.to_char(r.placed_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') as placed_at, "
            # Purposes (issue 19): what a restriction is scoped to, and the purposes it excepts.
            "array(select s.purpose from privacy.restriction_purposes s where s.restriction_id = r.id "
            "      and s.kind = 'scope' order by 1) as purposes, "
            "array(select s.purpose from privacy.restriction_purposes s where s.restriction_id = r.id "
            "      and s.kind = 'exception' and s.withdrawn_at is null order by 1) as exceptions "
            "from privacy.processing_restrictions r "
            "where r.subject_type = %s and r.subject_key = %s and r.released_at is null order by r.placed_at, r.id",
            (subject.subject_type, subject.key),
        ).fetchall()
        root = cur.execute(
            "select privacy.qualified(s.table_schema, s.table_name) as t from privacy.subject_types s where s.subject_type = %s",
            (subject.subject_type,),
        ).fetchone()
        # The preservation proof of each hold: the digests of the data as the hold began.
        digests: dict[str, list[dict[str, Any]]] = {}
        for d in cur.execute(
            "select d.hold_id::text as hold, privacy.qualified(d.table_schema, d.table_name) as table, d.row_count as rows, "
            "d.digest as sha256 from privacy.hold_digests d join privacy.processing_restrictions r on r.id = d.hold_id "
            "where r.subject_type = %s and r.subject_key = %s and r.released_at is null order by 1, 2",
            (subject.subject_type, subject.key),
        ).fetchall():
            digests.setdefault(d.pop("hold"), []).append(d)
    return {
        "root_table": root["t"] if root else None,
        "legal_holds": [{"id": r["id"], "case": r["case_ref"], "placed_at": r["placed_at"], "digests_at_start": digests.get(r["id"], [])}
                        for r in active if r["kind"] == "legal_hold"],
        "restrictions": [{"id": r["id"], "basis": r["basis"], "placed_at": r["placed_at"],
                          **({"purposes": r["purposes"]} if r["purposes"] else {}),
                          **({"except": r["exceptions"]} if r["exceptions"] else {})}
                         for r in active if r["kind"] == "restriction"],
    }


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that the partial export is removed."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def export(dsn: str | None, out: Path, *, key: str | None = None, subject_type: str | None = None, all_held: bool = False,
           fmt: str = "csv", as_zip: bool = False, overwrite: bool = False, allow_empty: bool = False,
           progress: bool = False, after_table: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export one subject (KEY) or every subject under an active legal hold (ALL_HELD) to OUT.

    Returns what was exported: the path, and per subject its manifest's sha256 and ledger position.
    AFTER_TABLE, if given, is called with each table's name once its file is written (tests use it
    to change the database while the snapshot is open).
    """
    if fmt not in FORMATS:
        raise PyctlError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if (key is None) == (not all_held):
        raise PyctlError("give a subject KEY, or --all-held")
    out = Path(os.path.abspath(out))
    check_output(out, overwrite)
    conn = connect(dsn)
    bar = _Progress(progress)
    staging: _Staging | None = None
    targets: list[_Target] = []
    try:
        require_installed(conn)
        require_primary(conn)  # the export is recorded in the ledger
        priv = _privileges(conn)
        _refuse_unprivileged(priv)
        heal(conn)  # a table renamed or a partition attached since: known before the snapshot
        conn.execute("select pg_catalog.set_config('client_encoding', 'UTF8', false)")
        subjects: list[_Subject] = []
        if key is not None:
            stype = only_subject_type(conn, subject_type)
            canonical = conn.execute("select privacy.subject_key(%s, %s)", (stype, key)).fetchone()
            assert canonical is not None
            subjects.append(_Subject(stype, str(canonical[0])))
        staging = stage = _Staging(out, is_dir=all_held or not as_zip, overwrite=overwrite)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            # Every name below is qualified; the empty path keeps an exporter's own schemas
            # (an operator ~ of theirs) out of the queries the export composes.
            for name, value in (*SESSION_SETTINGS.items(), ("search_path", "")):
                conn.execute("select pg_catalog.set_config(%s, %s, true)", (name, value))
            info = _snapshot_info(conn)
            if all_held:
                held = conn.execute(
                    "select distinct r.subject_type, r.subject_key from privacy.processing_restrictions r "
                    "where r.kind = 'legal_hold' and r.released_at is null and (%s::text is null or r.subject_type = %s) order by 1, 2",
                    (subject_type, subject_type),
                ).fetchall()
                subjects = [_Subject(t, k, name=_subject_dir_name(t, k)) for t, k in held]
            y, mo, d, h, mi, sec = (int(x) for x in re.findall(r"\d+", info["taken_at"])[:6])
            when = (y, mo, d, h, mi, sec)
            plans: dict[str, list[_Table]] = {}
            for s in subjects:
                if s.subject_type not in plans:
                    plans[s.subject_type] = _plan(conn, s.subject_type)
            bar.total = sum(len(plans[s.subject_type]) for s in subjects)
            for s in subjects:
                s.state = _subject_state(conn, s)
                if all_held:
                    target = _Target(stage.tmp / (s.name + (".zip" if as_zip else "")), as_zip, when)
                else:
                    target = _Target(stage.tmp, as_zip, when)
                targets.append(target)
                tables = plans[s.subject_type]
                width = max(2, len(str(len(tables))))
                for number, table in enumerate(tables, start=1):
                    query = conn.execute("select privacy.subject_rows_sql(%s, %s, %s)", (table.id, s.subject_type, s.key)).fetchone()
                    assert query is not None
                    name = f"{number:0{width}d}-{_safe(table.schema)}.{_safe(table.relname)}.{fmt}"
                    member = target.member(name)
                    bar.update(table.name, force=True)
                    rows = _copy_table(conn, fmt, table, str(query[0]), member, s, info, bar)
                    size, digest = member.close()
                    _check_complete(conn, priv, table, s, rows)
                    s.files.append({"name": name, "table": table.name, "path": table.path, "columns": table.columns,
                                    "rows": rows, "bytes": size, "sha256": digest, "root": table.is_root})
                    bar.done += 1
                    bar.bytes += size
                    bar.update(table.name, force=True)
                    if after_table is not None:
                        after_table(table.name)
        conn.isolation_level = None
        conn.read_only = None
        results = []
        for s, target in zip(subjects, targets, strict=True):
            written = _write_manifest(target, s, fmt, info)
            target.close()
            manifest = written["manifest"]
            if manifest["empty"] and not allow_empty:
                raise PyctlError(
                    f"unknown subject {s.subject_type}/{s.key}: no row in any protected table, nothing exported "
                    "(--allow-empty writes an empty export that says so)")
            results.append({
                "subject_type": s.subject_type, "key": s.key,
                "path": str(out / target.path.name) if all_held else str(out),
                "manifest_sha256": written["manifest_sha256"], "sha256sums_sha256": written["sha256sums_sha256"],
                "files": manifest["total"]["files"], "rows": manifest["total"]["rows"], "bytes": manifest["total"]["bytes"],
                "empty": manifest["empty"],
            })
        # Chain of custody: the manifest's digest goes into the ledger before the export is put in place.
        with conn.transaction():
            for r in results:
                details = {"format": fmt, "zip": as_zip, "name": Path(r["path"]).name, "files": r["files"], "rows": r["rows"],
                           "bytes": r["bytes"], "empty": r["empty"], "sha256sums_sha256": r["sha256sums_sha256"],
                           "snapshot_taken_at": info["taken_at"], "ledger_head_seq": info["ledger_seq"]}
                row = conn.execute("select privacy.record_export(%s, %s, %s, %s::jsonb)",
                                   (r["subject_type"], r["key"], r["manifest_sha256"], json.dumps(details))).fetchone()
                assert row is not None
                r["ledger_seq"] = row[0]
        try:
            stage.commit()
        except (OSError, PyctlError) as exc:
            seqs = ", ".join(str(r["ledger_seq"]) for r in results)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PyctlError(f"the ledger recorded the export (entry {seqs}) but it could not be put at {out}: {reason}") from None
        staging = None
        return {"path": str(out), "format": fmt, "zip": as_zip, "snapshot_taken_at": info["taken_at"], "exports": results}
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    except OSError as exc:
        raise PyctlError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        bar.close()
        for target in targets:
            target.abort()
        if staging is not None:
            staging.discard()
        conn.close()
