"""`pyctl export`: everything held about a subject, from one consistent snapshot, with a verifiable manifest.

An export is a directory (or, with --zip, a zip file holding the same files):

    01-public.addresses.csv ...   one file per protected table, numbered in load order
    manifest.json                 source, snapshot, subject, toolkit; each file's table, rows, bytes, sha256
    SHA256SUMS                    the same digests, and the manifest's, for `sha256sum -c SHA256SUMS`

Every file comes from ONE transaction (REPEATABLE READ, READ ONLY), each table streamed
with COPY through a fixed-size buffer, so memory does not grow with the data. The
export is written under a temporary name beside PATH (.NAME.partial-XXXX) and renamed
onto PATH only once it is complete and the ledger holds the manifest's sha256.
"""

from __future__ import annotations

import os  # noqa: F401  (the crash tests fail its fsync)

from .. import __version__
from .command import export_command
from .copy import export
from .manifest import FORMATS, check_output
from .verify import check_ledger, verify

__all__ = ["FORMATS", "__version__", "check_ledger", "check_output", "export", "export_command", "verify"]
