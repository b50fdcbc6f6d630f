"""Connections, the libpq way: --dsn, else DATABASE_URL, else the PG* variables."""

from __future__ import annotations

import os
import socket

import psycopg


class PyctlError(Exception):
    """An expected failure, reported as a one-line 'Error: ...' (exit 1)."""


def resolve_dsn(dsn: str | None) -> str:
    """The connection string to use; '' lets libpq read the PG* variables."""
    if dsn:
        return dsn
    return os.environ.get("DATABASE_URL", "")


def describe(exc: BaseException) -> str:
    """One line for a database error, without a traceback."""
    if isinstance(exc, psycopg.Error):
        diag = getattr(exc, "diag", None)
        primary = diag.message_primary if diag is not None and diag.message_primary else None
        text = primary or str(exc).strip()
        return " ".join(text.split())
    return str(exc)


def connect(dsn: str | None, *, autocommit: bool = True) -> psycopg.Connection:
    """Connect in autocommit mode: every write goes in an explicit transaction."""
    conninfo = resolve_dsn(dsn)
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise PyctlError(f"malformed connection string: {describe(exc)}") from None
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise PyctlError(f"cannot connect: {describe(exc)}") from None
    except psycopg.ProgrammingError as exc:
        raise PyctlError(f"malformed connection string: {describe(exc)}") from None
    except UnicodeError as exc:  # a host name (PGHOST, host=) with bytes that are not UTF-8
        raise PyctlError(f"cannot connect: {exc}") from None


def require_primary(conn: psycopg.Connection) -> None:
    """Refuse to write on a follower (a server in recovery)."""
    row = conn.execute("select pg_catalog.pg_is_in_recovery()").fetchone()
    if row and row[0]:
        # The WAL receiver names the primary to superusers; install recorded its address for everyone.
        info = conn.execute(
            "select coalesce((select s.sender_host || ':' || s.sender_port from pg_catalog.pg_stat_wal_receiver s "
            "                  where s.sender_host is not null), "
            "                (select value from privacy.settings where name = 'primary_address' "
            "                  and pg_catalog.has_table_privilege('privacy.settings', 'select')))"
            if installed(conn) else
            "select (select s.sender_host || ':' || s.sender_port from pg_catalog.pg_stat_wal_receiver s)"
        ).fetchone()
        where = f" (its primary is {info[0]})" if info and info[0] else ""
        raise PyctlError(
            f"this server is a read-only follower{where}: run the command against the primary"
        )


def installed(conn: psycopg.Connection) -> bool:
    row = conn.execute("select pg_catalog.to_regclass('privacy.processing_restrictions') is not null").fetchone()
    return bool(row and row[0])


def require_installed(conn: psycopg.Connection) -> None:
    if not installed(conn):
        raise PyctlError("the privacy toolkit is not installed in this database: run `pyctl install` first")


def heal(conn: psycopg.Connection) -> None:
    """Before acting as the owner or a steward: enforce what a rename, a new partition or a
    dropped trigger left unenforced (privacy.heal(), its own transaction; cheap when nothing changed)."""
    allowed = conn.execute("select pg_catalog.has_function_privilege('privacy.heal()', 'execute')").fetchone()
    if allowed and allowed[0]:
        with conn.transaction():
            conn.execute("select privacy.heal()")


def only_subject_type(conn: psycopg.Connection, subject_type: str | None) -> str:
    """The subject type given, or the only one registered (an error naming the choices otherwise)."""
    if subject_type:
        return subject_type
    rows = conn.execute("select subject_type from privacy.subject_types order by 1").fetchall()
    if len(rows) == 1:
        return str(rows[0][0])
    if not rows:
        raise PyctlError("no subject type is registered yet: pyctl subject add TYPE --table T --key COLUMN")
    raise PyctlError(f"several subject types exist ({', '.join(r[0] for r in rows)}): choose one with --subject")


def require_direct(conn: psycopg.Connection, command: str, why: str) -> None:
    """Refuse a connection through a pooler (PgBouncer): the server must see this client's own
    TCP address and port. (Over a Unix socket there is nothing to compare: assumed direct.)"""
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        mine = sock.getsockname()[:2]
    finally:
        sock.close()
    row = conn.execute("select pg_catalog.host(pg_catalog.inet_client_addr()), pg_catalog.inet_client_port()").fetchone()
    if row is None or (row[0], row[1]) != (mine[0], mine[1]):
        raise PyctlError(f"{command} needs a direct connection to PostgreSQL ({why}); this one goes through a "
                         "connection pooler such as PgBouncer: give the server's own address with --dsn")
