"""`pyctl export`: everything held about a subject, from one consistent snapshot, with a verifiable manifest.

An export is a directory (or, with --zip, a zip file holding the same files):

    01-public.addresses.csv ...   one file per protected table, numbered in load order
    manifest.json                 source, snapshot, subject, toolkit; each file's table, rows, bytes, sha256
    SHA256SUMS                    the same digests, and the manifest's, for `sha256sum -c SHA256SUMS`

Every file comes from ONE transaction (REPEATABLE READ, READ ONLY), each table streamed
with COPY through a fixed-size buffer, so memory does not grow with the data. The
export is written under a temporary name beside PATH (.NAME.partial-XXXX) and renamed
onto PATH only once it is complete and the ledger holds the manifest's sha256.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import heapq
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from . import __version__
from .db import PyctlError, connect, describe, heal, require_installed, require_primary

FORMATS = ("csv", "json", "ndjson", "sql")
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
MANIFEST_KIND = "pyctl preservation export"
MANIFEST_VERSION = 1
LEDGER_EVENT = "subject_exported"
BUFFER = 1 << 20  # bytes gathered before a file is hashed and written: the export's memory does not grow beyond it

# Fixed for the export's transaction, so that values are written the same way whatever
# the server's or the role's defaults; recorded in the manifest, and set again at the
# top of every sql file.
SESSION_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "standard_conforming_strings": "on",
}

# COPY ... (FORMAT csv) with a delimiter and a quote that the generated text never
# contains, so that each row (a JSON object, an INSERT statement) arrives verbatim.
_VERBATIM = sql.SQL("(FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')")
_NEEDS_ESCAPE = re.compile(r"[\n\r\x1e\x1f]")


# -- the files of an export -------------------------------------------------------------


class _Member:
    """One file being written: buffered, hashed and counted on the way."""

    def __init__(self, raw: IO[bytes], sync: bool) -> None:
        self._raw = raw
        self._sync = sync
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        if len(self._buf) >= BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._hash.update(self._buf)
            self._raw.write(self._buf)
            self.size += len(self._buf)
            self._buf.clear()

    def close(self) -> tuple[int, str]:
        """Write what is left, make it durable; the file's size and sha256."""
        try:
            self._flush()
            self._raw.flush()
            if self._sync:
                os.fsync(self._raw.fileno())
        finally:
            self.abort()
        return self.size, self._hash.hexdigest()

    def abort(self) -> None:
        if not self._raw.closed:
            with contextlib.suppress(Exception):
                self._raw.close()


