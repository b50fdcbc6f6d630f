"""Followers, forks and restored backups: status, waiting for replay, sync, ledger files."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .db import PyctlError, connect, describe, heal, installed, require_installed, require_primary

STATE_FORMAT = "pyctl-state/1"


def copy_dsn(row: dict[str, Any]) -> str:
    """A registered copy's connection string, read from the environment where so registered."""
    if row.get("dsn_env"):
        value = os.environ.get(row["dsn_env"])
        if not value:
            raise PyctlError(f"copy {row['name']}: environment variable {row['dsn_env']} is not set")
        return str(value)
    return str(row["dsn"])


def fleet_rows(conn: psycopg.Connection, names: list[str] | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("select name, kind, dsn, dsn_env, added_at from privacy.fleet order by name").fetchall()
    if names:
        known = {r["name"] for r in rows}
        for name in names:
            if name not in known:
                raise PyctlError(f"unknown copy {name} (pyctl fleet list shows the registered ones)")
        rows = [r for r in rows if r["name"] in names]
    return rows


def _ledger_pairs(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in conn.execute("select seq, encode(hash, 'hex') from privacy.ledger order by seq").fetchall()]


def common_prefix(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> int:
    """The last ledger position two databases share (the moment one was copied from the other)."""
    last = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        last = x[0]
    return last


def copy_report(primary: psycopg.Connection, row: dict[str, Any]) -> dict[str, Any]:
    """One line of `fleet status`: reachable, follower or writable, lag or drift."""
    report: dict[str, Any] = {"name": row["name"], "kind": row["kind"], "reachable": False, "role": None,
                              "lag_bytes": None, "lag_seconds": None, "latest_event_visible": None,
                              "behind": None, "ahead": None, "ok": False, "detail": ""}
    try:
        conn = psycopg.connect(copy_dsn(row), autocommit=True, connect_timeout=5)
    except (psycopg.Error, PyctlError) as exc:
        report["detail"] = describe(exc) if isinstance(exc, psycopg.Error) else str(exc)
        return report
    try:
        report["reachable"] = True
        head = primary.execute("select seq, encode(hash, 'hex') from privacy.ledger order by seq desc limit 1").fetchone()
        in_recovery = bool(conn.execute("select pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
        report["role"] = "follower" if in_recovery else "writable"
        if not installed(conn):
            report["detail"] = "the toolkit is not installed there"
            return report
        copy_head = conn.execute("select seq, encode(hash, 'hex') from privacy.ledger order by seq desc limit 1").fetchone()
        if in_recovery:
            lsn = primary.execute("select pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            lag = conn.execute(
                "select pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint, "
                "extract(epoch from now() - pg_last_xact_replay_timestamp())::float8, "
                "exists (select 1 from privacy.ledger where seq = %s and encode(hash, 'hex') = %s)",
                (lsn, head[0] if head else 0, head[1] if head else "")).fetchone()
            assert lag is not None
            report["lag_bytes"] = max(int(lag[0] or 0), 0)
            report["lag_seconds"] = round(float(lag[1]), 3) if lag[1] is not None else None
            report["latest_event_visible"] = bool(lag[2]) or head is None
            report["ok"] = bool(report["latest_event_visible"])
            report["detail"] = "" if report["ok"] else "has not replayed the latest ledger event yet"
        else:
            prefix = common_prefix(_ledger_pairs(primary), _ledger_pairs(conn))
            identity = primary.execute("select privacy.database_identity()").fetchone()[0]  # type: ignore[index]
            synced = conn.execute("select last_seq from privacy.sync_sources where source_identity = %s", (identity,)).fetchone()
            position = max(prefix, int(synced[0]) if synced else 0)
            report["behind"] = max((head[0] if head else 0) - position, 0)
            primary_ids = {r[0] for r in primary.execute("select id from privacy.processing_restrictions").fetchall()}
            copy_ids = {r[0] for r in conn.execute("select id from privacy.processing_restrictions").fetchall()}
            report["ahead"] = len(copy_ids - primary_ids)
            report["ok"] = report["behind"] == 0
            back = erased_here_present_there(primary, conn)
            report["erased_rows_present"] = back
            if back:
                report["ok"] = False
            if prefix == 0 and not synced:
                report["ok"] = False
                report["detail"] = "shares no ledger history with this database"
            elif copy_head is not None and report["behind"]:
                report["detail"] = f"{report['behind']} event(s) behind: pyctl sync {row['name']}"
            if back:
                report["detail"] = (f"holds rows of {len(back)} subject(s) erased here ({', '.join(back[:5])}"
                                    f"{', ...' if len(back) > 5 else ''}): pyctl sync {row['name']}"
                                    + (f"; {report['detail']}" if report["detail"] else ""))
        return report
    except psycopg.Error as exc:
        report["detail"] = describe(exc)
        return report
    finally:
        conn.close()


def erased_here_present_there(primary: psycopg.Connection, copy: psycopg.Connection) -> list[str]:
    """The subjects erased on the primary of which the copy still holds rows (an unsynced fork or restored backup)."""
    subjects = [[r[0], r[1]] for r in primary.execute(
        "select distinct subject_type, subject_key from privacy.erasures where state = 'erased'").fetchall()]
    if not subjects:
        return []
    if copy.execute("select to_regprocedure('privacy.rows_of_subjects(jsonb)') is null").fetchone() == (True,):
        return []  # a copy with an older toolkit: sync installs nothing, the erasures replay once it is upgraded
    rows = copy.execute("select distinct subject_type || '/' || subject_key from privacy.rows_of_subjects(%s) order by 1",
                        (Jsonb(subjects),)).fetchall()
    return [str(r[0]) for r in rows]


def wait_for_followers(primary: psycopg.Connection, timeout: float) -> list[str]:
    """Return once every registered follower has replayed past the primary's current WAL position."""
    lsn = primary.execute("select pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    followers = [r for r in fleet_rows(primary) if r["kind"] == "follower"]
    deadline = time.monotonic() + timeout
    done = []
    for row in followers:
        try:
            conn = psycopg.connect(copy_dsn(row), autocommit=True, connect_timeout=max(1, int(timeout)))
        except psycopg.Error as exc:
            raise PyctlError(f"follower {row['name']} is unreachable ({describe(exc)}); the change is in force on the primary") from None
        try:
            if conn.execute("select pg_is_in_recovery()").fetchone() == (False,):
                raise PyctlError(f"follower {row['name']} is not a follower (it is not in recovery: promoted, or registered "
                                 "by mistake), so it will never replay the change; the change is in force on the primary")
            while True:
                replayed = conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn, pg_last_wal_replay_lsn()",
                                        (lsn,)).fetchone()
                assert replayed is not None
                if replayed[0]:
                    done.append(row["name"])
                    break
                if time.monotonic() >= deadline:
                    raise PyctlError(f"follower {row['name']} has not replayed past {lsn} within {timeout:g} s "
                                     f"(it is at {replayed[1]}; is its replay paused?); the change is in force on the primary")
                time.sleep(0.05)
        finally:
            conn.close()
    return done


# -- the state of a source, live or from a file ----------------------------------------------


def live_state(dsn: str | None) -> dict[str, Any]:
    conn = connect(dsn)
    try:
        require_installed(conn)
        state = conn.execute("select privacy.source_state(true)").fetchone()[0]  # type: ignore[index]
        state["source_name"] = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
        return dict(state)
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    finally:
        conn.close()


def export_state(dsn: str | None, path: str) -> dict[str, Any]:
    """Write the source state, ledger included, to a file (atomically), with its sha256 inside."""
    state = live_state(dsn)
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    document = {"format": STATE_FORMAT, "sha256": hashlib.sha256(body.encode()).hexdigest(), "state": state}
    target = Path(path)
    if target.is_dir():
        raise PyctlError(f"cannot write {path}: it is a directory")
    tmp = target.with_name(f".{target.name}.partial")
    try:
        tmp.write_text(json.dumps(document, sort_keys=True, indent=1), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PyctlError(f"cannot write {path}: {exc.strerror}") from None
    return {"file": str(target), "entries": len(state.get("ledger") or []), "sha256": document["sha256"],
            "identity": state["identity"]}


def read_state(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PyctlError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PyctlError(f"{path} is not a pyctl ledger file: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT or "state" not in document:
        raise PyctlError(f"{path} is not a pyctl ledger file ({STATE_FORMAT})")
    body = json.dumps(document["state"], sort_keys=True, separators=(",", ":"))
    if hashlib.sha256(body.encode()).hexdigest() != document.get("sha256"):
        raise PyctlError(f"{path} was altered after it was exported (its sha256 does not match)")
    state = dict(document["state"])
    state["source_name"] = f"file {Path(path).name}"
    return state


# -- sync ------------------------------------------------------------------------------------------


def _check_target(target: psycopg.Connection, state: dict[str, Any], label: str) -> int:
    """Refuse before changing anything; return the ledger position the two share."""
    if target.execute("select pg_is_in_recovery()").fetchone() == (True,):
        raise PyctlError(f"{label} is a read-only follower: it replays the primary's WAL and needs no sync")
    if not installed(target):
        raise PyctlError(f"{label} has no privacy toolkit: run `pyctl --dsn <its DSN> install` there first, then sync")
    identity = target.execute("select privacy.database_identity()").fetchone()[0]  # type: ignore[index]
    if identity == state["identity"]:
        raise PyctlError(f"{label} is the source database itself")
    source_ledger = [(int(e["seq"]), str(e["hash"])) for e in state.get("ledger") or []]
    prefix = common_prefix(source_ledger, _ledger_pairs(target))
    synced = target.execute("select last_seq from privacy.sync_sources where source_identity = %s", (state["identity"],)).fetchone()
    if prefix == 0 and not synced:
        raise PyctlError(f"{label} shares no ledger history with the source: a different database altogether")
    with target.cursor(row_factory=dict_row) as cur:
        theirs = {r["subject_type"]: r for r in cur.execute("select * from privacy.subject_types").fetchall()}
        protected = {(r["table_schema"], r["table_name"]): r for r in cur.execute("select * from privacy.protected_tables").fetchall()}
    ours = {s["subject_type"]: s for s in state["subject_types"]}
    for name, row in theirs.items():
        if name not in ours or (ours[name]["table_schema"], ours[name]["table_name"], ours[name]["key_column"]) != (
                row["table_schema"], row["table_name"], row["key_column"]):
            raise PyctlError(f"{label} has subject type {name} defined differently from the source: a different database")
    for p in state["protected_tables"]:
        exists = target.execute("select to_regclass(privacy.qualified(%s, %s)) is not null", (p["table_schema"], p["table_name"])).fetchone()
        if exists != (True,):
            raise PyctlError(f"{label} has no table {p['table_schema']}.{p['table_name']}: a different database")
        mine = protected.get((p["table_schema"], p["table_name"]))
        if mine and (mine["path_kind"], list(mine["columns"]), mine["parent_table"]) != (p["path_kind"], p["columns"], p["parent_table"]):
            raise PyctlError(f"{label} protects {p['table_schema']}.{p['table_name']} with another path than the source")
    return prefix


# Entries whose replay changes something: each ends a transaction of its own, so that a
# sync stopped half-way keeps whole entries and resumes after the last one.
REPLAYED_EVENTS = {"hold_placed", "restriction_placed", "restriction_verified", "subject_notified", "release_approved",
                   "hold_released", "restriction_released", "hold_digested", "correction", "break_glass_change",
                   "purpose_added", "exception_granted", "exception_withdrawn", "erasure"}


def _batches(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive entries, cut after each one that replays something (synced_* entries of a copy carry one)."""
    batches: list[list[dict[str, Any]]] = [[]]
    for entry in entries:
        batches[-1].append(entry)
        inner = (entry.get("payload") or {}).get("entry") if str(entry.get("event", "")).startswith("synced_") else None
        if entry.get("event") in REPLAYED_EVENTS or (isinstance(inner, dict) and inner.get("event") in REPLAYED_EVENTS):
            batches.append([])
    return [b for b in batches if b]


def sync(target_dsn: str, state: dict[str, Any], label: str, progress: bool = False) -> dict[str, Any]:
    """Bring a fork or restored backup to the source's state by replaying the source's ledger.

    The copy checks the source's entries itself (privacy.sync_replay): they must continue
    the chain the two share, and only what an entry records is replayed. Idempotent and
    resumable: each entry that changes something commits on its own, and a rerun starts
    after the last entry replayed."""
    target = connect(target_dsn)
    outcome: dict[str, Any] = {"target": label, "source": state["identity"], "registry": 0, "entries": {}}
    try:
        prefix = _check_target(target, state, label)
        source = state["identity"]
        heal(target)  # a restored dump knows its tables anew (new OIDs) before anything is replayed
        # 1. subject types and protected tables the copy lacks
        with target.transaction():
            for s in state["subject_types"]:
                if target.execute("select 1 from privacy.subject_types where subject_type = %s", (s["subject_type"],)).fetchone():
                    continue
                target.execute("select privacy.add_subject_type(%s, privacy.qualified(%s, %s)::regclass, %s)",
                               (s["subject_type"], s["table_schema"], s["table_name"], s["key_column"]))
                outcome["registry"] += 1
            for p in state["protected_tables"]:
                if target.execute("select 1 from privacy.protected_tables where (table_schema, table_name) = (%s, %s)",
                                  (p["table_schema"], p["table_name"])).fetchone():
                    continue
                qualified = target.execute("select privacy.qualified(%s, %s)", (p["table_schema"], p["table_name"])).fetchone()[0]  # type: ignore[index]
                if p["path_kind"] == "column":
                    target.execute("select privacy.protect(%s::regclass, %s, %s)", (qualified, p["subject_type"], p["columns"][0]))
                elif p["path_kind"] == "via":
                    target.execute("select privacy.protect_via(%s::regclass, %s)", (qualified, p["columns"][0]))
                else:
                    parent = target.execute("select privacy.qualified(%s, %s)", (p["parent_schema"], p["parent_table"])).fetchone()[0]  # type: ignore[index]
                    # The source decided (shared or not): its registry is what the copy follows.
                    target.execute("select privacy.protect_referenced_by(%s::regclass, %s::regclass, %s, true)",
                                   (qualified, parent, p["parent_columns"][0]))
                outcome["registry"] += 1
        # 2. the source's ledger after what the two share and what was replayed before
        tables = [target.execute("select privacy.qualified(%s, %s)", (p["table_schema"], p["table_name"])).fetchone()[0]  # type: ignore[index]
                  for p in state["protected_tables"]]
        row = target.execute("select max(source_seq) from privacy.sync_replayed where source_identity = %s", (source,)).fetchone()
        start = max(prefix, int(row[0]) if row and row[0] is not None else 0)
        todo = [e for e in state.get("ledger") or [] if int(e["seq"]) > start]
        batches = _batches(todo)
        with click.progressbar(batches, label="ledger entries", file=None) if progress else _nullbar(batches) as bar:
            for batch in bar:
                holds = {e.get("restriction_id") for e in batch} | {((e.get("payload") or {}).get("entry") or {}).get("restriction_id")
                                                                    for e in batch}
                digests = [d for d in state["digests"] if d["hold_id"] in holds]
                rows = [d for d in state["digest_rows"] if d["hold_id"] in holds]
                # the hashes of the rows an erasure in the batch erased travel with the digest rows
                erasures = {str(p.get("erasure_id")) for e in batch
                            for p in ((e.get("payload") or {}), (((e.get("payload") or {}).get("entry") or {}).get("payload") or {}))
                            if p.get("erasure_id")}
                rows += [r for r in state.get("erasure_rows") or [] if str(r["erasure_id"]) in erasures]
                with target.transaction():
                    results = target.execute("select privacy.sync_replay(%s, %s, %s, %s, %s, %s)",
                                             (source, prefix, Jsonb(batch), Jsonb(digests), Jsonb(rows), Jsonb(tables))).fetchone()[0]  # type: ignore[index]
                for r in results:
                    outcome["entries"][r["outcome"]] = outcome["entries"].get(r["outcome"], 0) + 1
        # 3. record the position and acknowledge the copy
        head = (state.get("ledger_head") or {}).get("seq") or 0
        with target.transaction():
            summary = target.execute("select privacy.sync_finish(%s, %s, %s)", (source, state["source_name"], head)).fetchone()[0]  # type: ignore[index]
        outcome.update(summary)
        with target.cursor(row_factory=dict_row) as cur:
            outcome["conflict_details"] = cur.execute(
                "select source_seq, event, detail from privacy.sync_replayed where source_identity = %s and outcome = 'conflict' "
                "order by source_seq", (source,)).fetchall()
            outcome["refused_details"] = cur.execute(
                "select source_seq, event, detail from privacy.sync_replayed where source_identity = %s and outcome = 'refused' "
                "order by source_seq", (source,)).fetchall()
        return outcome
    except psycopg.Error as exc:
        raise PyctlError(f"sync of {label} stopped: {describe(exc)} (what was synced before stays; run it again to resume)") from None
    finally:
        target.close()


class _nullbar:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __enter__(self) -> list[Any]:
        return self.items

    def __exit__(self, *args: object) -> None:
        return None


def sync_from_primary(primary_dsn: str | None, names: list[str] | None, progress: bool) -> list[dict[str, Any]]:
    conn = connect(primary_dsn)
    try:
        require_primary(conn)
        require_installed(conn)
        rows = fleet_rows(conn, names)
    finally:
        conn.close()
    rows = [r for r in rows if r["kind"] != "follower"] if names is None else rows
    if not rows:
        raise PyctlError("no fork or backup is registered (pyctl fleet add NAME --dsn DSN --kind fork)")
    state = live_state(primary_dsn)
    reports = []
    for row in rows:
        if row["kind"] == "follower":
            raise PyctlError(f"{row['name']} is a follower: it replays the primary's WAL and needs no sync")
        reports.append(sync(copy_dsn(row), state, row["name"], progress))
    return reports
