"""`pyctl watch`: ledger events as JSON lines, resumable after a disconnect."""

from __future__ import annotations

import json
import sys
import time

import click
import psycopg
from psycopg.rows import dict_row

from .db import PyctlError, connect, describe, require_direct, require_installed
from .output import _plain

BATCH = 1000


def _drain(conn: psycopg.Connection, after: int, budget: int | None) -> tuple[int, int]:
    """Print the events after position AFTER; returns the last position and how many were printed."""
    printed = 0
    while budget is None or printed < budget:
        want = BATCH if budget is None else min(BATCH, budget - printed)
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from privacy.events_since(%s, %s)", (after, want)).fetchall()
        for row in rows:
            click.echo(json.dumps(_plain(row)))
            after = int(row["seq"])
            printed += 1
        sys.stdout.flush()
        if len(rows) < want:
            break
    return after, printed


def follow(dsn: str | None, *, since: int, limit: int | None, idle_timeout: float | None) -> None:
    position, total = since, 0
    retries = 0
    while True:
        try:
            conn = connect(dsn)
        except PyctlError:
            if retries >= 5:
                raise
            retries += 1
            time.sleep(min(2**retries, 10))
            continue
        try:
            require_installed(conn)
            require_direct(conn, "pyctl watch", "it waits with LISTEN, which a transaction pooler does not keep")
            conn.execute("listen privacy_events")
            retries = 0
            # First what happened since POSITION (also after a reconnect), then as notified.
            position, n = _drain(conn, position, None if limit is None else limit - total)
            total += n
            while limit is None or total < limit:
                got = False
                for _ in conn.notifies(timeout=idle_timeout if idle_timeout else 60.0, stop_after=1):
                    got = True
                if not got and idle_timeout:
                    return
                position, n = _drain(conn, position, None if limit is None else limit - total)
                total += n
            return
        except psycopg.OperationalError as exc:
            click.echo(f"pyctl watch: connection lost ({describe(exc)}); resuming after {position}", err=True)
            retries += 1
            if retries > 5:
                raise PyctlError(f"connection lost: {describe(exc)}") from None
            time.sleep(min(2**retries, 10))
        except psycopg.Error as exc:
            raise PyctlError(describe(exc)) from None
        finally:
            conn.close()
