"""What an export reads: the subject's protected tables in load order, and who may export."""

from __future__ import annotations

import hashlib
import heapq
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..db import PyctlError


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
