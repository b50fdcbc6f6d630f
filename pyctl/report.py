"""`pyctl report`: the document counsel and the DPO read, print and check.

The facts are gathered as the steward who runs it, from one read-only snapshot:
holds and restrictions with their lifecycle and ledger events, each hold's digests
and their verification now, exports made under each hold, recipients told (Art. 19),
the fleet, coverage, doctor's findings and the ledger's head. The JSON form is the
facts; the HTML form renders the same facts with a Jinja2 template (autoescaped),
self-contained: inline CSS and SVG, no script, no external asset.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import psycopg
from psycopg.rows import dict_row

from . import __version__
from .db import PyctlError, connect, describe, require_installed
from .output import _plain

REPORT_KIND = "pyctl report"
REPORT_VERSION = 1

BASIS = {
    "accuracy": "Art. 18(1)(a): the subject contests the accuracy of the data",
    "unlawful": "Art. 18(1)(b): the processing is unlawful and the subject opposes erasure",
    "legal-claims": "Art. 18(1)(c): the subject needs the data for legal claims",
    "objection": "Art. 18(1)(d): the subject objected under Art. 21; the controller's grounds are being verified",
}

# The order a restriction's lifecycle goes in, and where each step's record lives.
STEPS = [
    ("verify", "grounds verified", "verified_at", "verified_by", "verification_note"),
    ("notify", "subject told the restriction will be lifted (Art. 18(3))", "notified_at", "notified_by", "notified_via"),
    ("approve", "subject's approval to resume recorded", "approved_at", "approved_by", "approval_evidence"),
]

HOW_TO_VERIFY = [
    ("The ledger",
     "Run `pyctl ledger verify` against the database. It recomputes the sha256 chain of every ledger entry and "
     "prints the number of entries and the head's position and hash; they must match the ledger head stated in this "
     "report (a later run may show more entries: entries are only ever appended, and the entry at the position stated "
     "here must still carry the hash stated here: `pyctl --json history KEY` or "
     "`select encode(hash, 'hex') from privacy.ledger where seq = N`)."),
    ("A legal hold's data",
     "Run `pyctl hold verify ID` with the hold's id. It recomputes, per protected table, the sha256 digest of the "
     "subject's rows and compares them with the digests taken when the hold was placed (listed in this report, and "
     "recorded in the hold's `hold_digested` ledger entry, which `pyctl history KEY` shows). It says `unchanged`, "
     "`rows added` (allowed under a hold) or `violation`, naming the rows changed or missing, and exits 1 on a violation. "
     "It only reads, so it can run on a follower or a restored backup too."),
    ("A preservation export",
     "In the export's directory, `sha256sum manifest.json SHA256SUMS` must print the manifest and SHA256SUMS digests this "
     "report cites for the export (they are in its `subject_exported` ledger entry); then `sha256sum -c SHA256SUMS` checks "
     "every data file. `pyctl export verify PATH --ledger` does both and also finds the manifest in the ledger."),
    ("This report",
     "`pyctl report --format json` writes the same facts as JSON; the sha256 of the file written is printed when it is "
     "made, so a copy handed on can be compared with `sha256sum`."),
]


@dataclass
class Filters:
    case: str | None = None
    subject_type: str | None = None
    subject_key: str | None = None
    since: dt.datetime | None = None

    def describe(self) -> list[str]:
        out = []
        if self.case:
            out.append(f"legal holds of case {self.case}, and restrictions on their subjects")
        if self.subject_type:
            out.append(f"subject {self.subject_type}/{self.subject_key}")
        if self.since:
            out.append(f"holds and restrictions in force at any time since {_iso(self.since)} (their whole history is shown)")
        return out


def _utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    return value


def _iso(value: dt.datetime) -> str:
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(cur: psycopg.Cursor[Any], query: str, params: Any = None) -> list[dict[str, Any]]:
    cur.execute(query, params)
    return [{k: _utc(v) for k, v in row.items()} for row in cur.fetchall()]


def _mask_dsn(row: dict[str, Any]) -> str:
    """Where a copy is, without a password: $VAR for one registered by environment variable, else host, port, database."""
    if row.get("dsn_env"):
        return "$" + str(row["dsn_env"])
    try:
        parts = psycopg.conninfo.conninfo_to_dict(str(row.get("dsn") or ""))
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    host = parts.get("host") or parts.get("hostaddr") or "local socket"
    port = f":{parts['port']}" if parts.get("port") else ""
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{host}{port}/{parts.get('dbname') or ''}"


_ENTRIES = """
select r.*, case when r.kind = 'restriction' then privacy.missing_steps(r) end as missing_steps,
       case when r.kind = 'restriction' then privacy.required_steps(r.basis) end as required_steps
  from privacy.processing_restrictions r
 where (%(case)s::text is null
        or (r.kind = 'legal_hold' and r.case_ref = %(case)s::text)
        or (r.kind = 'restriction' and (r.subject_type, r.subject_key) in
              (select h.subject_type, h.subject_key from privacy.processing_restrictions h
                where h.kind = 'legal_hold' and h.case_ref = %(case)s::text)))
   and (%(stype)s::text is null or (r.subject_type = %(stype)s::text and r.subject_key = %(skey)s::text))
   and (%(since)s::timestamptz is null or r.released_at is null or r.released_at >= %(since)s::timestamptz)
 order by r.placed_at, r.id
