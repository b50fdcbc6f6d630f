"""The files of an export, written through a staging directory, and its manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any

from .. import __version__
from ..db import PyctlError
from .plan import _Subject

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
