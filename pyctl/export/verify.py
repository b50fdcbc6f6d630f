"""Verifying an export: every digest and row count recomputed, offline; its ledger entry, online."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.rows import dict_row

from ..db import PyctlError, connect, describe, require_installed
from .manifest import BUFFER, LEDGER_EVENT, MANIFEST, MANIFEST_KIND, MANIFEST_VERSION, SUMS


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