class _Target:
    """Where one export's files go: a directory, or a zip file."""

    def __init__(self, path: Path, as_zip: bool, when: tuple[int, int, int, int, int, int]) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._members: list[_Member] = []
        self._when = when
        if as_zip:
            self._zip = zipfile.ZipFile(path, "x", compression=zipfile.ZIP_DEFLATED, compresslevel=6, allowZip64=True)
        else:
            path.mkdir(exist_ok=True)

    def member(self, name: str) -> _Member:
        if self._zip is None:
            member = _Member(open(self.path / name, "xb"), sync=True)  # closed by _Member.close
        else:
            info = zipfile.ZipInfo(name, date_time=self._when)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            member = _Member(self._zip.open(info, "w", force_zip64=True), sync=False)
        self._members = [m for m in self._members if not m.closed] + [member]
        return member

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            _fsync_path(self.path)
        else:
            _fsync_path(self.path)

    def abort(self) -> None:
        for member in self._members:
            member.abort()
        if self._zip is not None:
            with contextlib.suppress(Exception):
                self._zip.close()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Staging:
    """A temporary name beside PATH that becomes PATH only at the very end.

    An interrupted export leaves at most `.NAME.partial-XXXX`, never something at PATH.
    """

    def __init__(self, path: Path, *, is_dir: bool, overwrite: bool) -> None:
        self.path = path
        self.overwrite = overwrite
        parent = path.parent
        check_output(path, overwrite)
        try:
            if is_dir:
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=parent))
            else:
                fd, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=parent)
                os.close(fd)
                os.unlink(name)  # zipfile creates it (mode "x")
                self.tmp = Path(name)
        except OSError as exc:
            raise PyctlError(f"cannot write to {parent}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        """Rename the finished export onto PATH (replacing what --overwrite allows)."""
        check_output(self.path, self.overwrite)
        aside: Path | None = None
        if self.path.exists() or self.path.is_symlink():
            aside = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}-{time.monotonic_ns()}")
            os.rename(self.path, aside)
        try:
            os.rename(self.tmp, self.path)
        except BaseException:
            if aside is not None:
                os.rename(aside, self.path)
            raise
        if aside is not None:
            _remove(aside)
        _fsync_path(self.path.parent)

    def discard(self) -> None:
        _remove(self.tmp)


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an output path that would clobber something, before any work is done."""
    parent = path.parent
    if not parent.exists():
        raise PyctlError(f"cannot write {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise PyctlError(f"cannot write {path}: {parent} is not a directory")
    if path.is_symlink() or path.exists():
        empty = (path.is_dir() and not path.is_symlink() and not any(path.iterdir())) or \
                (path.is_file() and not path.is_symlink() and path.stat().st_size == 0)
        if not empty and not overwrite:
            raise PyctlError(f"{path} exists and is not empty: choose another --out, or pass --overwrite to replace it")


# -- reading the subject's rows -----------------------------------------------------------


@dataclass
class _Table:
    id: int
    name: str  # schema-qualified, quoted where needed
    schema: str
    relname: str
    path: str
    oid: int
    is_root: bool
    rls_active: bool
    own_policies: bool
    columns: list[str] = field(default_factory=list)
    insertable: list[str] = field(default_factory=list)  # not generated: what INSERT may name
    identity_always: bool = False


@dataclass
class _Subject:
    subject_type: str
    key: str
    name: str = ""  # its directory or zip inside an --all-held export
    files: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


ProgressHook = Callable[[str, int, int], None]


class _Progress:
    """A progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._drawn = False
        self.done = 0
        self.total = 1
        self.rows = 0
        self.bytes = 0

    def update(self, label: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        width = 24
        filled = min(width, width * self.done // max(1, self.total))
        line = (f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} files  "
                f"{self.rows:,} rows  {_human(self.bytes)}  {label}")
        columns = shutil.get_terminal_size((100, 24)).columns
        sys.stderr.write("\r" + line[: max(10, columns - 1)] + "\x1b[K")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _safe(text: str) -> str:
    """A file name made of the text's safe characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"


def _subject_dir_name(subject_type: str, key: str) -> str:
    name = f"{subject_type}-{key}"
    if _safe(name) == name:
        return name
    return f"{_safe(name)[:80]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _privileges(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "select current_user::text as role, r.rolsuper as superuser, "
        # Stewards may record an export (the steward role's name is theirs to read, not everyone's).
        "pg_catalog.has_function_privilege('privacy.record_export(text, text, text, jsonb)', 'execute') as steward, "
        "pg_catalog.pg_has_role(current_user, (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'privacy'), 'MEMBER') "
        "  as toolkit_owner "
        "from pg_catalog.pg_roles r where r.rolname = current_user"
    ).fetchone()
    assert row is not None
    return dict(zip(("role", "superuser", "steward", "toolkit_owner"), row, strict=True))


def _refuse_unprivileged(priv: dict[str, Any]) -> None:
    if not (priv["superuser"] or priv["steward"] or priv["toolkit_owner"]):
        raise PyctlError(
            f"export refused: {priv['role']} is neither a steward nor the toolkit's owner; a restricted role does not see "
            f"restricted subjects' rows, so its export would silently miss them. Export as a steward (pyctl roles steward ROLE)"
        )


def _default_subject_type(conn: psycopg.Connection, subject_type: str | None) -> str:
    if subject_type:
        return subject_type
    rows = conn.execute("select subject_type from privacy.subject_types order by 1").fetchall()
    if len(rows) == 1:
        return str(rows[0][0])
    if not rows:
        raise PyctlError("no subject type is registered yet: pyctl subject add TYPE --table T --key COLUMN")
    raise PyctlError(f"several subject types exist ({', '.join(r[0] for r in rows)}): choose one with --subject")


def _plan(conn: psycopg.Connection, subject_type: str) -> list[_Table]:
    """The protected tables of a subject type, in an order that loads (referenced tables first)."""
    rows = conn.execute(
        "select pt.id, privacy.qualified(pt.table_schema, pt.table_name) as name, pt.table_schema::text as schema, "
        "pt.table_name::text as relname, privacy.describe_path(pt) as path, c.oid::bigint as oid, "
        "(st.table_schema, st.table_name) = (pt.table_schema, pt.table_name) as is_root, "
        "c.oid is not null and pg_catalog.row_security_active(c.oid) as rls_active, "
        "exists (select 1 from pg_catalog.pg_policy pol where pol.polrelid = c.oid and pol.polname !~ '^privacy_') as own_policies "
        "from privacy.protected_tables pt "
        "join privacy.subject_types st on st.subject_type = pt.subject_type "
        "left join pg_catalog.pg_class c on c.oid = pg_catalog.to_regclass(privacy.qualified(pt.table_schema, pt.table_name)) "
        "where pt.subject_type = %s order by pt.id",
        (subject_type,),
    ).fetchall()
    tables = []
    for r in rows:
        if r[5] is None:
            raise PyctlError(f"protected table {r[1]} no longer exists: nothing can be exported until `pyctl unprotect` or a restore")
        tables.append(_Table(id=r[0], name=r[1], schema=r[2], relname=r[3], path=r[4], oid=r[5], is_root=r[6],
                             rls_active=r[7], own_policies=r[8]))
    for t in tables:
        for name, generated, identity_always in conn.execute(
            "select a.attname::text, a.attgenerated <> '', a.attidentity = 'a' from pg_catalog.pg_attribute a "
            "where a.attrelid = %s and a.attnum > 0 and not a.attisdropped and a.attname <> 'privacy_mark' order by a.attnum",
            (t.oid,),
        ).fetchall():
            t.columns.append(name)
            if not generated:
                t.insertable.append(name)
            t.identity_always = t.identity_always or identity_always
    # Referenced tables before the tables that point at them, else registry order.
    by_oid = {t.oid: t for t in tables}
    edges = conn.execute(
        "select distinct c.conrelid::bigint, c.confrelid::bigint from pg_catalog.pg_constraint c "
        "where c.contype = 'f' and c.conparentid = 0 and c.conrelid = any(%s) and c.confrelid = any(%s) and c.conrelid <> c.confrelid",
        (list(by_oid), list(by_oid)),
    ).fetchall()
    needs: dict[int, set[int]] = {t.oid: set() for t in tables}
    for child, parent in edges:
        needs[child].add(parent)
    ordered: list[_Table] = []
    ready = [(t.id, t.oid) for t in tables if not needs[t.oid]]
    heapq.heapify(ready)
    placed: set[int] = set()
    while len(ordered) < len(tables):
        if not ready:  # a cycle of foreign keys: the rest in registry order
            ready = [(t.id, t.oid) for t in tables if t.oid not in placed]
            heapq.heapify(ready)
            for t in tables:
                needs[t.oid].clear()
        _, oid = heapq.heappop(ready)
        if oid in placed:
            continue
        placed.add(oid)
        ordered.append(by_oid[oid])
        for t in tables:
            if oid in needs[t.oid]:
                needs[t.oid].discard(oid)
                if not needs[t.oid] and t.oid not in placed:
                    heapq.heappush(ready, (t.id, t.oid))
    return ordered


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


def _manifest(subject: _Subject, fmt: str, info: dict[str, Any]) -> dict[str, Any]:
    rows = sum(f["rows"] for f in subject.files)
    root_rows = sum(f["rows"] for f in subject.files if f.get("root"))
    files = [{k: v for k, v in f.items() if k != "root"} for f in subject.files]
    return {
        "kind": MANIFEST_KIND,
        "manifest_version": MANIFEST_VERSION,
        "toolkit": {"pyctl": __version__, "installed": info["installed_version"]},
        "source": {
            "system_identifier": info["system_identifier"],
            "database": info["database"],
            "server_version": info["server_version"],
            "server_version_num": info["server_version_num"],
        },
        "snapshot": {
            "taken_at": info["taken_at"],
            "isolation": info["isolation"],
            "read_only": info["read_only"],
            "txid_snapshot": info["snapshot"],
            "ledger_head": {"seq": info["ledger_seq"], "hash": info["ledger_hash"]},
            "settings": {**SESSION_SETTINGS, "client_encoding": "UTF8"},
        },
        "exported_by": {"session_role": info["session_role"], "current_role": info["current_role"]},
        "subject": {
            "type": subject.subject_type,
            "key": subject.key,
            "found": rows > 0,
            "in_root_table": root_rows > 0,
            **subject.state,
        },
        "empty": rows == 0,
        "format": fmt,
        "files": files,
        "total": {"files": len(files), "rows": rows, "bytes": sum(f["bytes"] for f in files)},
    }


def _write_manifest(target: _Target, subject: _Subject, fmt: str, info: dict[str, Any]) -> dict[str, Any]:
    manifest = _manifest(subject, fmt, info)
    text = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    member = target.member(MANIFEST)
    member.write(text)
    _, manifest_sha = member.close()
    sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in manifest["files"]) + f"{manifest_sha}  {MANIFEST}\n"
    member = target.member(SUMS)
    member.write(sums.encode())
    _, sums_sha = member.close()
    return {"manifest": manifest, "manifest_sha256": manifest_sha, "sha256sums_sha256": sums_sha}


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
            stype = _default_subject_type(conn, subject_type)
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