"""

_EVENT_COLUMNS = ("seq, recorded_at, event, session_role, acting_role, subject_type, subject_key, restriction_id, payload, "
                  "pg_catalog.encode(hash, 'hex') as hash")

_PROTECTED = """
with s as materialized (select * from privacy.enforcement_status())
select p.id, privacy.qualified(p.table_schema, p.table_name) as table, p.subject_type, privacy.describe_path(p) as path,
       coalesce((select case when bool_and(s.state = 'installed') then 'installed'
                             else (array_agg(s.state order by s.state = 'installed'))[1] end
                   from s where s.protected_table = privacy.qualified(p.table_schema, p.table_name)), 'missing') as enforcement
  from privacy.protected_tables p
 order by p.id
"""


def collect(dsn: str | None, filters: Filters, *, check_fleet: bool = True) -> dict[str, Any]:
    """Every fact the report states, from one read-only snapshot (and, after it, from each fleet copy)."""
    conn = connect(dsn)
    try:
        require_installed(conn)
        allowed = conn.execute("select pg_catalog.has_function_privilege('privacy.verify_hold(uuid)', 'execute') "
                               "and pg_catalog.has_table_privilege('privacy.ledger', 'select')").fetchone()
        if not (allowed and allowed[0]):
            raise PyctlError("the report reads the whole record: run it as a steward (pyctl roles steward ROLE) or the toolkit's owner")
        # Read only: no heal() first (it writes), so the report runs on followers and copies as it does on the primary.
        in_recovery = bool((conn.execute("select pg_catalog.pg_is_in_recovery()").fetchone() or [False])[0])
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute("set transaction isolation level repeatable read, read only")
            facts = _snapshot(cur, filters, in_recovery)
        fleet = _fleet_rows(conn)
    except psycopg.Error as exc:
        raise PyctlError(describe(exc)) from None
    finally:
        conn.close()
    facts["fleet"] = [_copy_state(row, facts, check_fleet) for row in fleet]
    for h in facts["holds"]:
        h["fleet"] = [{"name": c["name"], "kind": c["kind"], **c["entries"].get(h["id"], {"state": "unknown", "detail": c["detail"]})}
                      for c in facts["fleet"]]
    for c in facts["fleet"]:
        del c["entries"]
    facts["summary"] = _summary(facts)
    return facts


def _snapshot(cur: psycopg.Cursor[Any], filters: Filters, in_recovery: bool) -> dict[str, Any]:
    meta = _rows(cur, "select pg_catalog.current_database() as database, session_user as session_role, current_user as current_role, "
                      "privacy.toolkit_version() as installed_version, pg_catalog.current_setting('server_version') as server_version, "
                      "(select value from privacy.settings where name = 'database_identity') as identity, "
                      "(select is_copy from privacy.copy_status()) as unsynced_copy, "
                      "(select value from privacy.settings where name = 'steward_role') as steward_role, "
                      "pg_catalog.clock_timestamp() as generated_at")[0]
    if filters.subject_type:
        key = _rows(cur, "select privacy.subject_key(%s, %s) as k", (filters.subject_type, filters.subject_key))[0]["k"]
        filters = Filters(filters.case, filters.subject_type, key, filters.since)
    entries = _rows(cur, _ENTRIES, {"case": filters.case, "stype": filters.subject_type, "skey": filters.subject_key,
                                    "since": filters.since})
    ids = [e["id"] for e in entries]
    events: dict[Any, list[dict[str, Any]]] = {i: [] for i in ids}
    for ev in _rows(cur, f"select {_EVENT_COLUMNS} from privacy.ledger where restriction_id = any(%s) order by seq", (ids,)):
        events[ev["restriction_id"]].append(ev)
    held_subjects = sorted({(e["subject_type"], e["subject_key"]) for e in entries if e["kind"] == "legal_hold"})
    exports = _rows(cur, f"select {_EVENT_COLUMNS} from privacy.ledger where event = 'subject_exported' "
                         "and (subject_type, subject_key) in (select * from unnest(%s::text[], %s::text[])) order by seq",
                    ([s[0] for s in held_subjects], [s[1] for s in held_subjects]))
    digests: dict[Any, list[dict[str, Any]]] = {i: [] for i in ids}
    for d in _rows(cur, "select hold_id, privacy.qualified(table_schema, table_name) as table, row_count as rows, digest as sha256, "
                        "computed_at, columns from privacy.hold_digests where hold_id = any(%s) order by table_schema, table_name", (ids,)):
        digests[d.pop("hold_id")].append(d)
    notices: dict[Any, list[dict[str, Any]]] = {i: [] for i in ids}
    for n in _rows(cur, "select l.restriction_id, n.recipient, n.ledger_seq as event_seq, l.event, n.created_at, n.acked_at, n.acked_by "
                        "from privacy.recipient_notices n join privacy.ledger l on l.seq = n.ledger_seq "
                        "where l.restriction_id = any(%s) order by n.ledger_seq, n.recipient", (ids,)):
        notices[n.pop("restriction_id")].append(n)

    holds = [_hold(e, events[e["id"]], digests[e["id"]], exports, cur) for e in entries if e["kind"] == "legal_hold"]
    restrictions = [_restriction(e, events[e["id"]], notices[e["id"]]) for e in entries if e["kind"] == "restriction"]

    head = _rows(cur, "select seq, recorded_at, pg_catalog.encode(hash, 'hex') as hash from privacy.ledger order by seq desc limit 1")
    count = _rows(cur, "select count(*) as n from privacy.ledger")[0]["n"]
    problems = _rows(cur, "select seq, problem from privacy.verify_ledger()")
    protected = _rows(cur, _PROTECTED)
    unprotected = _rows(cur, "select subject_type, table_name as table, kind, columns, parent_table, note from privacy.coverage()")
    doctor = _rows(cur, "select severity, category, object, finding, fix from privacy.doctor() order by severity = 'error' desc, category, object")
    return {
        "kind": REPORT_KIND,
        "report_version": REPORT_VERSION,
        "generated_at": meta["generated_at"],
        "generated_by": {"session_role": meta["session_role"], "current_role": meta["current_role"]},
        "toolkit": {"pyctl": __version__, "installed": meta["installed_version"]},
        "database": {"name": meta["database"], "identity": meta["identity"], "server_version": meta["server_version"],
                     "follower": in_recovery, "unsynced_copy": bool(meta["unsynced_copy"]), "steward_role": meta["steward_role"]},
        "filters": {"case": filters.case, "subject": f"{filters.subject_type}/{filters.subject_key}" if filters.subject_type else None,
                    "since": filters.since, "described": filters.describe()},
        "ledger": {"entries": count, "head": head[0] if head else None, "verifies": not problems, "problems": problems},
        "holds": holds,
        "restrictions": restrictions,
        "coverage": {"protected": protected, "unprotected": unprotected},
        "doctor": doctor,
        "how_to_verify": [{"what": w, "how": h} for w, h in HOW_TO_VERIFY],
    }


def _hold(e: dict[str, Any], events: list[dict[str, Any]], digests: list[dict[str, Any]], exports: list[dict[str, Any]],
          cur: psycopg.Cursor[Any]) -> dict[str, Any]:
    # The digests as the ledger recorded them at placement: the report says if the table of digests disagrees.
    recorded: dict[str, tuple[Any, Any, int]] = {}
    for ev in events:
        # On a synced copy the source's entry is inside the replay's own entry.
        payload = ev["payload"] if ev["event"] == "hold_digested" else (ev["payload"].get("entry") or {}).get("payload") or {}
        if ev["event"] in ("hold_digested", "synced_hold_digested"):
            for t in payload.get("tables", []) or []:
                recorded[t.get("table")] = (t.get("rows"), t.get("sha256"), ev["seq"])
    for d in digests:
        r = recorded.get(d["table"])
        d["ledger_seq"] = r[2] if r else None
        d["matches_ledger"] = r is not None and r[0] == d["rows"] and r[1] == d["sha256"]
    verification: dict[str, Any]
    if e["released_at"] is not None:
        verification = {"verdict": "not verified", "detail": f"released {_iso(e['released_at'])}: the data may change after a release",
                        "tables": []}
    else:
        try:
            with cur.connection.transaction():
                tables = _rows(cur, "select table_name as table, status, rows_at_hold, rows_now, added, changed, missing "
                                    "from privacy.verify_hold(%s)", (e["id"],))
        except psycopg.Error as exc:
            verification = {"verdict": "not verified", "detail": describe(exc), "tables": []}
        else:
            statuses = {t["status"] for t in tables}
            verdict = "violation" if "violation" in statuses else "rows added" if "rows added" in statuses else "unchanged"
            detail = {"violation": "rows held by this hold were changed or deleted since it was placed",
                      "rows added": "every row held is unchanged; rows were added since (allowed under a hold)",
                      "unchanged": "every row held is unchanged"}[verdict]
            verification = {"verdict": verdict, "detail": detail, "tables": tables}
    end = e["released_at"]
    under = [x for x in exports if (x["subject_type"], x["subject_key"]) == (e["subject_type"], e["subject_key"])
             and x["recorded_at"] >= e["placed_at"] and (end is None or x["recorded_at"] <= end)]
    return {
        "id": e["id"], "subject_type": e["subject_type"], "subject_key": e["subject_key"], "case": e["case_ref"],
        "reason": e["reason"], "state": "released" if e["released_at"] else "active",
        "placed_by": e["placed_by"], "placed_role": e["placed_role"], "placed_at": e["placed_at"],
        "released_by": e["released_by"], "released_at": e["released_at"], "release_reason": e["release_reason"],
        "release_reference": e["release_reference"],
        "events": events, "digests": digests, "verification": verification,
        "exports": [{"seq": x["seq"], "recorded_at": x["recorded_at"], "hash": x["hash"], "by": x["session_role"],
                     "name": x["payload"].get("name"), "format": x["payload"].get("format"), "files": x["payload"].get("files"),
                     "rows": x["payload"].get("rows"), "manifest_sha256": x["payload"].get("manifest_sha256"),
                     "sha256sums_sha256": x["payload"].get("sha256sums_sha256")} for x in under],
    }


def _restriction(e: dict[str, Any], events: list[dict[str, Any]], notices: list[dict[str, Any]]) -> dict[str, Any]:
    required = list(e["required_steps"] or [])
    steps = [{"step": step, "label": label, "required": step in required, "at": e[at], "by": e[by], "evidence": e[text]}
             for step, label, at, by, text in STEPS]
    return {
        "id": e["id"], "subject_type": e["subject_type"], "subject_key": e["subject_key"], "basis": e["basis"],
        "basis_article": BASIS.get(e["basis"], e["basis"]), "reason": e["reason"], "state": e["state"],
        "placed_by": e["placed_by"], "placed_role": e["placed_role"], "placed_at": e["placed_at"],
        "steps": steps, "required_steps": required, "missing_steps": list(e["missing_steps"] or []) if not e["released_at"] else [],
        "released_by": e["released_by"], "released_at": e["released_at"], "release_reason": e["release_reason"],
        "release_forced": e["release_forced"], "recipients": notices, "events": events,
    }


def _fleet_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    allowed = conn.execute("select pg_catalog.has_table_privilege('privacy.fleet', 'select')").fetchone()
    if not (allowed and allowed[0]):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute("select name, kind, dsn, dsn_env, added_at from privacy.fleet order by name").fetchall())


def _copy_state(row: dict[str, Any], facts: dict[str, Any], check: bool) -> dict[str, Any]:
    """A fleet copy: where it is (no password), whether it was reached, and per hold whether it has the hold in its state here."""
    from .fleet import copy_dsn

    out: dict[str, Any] = {"name": row["name"], "kind": row["kind"], "where": _mask_dsn(row), "added_at": _utc(row["added_at"]),
                           "reachable": None, "role": None, "detail": "not checked", "entries": {}}
    if not check:
        return out
    ids = [h["id"] for h in facts["holds"]]
    try:
        copy = psycopg.connect(copy_dsn(row), autocommit=True, connect_timeout=5)
    except (psycopg.Error, PyctlError) as exc:
        out["reachable"] = False
        out["detail"] = "unreachable: " + (describe(exc) if isinstance(exc, psycopg.Error) else str(exc))
        return out
    try:
        out["reachable"] = True
        out["role"] = "follower" if (copy.execute("select pg_catalog.pg_is_in_recovery()").fetchone() or [False])[0] else "writable"
        there = copy.execute("select pg_catalog.to_regclass('privacy.processing_restrictions') is not null").fetchone()
        if not (there and there[0]):
            out["detail"] = "the toolkit is not installed there"
            return out
        found = {r[0]: r[1] for r in copy.execute("select id, released_at is not null from privacy.processing_restrictions "
                                                  "where id = any(%s)", (ids,)).fetchall()}
        out["detail"] = ""
        for h in facts["holds"]:
            released_here = h["released_at"] is not None
            if h["id"] not in found:
                out["entries"][h["id"]] = {"state": "not synced", "detail": "the hold is missing there"}
            elif found[h["id"]] != released_here:
                out["entries"][h["id"]] = {"state": "not synced",
                                           "detail": "released here, still active there" if released_here else "released there"}
            else:
                out["entries"][h["id"]] = {"state": "synced", "detail": "released there too" if released_here else "in force there"}
    except psycopg.Error as exc:
        out["detail"] = describe(exc)
    finally:
        copy.close()
    return out


def _summary(facts: dict[str, Any]) -> dict[str, Any]:
    holds = facts["holds"]
    return {
        "holds": len(holds),
        "holds_active": sum(1 for h in holds if h["state"] == "active"),
        "holds_violated": sum(1 for h in holds if h["verification"]["verdict"] == "violation"),
        "restrictions": len(facts["restrictions"]),
        "restrictions_active": sum(1 for r in facts["restrictions"] if r["released_at"] is None),
        "pending_notices": sum(1 for r in facts["restrictions"] for n in r["recipients"] if n["acked_at"] is None),
        "unprotected_tables": len(facts["coverage"]["unprotected"]),
        "doctor_errors": sum(1 for d in facts["doctor"] if d["severity"] == "error"),
        "doctor_warnings": sum(1 for d in facts["doctor"] if d["severity"] != "error"),
        "copies_not_synced": sum(1 for c in facts["fleet"] if c["reachable"] is False)
        + sum(1 for h in holds for c in h["fleet"] if c["state"] == "not synced"),
        "ledger_verifies": facts["ledger"]["verifies"],
    }


# -- rendering ---------------------------------------------------------------------------------


def to_json(facts: dict[str, Any]) -> str:
    return json.dumps(_plain(facts), indent=2, ensure_ascii=False) + "\n"


_TIMELINE_WIDTH = 1000
_TIMELINE_LABEL = 330
_TIMELINE_ROW = 28


def timeline(facts: dict[str, Any]) -> dict[str, Any]:
    """The geometry of the timeline: one bar per hold and restriction, from placement to release (or now)."""
    now: dt.datetime = facts["generated_at"]
    items = [("hold", h) for h in facts["holds"]] + [("restriction", r) for r in facts["restrictions"]]
    items.sort(key=lambda x: (x[1]["placed_at"], str(x[1]["id"])))
    if not items:
        return {"rows": [], "ticks": [], "width": _TIMELINE_WIDTH, "height": 0}
    start = min(x[1]["placed_at"] for x in items)
    since = facts["filters"]["since"]
    if since is not None and since > start:
        start = since
    span = max((now - start).total_seconds(), 60.0) * 1.02
    plot = _TIMELINE_WIDTH - _TIMELINE_LABEL - 20

    def x_of(t: dt.datetime) -> float:
        return round(_TIMELINE_LABEL + max(0.0, (t - start).total_seconds()) / span * plot, 1)

    rows = []
    for i, (kind, e) in enumerate(items):
        y = 30 + i * _TIMELINE_ROW
        end = e["released_at"] or now
        if kind == "hold":
            violated = e["verification"]["verdict"] == "violation"
            label = f"hold {e['case']} · {e['subject_type']}/{e['subject_key']}"
            css = "bar-violation" if violated else ("bar-hold" if e["released_at"] is None else "bar-hold-released")
            note = "VIOLATION" if violated else ""
            marks = []
        else:
            label = f"restriction ({e['basis']}) · {e['subject_type']}/{e['subject_key']}"
            css = "bar-restriction" if e["released_at"] is None else "bar-restriction-released"
            note = ""
            marks = [{"x": x_of(s["at"]), "title": f"{s['step']} {_iso(s['at'])}"} for s in e["steps"] if s["at"] is not None]
        x1 = x_of(e["placed_at"])
        x2 = max(x_of(end), x1 + 3)
        # The note goes inside a bar wide enough to hold it, else just after it.
        inside = x2 - x1 >= 100
        after = x2 + 100 <= _TIMELINE_WIDTH
        rows.append({"y": y, "label": label[:40] + ("…" if len(label) > 40 else ""), "x1": x1, "width": round(x2 - x1, 1),
                     "css": css, "note": note, "note_x": round(x1 + 6 if inside else x2 + 5 if after else x1 - 5, 1),
                     "note_anchor": "start" if inside or after else "end", "note_fill": "#fff" if inside else "#c00000",
                     "open": e["released_at"] is None, "marks": marks,
                     "title": f"{label}: {_iso(e['placed_at'])} to " + (_iso(e["released_at"]) if e["released_at"] else "in force")})
    ticks = []
    for k in range(6):
        t = start + dt.timedelta(seconds=span / 1.02 * k / 5)
        fmt = "%Y-%m-%d" if span > 3 * 86400 else "%m-%d %H:%M" if span > 3600 else "%H:%M:%S"
        ticks.append({"x": x_of(t), "label": t.strftime(fmt), "anchor": "end" if k == 5 else "middle"})
    height = 30 + len(items) * _TIMELINE_ROW + 10
    return {"rows": rows, "ticks": ticks, "width": _TIMELINE_WIDTH, "height": height, "now_x": x_of(now)}


def _code(text: str) -> markupsafe.Markup:
    """Plain text with `commands` in backticks, as HTML with the commands in <code>."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("pyctl", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda v: _iso(v) if isinstance(v, dt.datetime) else ("" if v is None else str(v))
    env.filters["code"] = _code
    env.filters["tojson_compact"] = lambda v: json.dumps(_plain(v), ensure_ascii=False, sort_keys=True)
    return env


def to_html(facts: dict[str, Any]) -> str:
    return _environment().get_template("report.html.j2").render(r=facts, timeline=timeline(facts))


def write(dsn: str | None, out: str, fmt: str, filters: Filters, *, check_fleet: bool = True) -> dict[str, Any]:
    """Gather the facts, render them, write them to OUT (atomically; '-' is stdout); returns a summary."""
    facts = collect(dsn, filters, check_fleet=check_fleet)
    text = to_json(facts) if fmt == "json" else to_html(facts)
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if out != "-":
        target = Path(out)
        if target.is_dir():
            raise PyctlError(f"{out} is a directory: give the report's file name")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent if str(target.parent) else ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return {"path": out, "format": fmt, "sha256": digest, "bytes": len(data), "text": text if out == "-" else None,
            **facts["summary"], "ledger_head": facts["ledger"]["head"]}
