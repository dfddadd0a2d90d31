"""Page sizes, and page tokens: keyset cursors that stay stable under inserts, sealed so that
they reveal nothing and cannot be forged.

A token carries the `seq` of the last row a page showed. Rows of every company share that
sequence, so a readable `seq` would let a company count the rows other companies created
between two of its own. The token therefore holds it encrypted (XOR with an HMAC-SHA-256 key
stream under a fresh nonce), with a keyed fingerprint of the listing's filter, all under an
HMAC tag. The key is a secret the store keeps (`store_secrets`), so every replica reads the
tokens of the others, and tokens outlive restarts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from typing import overload

from workflowd.domain.errors import InvalidRequest
from workflowd.store.sql import Conn

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAX_TOKEN_CHARS = 128
_MAX_SEQ = 2**63 - 1  # SQLite's INTEGER range
_VERSION = b"\x01"
_NONCE, _SEQ, _FILTER, _TAG = 8, 8, 6, 16
_SIZE = len(_VERSION) + _NONCE + _SEQ + _FILTER + _TAG
_SECRET = "page_tokens"
_FORGED = "is not a token this server issued"


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidRequest("page_size", f"must not be negative, got {requested}")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def stored_key(conn: Conn) -> bytes:
    """The store's page token key, made on first use (the first process to open the store)."""
    conn.execute(
        "INSERT INTO store_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        (_SECRET, secrets.token_hex(32)),
    )
    row = conn.execute("SELECT value FROM store_secrets WHERE name = ?", (_SECRET,)).fetchone()
    return bytes.fromhex(row["value"])


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, seq: int, filter_key: str) -> str:
        nonce = os.urandom(_NONCE)
        body = _VERSION + nonce + self._masked(seq, nonce) + self._fingerprint(filter_key)
        raw = body + self._mac(b"token", body)[:_TAG]
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def after(self, seqs: Sequence[int], filter_key: str) -> Sequence[str]:
        """A token after each of `seqs`, made when asked for (a page uses one of them)."""
        return _Tokens(self, seqs, filter_key)

    def decode(self, token: str, filter_key: str) -> int | None:
        """The sequence number to continue below, or None for the first page."""
        if not token:
            return None
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidRequest("page_token", _FORGED)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("page_token", _FORGED) from exc
        if len(raw) != _SIZE or raw[:1] != _VERSION:
            raise InvalidRequest("page_token", _FORGED)
        body, tag = raw[:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._mac(b"token", body)[:_TAG]):
            raise InvalidRequest("page_token", _FORGED)
        nonce = body[1 : 1 + _NONCE]
        masked = body[1 + _NONCE : 1 + _NONCE + _SEQ]
        if not hmac.compare_digest(body[-_FILTER:], self._fingerprint(filter_key)):
            raise InvalidRequest(
                "page_token",
                "was issued for a different filter: repeat the request with its filter",
            )
        seq = int.from_bytes(_xor(masked, self._mac(b"seq", nonce)[:_SEQ]), "big")
        if not 0 < seq <= _MAX_SEQ:
            raise InvalidRequest("page_token", _FORGED)
        return seq

    def _masked(self, seq: int, nonce: bytes) -> bytes:
        return _xor(seq.to_bytes(_SEQ, "big"), self._mac(b"seq", nonce)[:_SEQ])

    def _fingerprint(self, filter_key: str) -> bytes:
        return self._mac(b"filter", filter_key.encode("utf-8", "surrogatepass"))[:_FILTER]

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\0" + data, hashlib.sha256).digest()


class _Tokens(Sequence[str]):
    def __init__(self, tokens: PageTokens, seqs: Sequence[int], filter_key: str) -> None:
        self._tokens = tokens
        self._seqs = seqs
        self._filter_key = filter_key

    def __len__(self) -> int:
        return len(self._seqs)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self._tokens.encode(seq, self._filter_key) for seq in self._seqs[index]]
        return self._tokens.encode(self._seqs[index], self._filter_key)


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))
