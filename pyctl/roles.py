"""Passwords for the roles pyctl creates: a SCRAM-SHA-256 verifier, computed here.

PostgreSQL stores a verifier given in CREATE ROLE ... PASSWORD as it is, so the
cleartext password never reaches the server, nor its log. The computation is the
one PostgreSQL and libpq do (RFC 5802 and RFC 7677), SASLprep (RFC 4013) included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def _saslprep(password: str) -> bytes:
    """RFC 4013 SASLprep, as PostgreSQL applies it; a password it would reject is used as it is."""
    # PostgreSQL's order: a non-ASCII space (C.1.2) becomes a space first, even where B.1 would drop it (U+200B).
    mapped = "".join(" " if stringprep.in_table_c12(c) else c
                     for c in password if stringprep.in_table_c12(c) or not stringprep.in_table_b1(c))
    normalized = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
                  stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
                  stringprep.in_table_c9, stringprep.in_table_a1)
    if not normalized or any(check(c) for c in normalized for check in prohibited):
        return password.encode("utf-8")
    if any(stringprep.in_table_d1(c) for c in normalized):  # bidirectional text: RFC 3454, section 6
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])) \
                or any(stringprep.in_table_d2(c) for c in normalized):
            return password.encode("utf-8")
    return normalized.encode("utf-8")


def scram_sha256_verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The verifier PostgreSQL would store for PASSWORD: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
