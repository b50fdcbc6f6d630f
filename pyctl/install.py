"""Install, upgrade and uninstall: yoyo migrations for tables, sql/ for the rest."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri
from yoyo.exceptions import LockTimeout

from . import __version__
from .db import PyctlError, connect, describe, require_primary, resolve_dsn
from .resources import migrations_dir, sql_files

MIGRATION_PREFIX = "privacy-"
DEFAULT_STEWARD_ROLE = "privacy_steward"


def _backend_for(conninfo: str) -> PostgresqlPsycopgBackend:
    """A yoyo backend on a libpq connection string (yoyo itself wants a URL)."""

    class Backend(PostgresqlPsycopgBackend):  # type: ignore[misc]
        def connect(self, dburi: Any) -> psycopg.Connection:
            # yoyo's bookkeeping tables go into the privacy schema, not the application's.
            conn = psycopg.connect(conninfo, autocommit=True)
            if conn.execute("select pg_catalog.to_regnamespace('privacy') is null").fetchone() == (True,):
                conn.execute("create schema privacy")
                conn.execute("revoke all on schema privacy from public")
            conn.execute("set search_path to privacy")
            return conn

    backend = Backend(parse_uri("postgresql+psycopg:///pyctl"), "_yoyo_migration")
    backend.init_database()
    return backend


def apply_migrations(conninfo: str) -> list[str]:
    """Apply the packaged migrations that are not applied yet; return their ids."""
    backend = _backend_for(conninfo)
    try:
        migrations = read_migrations(str(migrations_dir()))
        # yoyo's lock is a committed row, deleted when the migrations are done: a server that
        # crashed meanwhile leaves it behind for ever. A lock taken before the server last
        # started is stale (its holder's connection died with the server): clear it.
        backend.connection.execute(
            f"delete from {backend.lock_table_quoted} "
            "where ctime < pg_catalog.pg_postmaster_start_time() at time zone 'UTC'")
        try:
            with backend.lock():
                pending = backend.to_apply(migrations)
                ids = [m.id for m in pending]
                # post-apply.py reloads sql/; install does that itself, in one transaction.
                backend.apply_migrations_only(pending)
        except LockTimeout as exc:
            raise PyctlError(f"migration failed: {exc} (another install or `yoyo apply` is running, "
                             "or one that was interrupted left its lock)") from None
        return ids
    finally:
        backend.connection.close()


def reload_sql(conn: psycopg.Connection, steward_role: str | None = None, migrations: list[str] | None = None) -> dict[str, Any]:
    """Load every file of sql/ and finish the install: the steps yoyo's post-apply.py runs too.

    Runs inside the caller's transaction: 00_base.sql, privacy.ensure_steward_role() (the
    other files grant to that role), the rest of sql/, then privacy.finish_install().
    """
    for i, path in enumerate(sql_files()):
        conn.execute(path.read_text(encoding="utf-8").encode())  # type: ignore[arg-type]
        if i == 0:
            conn.execute("select privacy.ensure_steward_role(%s)", (steward_role,))
    row = conn.execute("select privacy.finish_install(%s::jsonb)", (json.dumps(migrations or []),)).fetchone()
    return dict(row[0]) if row else {}


def _current_user(conn: psycopg.Connection) -> str:
    row = conn.execute("select current_user").fetchone()
    return str(row[0]) if row else "?"


def _check_can_install(conn: psycopg.Connection, steward_role: str | None) -> None:
    """Refuse before changing anything when install could not finish."""
    row = conn.execute(
        "select r.rolsuper, r.rolcreaterole, "
        "pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE'), "
        "(select value from privacy.settings where name = 'steward_role') "
        "  from pg_catalog.pg_roles r where r.rolname = current_user"
        if conn.execute("select pg_catalog.to_regclass('privacy.settings') is not null").fetchone() == (True,)
        else "select r.rolsuper, r.rolcreaterole, "
        "pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE'), null "
        "  from pg_catalog.pg_roles r where r.rolname = current_user"
    ).fetchone()
    assert row is not None
    superuser, createrole, can_create, current = row
    if not (superuser or can_create or conn.execute("select pg_catalog.to_regnamespace('privacy') is not null")
            .fetchone() == (True,)):
        raise PyctlError(f"{_current_user(conn)} may not create a schema in this database: "
                         "connect as the database owner")
    name = steward_role or current or DEFAULT_STEWARD_ROLE
    exists = conn.execute("select 1 from pg_catalog.pg_roles where rolname = %s", (name,)).fetchone()
    if not exists and not (superuser or createrole):
        raise PyctlError(
            f"role {name} does not exist and {_current_user(conn)} may not create roles: "
            f"create it (CREATE ROLE {name} NOLOGIN) or pass --steward-role with an existing role"
        )


def install(dsn: str | None, steward_role: str | None = None) -> dict[str, Any]:
    """Install or upgrade; idempotent. Returns what was done."""
    conn = connect(dsn)
    try:
        require_primary(conn)
        _check_can_install(conn, steward_role)
        try:
            applied = apply_migrations(resolve_dsn(dsn))
        except psycopg.Error as exc:
            raise PyctlError(f"migration failed: {describe(exc)}") from None
        try:
            with conn.transaction():
                done = reload_sql(conn, steward_role, applied)
        except psycopg.Error as exc:
            raise PyctlError(f"install failed: {describe(exc)}") from None
        return {"version": __version__, "migrations_applied": applied, "steward_role": done.get("steward_role"),
                "tables_regenerated": done.get("tables_regenerated", 0)}
    finally:
        conn.close()


def uninstall(dsn: str | None) -> dict[str, Any]:
    """Remove everything the toolkit made; refused while a hold or restriction is active."""
    conn = connect(dsn)
    try:
        require_primary(conn)
        with conn.transaction():
            row = conn.execute("select pg_catalog.to_regnamespace('privacy') is not null").fetchone()
            if not row or not row[0]:
                raise PyctlError("the privacy toolkit is not installed in this database")
            tables = conn.execute("select privacy.uninstall()").fetchone()
        return {"uninstalled": True, "tables_released": list(tables[0]) if tables else []}
    except psycopg.Error as exc:
        raise PyctlError(f"uninstall failed: {describe(exc)}") from None
    finally:
        conn.close()
