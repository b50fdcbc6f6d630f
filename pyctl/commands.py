"""What every pyctl command shares: its settings (--dsn, --json), running one statement,
printing rows, and the default subject type. The CLI and pyctl.export both use it."""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import click
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .db import PyctlError, connect, describe, heal, only_subject_type, require_installed, require_primary
from .output import emit_json, table

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    dsn: str | None
    json: bool


def json_option(func: F) -> F:
    """Adds --json to a command that prints data (also accepted before the command)."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        settings = click.get_current_context().find_object(Settings)
        if settings is not None and as_json:
            settings.json = True
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def use_json(as_json: bool) -> bool:
    """--json given to this command or before it (pyctl --json export ...)."""
    obj = click.get_current_context().find_object(Settings)
    if obj is not None and as_json:
        obj.json = True
    return bool(obj.json) if obj is not None else as_json


def settings() -> Settings:
    obj = click.get_current_context().find_object(Settings)
    assert obj is not None
    return obj


def run(query: str | sql.SQL | sql.Composed, params: Any = None, *, write: bool = True,
        progress: str | None = None) -> list[dict[str, Any]]:
    """Run one statement in its own transaction and return its rows. With PROGRESS, on a
    terminal: the time it has taken so far, and the server's progress notices."""
    conn = connect(settings().dsn)
    ticker = _Ticker(progress) if progress and sys.stderr.isatty() else None
    try:
        if write:
            require_primary(conn)
        require_installed(conn)
        if write:
            heal(conn)
        if ticker:
            conn.add_notice_handler(lambda diag: ticker.say(diag.message_primary or ""))
            ticker.start()
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    finally:
        if ticker:
            ticker.stop()
        conn.close()



def prove_holds(hold_ids: list[str]) -> int:
    """Compute the preservation proof of each hold, each in a transaction of its own
    (privacy.prove_hold; one already proved is left as it is). On a terminal: progress.
    Returns how many were proved; a failure names the holds still pending."""
    conn = connect(settings().dsn)
    ticker = _Ticker(f"computing the proof of {len(hold_ids)} hold(s)") if sys.stderr.isatty() else None
    done = 0
    try:
        require_primary(conn)
        if ticker:
            conn.add_notice_handler(lambda diag: ticker.say(diag.message_primary or ""))
            ticker.start()
        for hold_id in hold_ids:
            with conn.transaction():
                conn.execute("select privacy.prove_hold(%s::uuid)", (hold_id,))
            done += 1
        return done
    except psycopg.Error as exc:
        if exc.sqlstate == "PV002":  # refused as given (an unknown hold, a hold released without one)
            raise PyctlError(describe(exc)) from None
        raise PyctlError(f"the hold(s) are in force, but {len(hold_ids) - done} proof(s) are still pending "
                         f"({describe(exc)}); run pyctl hold prove --all to complete them") from None
    finally:
        if ticker:
            ticker.stop()
        conn.close()


def run_many(statements: list[tuple[str, Any]]) -> None:
    """Run several writing statements in one transaction."""
    conn = connect(settings().dsn)
    try:
        require_primary(conn)
        require_installed(conn)
        heal(conn)
        with conn.transaction():
            for query, params in statements:
                conn.execute(query, params)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    finally:
        conn.close()

class _Ticker(threading.Thread):
    """'placing the hold ... 12 s' on stderr, rewritten every half second, until stopped."""

    def __init__(self, label: str) -> None:
        super().__init__(daemon=True)
        self.label, self.started, self.done = label, time.monotonic(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            click.echo(f"\r{self.label} ... {time.monotonic() - self.started:.0f} s", err=True, nl=False)

    def say(self, message: str) -> None:
        click.echo(f"\r{message.removeprefix('privacy: ')}\033[K", err=True)

    def stop(self) -> None:
        self.done.set()
        if self.ident is not None:  # (started)
            self.join()
            click.echo("\r\033[K", err=True, nl=False)


def show(rows: list[dict[str, Any]], columns: list[str], empty: str = "(none)") -> None:
    if settings().json:
        emit_json(rows)
    else:
        table(rows, columns, empty)


def default_subject(subject: str | None) -> str:
    """The subject type given, or the only one there is."""
    if subject:
        return subject
    conn = connect(settings().dsn)
    try:
        require_installed(conn)
        return only_subject_type(conn, None)
    finally:
        conn.close()


def key_list(key: str | None, keys_file: TextIO | None) -> list[str]:
    """KEY, or the keys of --from-file (one per line; blank lines and # comments skipped)."""
    if (key is None) == (keys_file is None):
        raise click.UsageError("give one subject KEY, or --from-file FILE")
    if key is not None:
        return [key]
    assert keys_file is not None
    keys = [line.strip() for line in keys_file if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise PyctlError(f"{keys_file.name} holds no key")
    return keys


def print_placed(rows: list[dict[str, Any]], *, many: bool) -> None:
    """The id of what was placed; for a list, each key with its id."""
    if settings().json:
        emit_json(rows if many else {"id": rows[0]["id"]})
    elif many:
        for row in rows:
            click.echo(f"{row['key']}\t{row['id']}")
        click.echo(f"placed {len(rows)}", err=True)
    else:
        click.echo(rows[0]["id"])
