"""`pyctl discover`: the protection plan of a subject type, applied or written as a migration."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .db import PyctlError, connect, describe, require_installed, require_primary
from .output import table

Plan = list[dict[str, Any]]


def plan(dsn: str | None, subject_type: str) -> Plan:
    conn = connect(dsn)
    try:
        require_installed(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute("select * from privacy.discover(%s) order by step", (subject_type,)).fetchall())
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    finally:
        conn.close()


def show_plan(steps: Plan) -> None:
    rows = [{**s, "columns": ",".join(s["columns"] or []), "path": _path(s)} for s in steps]
    table(rows, ["step", "kind", "table_name", "path", "status", "note"])
    for s in steps:
        if s["kind"] == "cycle":
            click.echo(f"warning: {s['note']}", err=True)
        elif s["kind"] == "shared" and not s["protected"]:
            sharing = s["sharing"] or {}
            busiest = sharing.get("busiest")
            measured = f"; busiest row: {busiest} subject(s)" if busiest is not None else ""
            click.echo(f"shared, not protected: {s['table_name']} ({sharing.get('reason', '')}{measured})", err=True)
        elif s["kind"] == "shared":
            click.echo(f"warning: {s['table_name']} is protected but shared: {s['note']}", err=True)


def _path(step: dict[str, Any]) -> str:
    cols = ",".join(step["columns"] or [])
    if step["kind"] == "via":
        return f"--via {step['columns'][0]}  ({cols} -> {step['parent_table']})"
    if step["kind"] == "referenced_by":
        return f"--referenced-by {step['parent_table']}.{step['parent_columns'][0]}"
    if step["kind"] == "shared":
        return f"(--referenced-by {step['parent_table']}.{step['parent_columns'][0]} --shared-ok)"
    if step["kind"] in ("root", "possible"):
        return f"--column {cols}"
    return f"{cols} -> {step['parent_table']}"


def _calls(steps: Plan) -> list[tuple[str, tuple[str, ...]]]:
    """The SQL API calls that protect what the plan says is to protect: never a shared
    lookup table, an unconfirmed column or a dismissed table, nor a table whose path
    runs through one of those."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    covered = {s["table_name"] for s in steps if s["protected"]}
    for s in steps:
        if s["status"] != "to protect" or s["kind"] not in ("via", "referenced_by"):
            continue
        if s["parent_table"] not in covered:
            continue  # its path runs through a dismissed table: coverage lists it
        covered.add(s["table_name"])
        if s["kind"] == "via":
            calls.append(("select privacy.protect_via({}, {})", (s["table_name"], s["columns"][0])))
        else:
            calls.append(("select privacy.protect_referenced_by({}, {}, {})",
                          (s["table_name"], s["parent_table"], s["parent_columns"][0])))
    return calls


def apply(dsn: str | None, steps: Plan) -> list[str]:
    """Protect the plan in one transaction; all or nothing."""
    calls = _calls(steps)
    conn = connect(dsn)
    try:
        require_primary(conn)
        with conn.transaction():
            for template, args in calls:
                conn.execute(sql.SQL(template).format(*(sql.Literal(a) for a in args)))
    except psycopg.Error as exc:
        raise PyctlError(f"nothing was protected: {describe(exc)}") from None
    finally:
        conn.close()
    return [args[0] for _, args in calls]


def emit_migration(steps: Plan, subject_type: str, directory: str) -> Path:
    """Write a yoyo migration calling the SQL API; atomically, so no half-written file."""
    target = Path(directory)
    if not target.is_dir():
        raise PyctlError(f"{directory} is not a directory")
    if not os.access(target, os.W_OK):
        raise PyctlError(f"cannot write to {directory}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    path = target / f"{stamp}-protect-{subject_type}.sql"
    lines = [f"-- Protect every table that holds {subject_type} data (written by pyctl discover).",
             ""]
    calls = _calls(steps)
    for template, args in calls:
        lines.append(sql.SQL(template).format(*(sql.Literal(a) for a in args)).as_string(None) + ";")
    if not calls:
        lines.append("-- nothing to do: every table of the plan is protected")
    for s in steps:
        if s["kind"] == "shared" and not s["protected"]:
            lines.append(f"-- shared, not protected: {s['table_name']} ({(s['sharing'] or {}).get('reason', '')})")
        elif s["status"] == "dismissed":
            lines.append(f"-- dismissed: {s['table_name']} ({s['note']})")
    possible = [s for s in steps if s["kind"] == "possible" and s["status"] == "unconfirmed"]
    for s in possible:
        lines.append(f"-- unconfirmed: {s['table_name']}.{s['columns'][0]} is named like the key but has no foreign key;")
        lines.append(f"-- select privacy.protect({sql.Literal(s['table_name']).as_string(None)}, "
                     f"{sql.Literal(subject_type).as_string(None)}, {sql.Literal(s['columns'][0]).as_string(None)});")
    try:
        fd, tmp = tempfile.mkstemp(dir=target, prefix=".pyctl-", suffix=".sql")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise PyctlError(f"cannot write the migration to {directory}: {exc.strerror}") from None
    return path
