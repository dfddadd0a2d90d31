"""Opaque, tamper-evident page tokens: keyset cursors that stay stable under inserts."""

from __future__ import annotations

import base64
import hashlib
import json

from workflowd.domain.errors import InvalidRequest

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAX_TOKEN_CHARS = 128
_MAX_SEQ = 2**63 - 1  # SQLite's INTEGER range


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidRequest("page_size", f"must not be negative, got {requested}")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _fingerprint(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:12]


def encode_token(last_seq: int, filter_key: str) -> str:
    raw = json.dumps({"s": last_seq, "f": _fingerprint(filter_key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, filter_key: str) -> int | None:
    """The sequence number to continue below, or None for the first page."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidRequest("page_token", "is not a token this server issued")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        seq = data["s"]
        fingerprint = data["f"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidRequest("page_token", "is not a token this server issued") from exc
    if type(seq) is not int or not 0 < seq <= _MAX_SEQ:
        raise InvalidRequest("page_token", "is not a token this server issued")
    if fingerprint != _fingerprint(filter_key):
        raise InvalidRequest(
            "page_token", "was issued for a different filter: repeat the request with its filter"
        )
    return seq