def _check_complete(conn: psycopg.Connection, priv: dict[str, Any], table: _Table, subject: _Subject, rows: int) -> None:
    """Refuse an export that row-level security made incomplete.

    Where row-level security applies to the exporter (a steward, or an owner under FORCE
    ROW LEVEL SECURITY) and the table has policies besides the toolkit's own, or the
    exporter is no steward, what it read is compared with a count made as the toolkit's owner.
    """
    if not table.rls_active or (priv["steward"] and not table.own_policies):
        return
    row = conn.execute("select privacy.subject_row_count(%s, %s, %s)", (table.id, subject.subject_type, subject.key)).fetchone()
    total = int(row[0]) if row else 0
    if total != rows:
        raise PyctlError(
            f"export refused: row-level security hides {total - rows} of the {total} rows of {subject.subject_type}/{subject.key} "
            f"in {table.name} from {priv['role']}; nothing was exported (export as a role that sees every row)")


# -- verification -----------------------------------------------------------------------------


class _Reader:
    """The files of an export, in a directory or a zip file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.entries: dict[str, str] = {}
            for p in sorted(path.rglob("*")):
                rel = p.relative_to(path).as_posix()
                self.entries[rel] = "directory" if p.is_dir() and not p.is_symlink() else "file"
        elif path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise PyctlError(f"{path} is neither an export directory nor a zip file") from None
            self.entries = {i.filename.rstrip("/"): "directory" if i.is_dir() else "file" for i in self._zip.infolist()}
        else:
            raise PyctlError(f"no export at {path}")

    def open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name)
        return open(self.path / name, "rb")  # the caller closes it

    def read(self, name: str) -> bytes:
        """A small file (the manifest, SHA256SUMS), whole."""
        try:
            with self.open(name) as f:
                return f.read()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise PyctlError(f"{self.path}: {name} cannot be read: {exc}") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _count_line_starts(stream: IO[bytes], prefix: bytes, sink: Callable[[bytes], None]) -> int:
    """Lines that start with PREFIX, streaming; every chunk also goes to SINK."""
    pattern = b"\n" + prefix
    carry = b"\n"
    count = 0
    while chunk := stream.read(BUFFER):
        sink(chunk)
        data = carry + chunk
        count += data.count(pattern)
        carry = data[-(len(pattern) - 1):]
    return count


def _digest(stream: IO[bytes], fmt: str | None) -> tuple[int, str, int | None]:
    """Size, sha256 and (for a data file of FMT) row count of a file, reading it once."""
    h = hashlib.sha256()
    size = 0

    def sink(chunk: bytes) -> None:
        nonlocal size
        h.update(chunk)
        size += len(chunk)

    rows: int | None = None
    if fmt in ("json", "ndjson"):
        rows = _count_line_starts(stream, b"{", sink)
    elif fmt == "sql":
        rows = _count_line_starts(stream, b"insert into ", sink)
    elif fmt == "csv":

        class Tee(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, b: Any) -> int:
                chunk = stream.read(len(b))
                sink(chunk)
                b[: len(chunk)] = chunk
                return len(chunk)

        text = io.TextIOWrapper(io.BufferedReader(Tee(), BUFFER), encoding="utf-8", newline="")
        csv.field_size_limit(sys.maxsize)
        try:
            rows = max(0, sum(1 for _ in csv.reader(text)) - 1)
        except (csv.Error, UnicodeDecodeError):
            rows = -1
    else:
        while chunk := stream.read(BUFFER):
            sink(chunk)
    return size, h.hexdigest(), rows


def verify(path: Path) -> dict[str, Any]:
    """Recompute every digest and row count of the export at PATH; list every problem."""
    reader = _Reader(path)
    problems: list[str] = []
    try:
        if reader.entries.get(MANIFEST) != "file":
            raise PyctlError(f"{path} is not a pyctl export: {MANIFEST} is missing")
        raw = reader.read(MANIFEST)
        manifest_sha = hashlib.sha256(raw).hexdigest()
        try:
            manifest = json.loads(raw)
            files = manifest["files"]
            fmt = manifest["format"]
            if manifest.get("kind") != MANIFEST_KIND or not isinstance(files, list):
                raise ValueError("not an export manifest")
            if manifest.get("manifest_version") != MANIFEST_VERSION:
                raise ValueError(f"manifest version {manifest.get('manifest_version')} is not {MANIFEST_VERSION}")
            expected = {str(e["name"]): e for e in files}
        except (ValueError, KeyError, TypeError) as exc:
            raise PyctlError(f"{path}/{MANIFEST} is not a pyctl export manifest: {exc}") from None
        for name, kind in reader.entries.items():
            if name not in expected and name not in (MANIFEST, SUMS):
                problems.append(f"extra {kind} {name}: the manifest does not list it")
        rows_total = 0
        for name, entry in expected.items():
            if reader.entries.get(name) != "file":
                problems.append(f"missing file {name} ({entry.get('table')})")
                continue
            with reader.open(name) as f:
                try:
                    size, digest, rows = _digest(f, fmt)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                    problems.append(f"{name}: cannot be read: {exc}")
                    continue
            if rows == -1:
                problems.append(f"{name}: not valid UTF-8 CSV")
                rows = None
            rows_total += rows or 0
            if digest != entry.get("sha256"):
                problems.append(f"{name}: sha256 {digest} differs from the manifest's {entry.get('sha256')}")
            if size != entry.get("bytes"):
                problems.append(f"{name}: {size} bytes, the manifest says {entry.get('bytes')}")
            if rows is not None and rows != entry.get("rows"):
                problems.append(f"{name}: {rows} rows, the manifest says {entry.get('rows')}")
        sums_sha = None
        if reader.entries.get(SUMS) != "file":
            problems.append(f"missing file {SUMS}")
        else:
            sums_raw = reader.read(SUMS)
            sums_sha = hashlib.sha256(sums_raw).hexdigest()
            want = "".join(f"{e.get('sha256')}  {n}\n" for n, e in expected.items()) + f"{manifest_sha}  {MANIFEST}\n"
            if sums_raw != want.encode():
                problems.append(f"{SUMS} does not match the manifest (or the manifest was changed)")
    finally:
        reader.close()
    return {"path": str(path), "ok": not problems, "subject": manifest.get("subject", {}), "format": fmt,
            "files": len(expected), "rows": rows_total, "manifest_sha256": manifest_sha, "sha256sums_sha256": sums_sha,
            "source": manifest.get("source", {}), "snapshot": manifest.get("snapshot", {}), "problems": problems}


def check_ledger(dsn: str | None, result: dict[str, Any]) -> dict[str, Any]:
    """The ledger entries that recorded this export's manifest, and problems with them."""
    conn = connect(dsn)
    problems: list[str] = []
    try:
        require_installed(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            entries = cur.execute(
                "select l.seq, l.recorded_at, l.session_role::text, l.subject_type, l.subject_key from privacy.ledger l "
                "where l.event = %s and l.payload ->> 'manifest_sha256' = %s order by l.seq",
                (LEDGER_EVENT, result["manifest_sha256"]),
            ).fetchall()
            broken = cur.execute("select seq, problem from privacy.verify_ledger()").fetchall()
            sysid = cur.execute(
                "select pg_catalog.split_part(value, ':', 1) as value from privacy.settings where name = 'database_identity'"
            ).fetchone()
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    finally:
        conn.close()
    subject = result.get("subject", {})
    if not entries:
        problems.append(f"the ledger has no {LEDGER_EVENT} entry for manifest sha256 {result['manifest_sha256']}")
    elif not any((e["subject_type"], e["subject_key"]) == (subject.get("type"), subject.get("key")) for e in entries):
        problems.append("the ledger entry for this manifest names another subject")
    if broken:
        problems.append(f"the ledger does not verify: entry {broken[0]['seq']}: {broken[0]['problem']}")
    source = result.get("source", {}).get("system_identifier")
    if sysid and source and sysid["value"] != source:
        problems.append(f"the export comes from system {source}, this database is {sysid['value']}")
    return {"entries": entries, "problems": problems}


# -- the command line -------------------------------------------------------------------------


def _settings_json(as_json: bool) -> bool:
    """--json given here or before the command (pyctl --json export ...)."""
    from .cli import Settings

    obj = click.get_current_context().find_object(Settings)
    if obj is not None and as_json:
        obj.json = True
    return bool(obj.json) if obj is not None else as_json


def _dsn() -> str | None:
    from .cli import Settings

    obj = click.get_current_context().find_object(Settings)
    return obj.dsn if obj is not None else None


@click.command("export")
@click.argument("key", required=False)
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@click.option("--out", required=True, metavar="PATH", type=click.Path(path_type=Path),
              help="Where the export goes: a directory (a .zip file with --zip; a directory of exports with --all-held).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True,
              help="csv (with a header), json (an array per table), ndjson (an object per line) or sql (INSERT statements).")
@click.option("--zip", "as_zip", is_flag=True, help="Write one zip file instead of a directory (with --all-held: one zip per subject).")
@click.option("--all-held", is_flag=True, help="Export every subject under an active legal hold, one export each, from one snapshot.")
@click.option("--overwrite", is_flag=True, help="Replace PATH if it exists and is not empty.")
@click.option("--allow-empty", is_flag=True,
              help="Write an empty export, labelled as such, for a subject with no row anywhere (default: an error).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the export's path.")
def export_subject(key: str | None, subject_type: str | None, out: Path, fmt: str, as_zip: bool, all_held: bool,
                   overwrite: bool, allow_empty: bool, as_json: bool) -> None:
    """Export every row of a subject in every protected table, with a verifiable manifest.

    One REPEATABLE READ, READ ONLY transaction: all files are one consistent
    snapshot. One file per table, manifest.json (source, snapshot, ledger head,
    subject, every file's rows, bytes and sha256) and SHA256SUMS. The manifest's
    sha256 is recorded in the ledger. Prints the export's path.

    \b
    Example:
        pyctl export 42 --out ./customer-42
        pyctl export 42 --format sql --zip --out ./customer-42.zip
        pyctl export --all-held --out ./preserved-2026-06-30
    """
    use_json = _settings_json(as_json)
    if key is None and not all_held:
        raise click.UsageError("give the subject's KEY, or --all-held")
    if key is not None and all_held:
        raise click.UsageError("give either a KEY or --all-held, not both")
    with _terminate_cleanly():
        result = export(_dsn(), out, key=key, subject_type=subject_type, all_held=all_held, fmt=fmt, as_zip=as_zip,
                        overwrite=overwrite, allow_empty=allow_empty, progress=True)
    for r in result["exports"]:
        label = " (empty: no row anywhere)" if r["empty"] else ""
        click.echo(f"exported {r['subject_type']}/{r['key']}{label}: {r['files']} files, {r['rows']:,} rows, {_human(r['bytes'])} "
                   f"to {r['path']}; manifest sha256 {r['manifest_sha256']}, ledger entry {r['ledger_seq']}", err=True)
    if all_held and not result["exports"]:
        click.echo(f"no subject is under an active legal hold: {out} is empty", err=True)
    if use_json:
        from .output import emit_json

        emit_json(result)
    elif all_held:
        for r in result["exports"]:
            click.echo(r["path"])
    else:
        click.echo(result["path"])


@click.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--ledger", is_flag=True, help="Also find the manifest's sha256 in the ledger of the database (--dsn).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_command(path: Path, ledger: bool, as_json: bool) -> None:
    """Recompute every digest and row count of an export; exit 1 on any mismatch.

    Fails on a changed, missing or extra file, and on a manifest or SHA256SUMS
    that does not match. Works offline; --ledger also checks that the database's
    ledger recorded this manifest.

    \b
    Example:
        pyctl export verify ./customer-42
        pyctl --dsn "$DATABASE_URL" export verify ./customer-42.zip --ledger
    """
    use_json = _settings_json(as_json)
    result = verify(path)
    if ledger:
        found = check_ledger(_dsn(), result)
        result["ledger"] = [{"seq": e["seq"], "recorded_at": e["recorded_at"], "session_role": e["session_role"]}
                            for e in found["entries"]]
        result["problems"] += found["problems"]
        result["ok"] = not result["problems"]
    if use_json:
        from .output import emit_json

        emit_json(result)
    elif result["ok"]:
        subject = result["subject"]
        recorded = f"; ledger entry {result['ledger'][0]['seq']}" if result.get("ledger") else ""
        click.echo(f"export verifies: {subject.get('type')}/{subject.get('key')}, {result['files']} files, {result['rows']:,} rows, "
                   f"manifest sha256 {result['manifest_sha256']}{recorded}")
    else:
        for problem in result["problems"]:
            click.echo(f"{path}: {problem}")
    if result["problems"]:
        n = len(result["problems"])
        raise PyctlError(f"export {path} does not verify: {result['problems'][0]}" + (f" (and {n - 1} more)" if n > 1 else ""))


_DEFAULT_ARGS = "pyctl.export.default_args"


class ExportGroup(click.Group):
    """`pyctl export KEY ...` and `pyctl export verify PATH`: a first argument that is not
    a subcommand belongs to the export itself."""

    def __init__(self, *args: Any, default: click.Command, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and (args[0] in self.commands or args[0] in ctx.help_option_names):
            return super().parse_args(ctx, args)
        ctx.meta[_DEFAULT_ARGS] = list(args)
        return []

    def invoke(self, ctx: click.Context) -> Any:
        args = ctx.meta.pop(_DEFAULT_ARGS, None)
        if args is None:
            return super().invoke(ctx)
        sub = self.default.make_context(ctx.info_name, args, parent=ctx.parent)
        with sub:
            return sub.command.invoke(sub)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "KEY --out PATH [OPTIONS]")
        formatter.write_usage(ctx.command_path, "--all-held --out DIR [OPTIONS]", prefix="       ")
        formatter.write_usage(ctx.command_path, "verify PATH [--ledger]", prefix="       ")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.default.format_options(ctx, formatter)
        self.format_commands(ctx, formatter)


export_command = ExportGroup(
    "export",
    default=export_subject,
    commands={"verify": verify_command},
    help="""Export everything held about a subject, with a verifiable manifest.

    `pyctl export KEY --out PATH` writes every row of the subject in every
    protected table, from one consistent snapshot, one file per table, with
    manifest.json and SHA256SUMS, and records the manifest's sha256 in the
    ledger. `pyctl export verify PATH` checks an export.

    \b
    Example:
        pyctl export 42 --out ./customer-42
        pyctl export verify ./customer-42
    """,
)
