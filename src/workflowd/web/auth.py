"""Who is looking at the page: a session cookie names a company, and a CSRF token guards
every state-changing request.

With tokens configured, signing in with a token (a form POST, never a URL) sets an HttpOnly,
SameSite=Strict cookie that holds the company and the SHA-256 of the token, under an HMAC
with a key this process made at start (a restart signs everyone out). Each request checks
the token's digest against the tokens in force, the same table gRPC reads: a token removed
or moved to another company by a SIGHUP reload stops its cookies at once. Without tokens the
daemon serves one company on loopback only (settings refuse anything else), and every
visitor gets a session for it without signing in: it still carries the CSRF token, since any
web site the operator visits could post to a loopback address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Protocol

COOKIE = "workflowd_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
_MAX_COOKIE_CHARS = 512


class Tokens(Protocol):
    """The bearer tokens in force (the composition root hands the gRPC authenticator's)."""

    @property
    def local_company(self) -> str | None:
        """The one company served when no tokens are configured; None when they are."""
        ...

    def principal(self, token: str) -> tuple[str, str] | None:
        """(company, token digest) of a token in force, None for any other."""
        ...

    def grants(self, company: str, digest: str) -> bool:
        """Whether the token of this digest still speaks for `company`."""
        ...


@dataclass(frozen=True, slots=True)
class Session:
    company: str
    digest: str
    """The SHA-256 of the token signed in with ("" without tokens)."""
    cookie: str
    csrf: str


class Sessions:
    def __init__(self, tokens: Tokens, key: bytes | None = None) -> None:
        self._tokens = tokens
        self._key = key or secrets.token_bytes(32)

    @property
    def signing_in(self) -> bool:
        """Whether visitors sign in with a token (tokens are configured)."""
        return self._tokens.local_company is None

    def sign_in(self, token: str) -> Session | None:
        """A new session for a token in force, None for any other."""
        found = self._tokens.principal(token)
        return None if found is None else self._issue(*found)

    def local(self) -> Session | None:
        """A new session for the one company served without tokens."""
        company = self._tokens.local_company
        return None if company is None else self._issue(company, "")

    def _issue(self, company: str, digest: str) -> Session:
        body = json.dumps([company, digest, secrets.token_hex(8)], separators=(",", ":"))
        encoded = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        cookie = f"{encoded}.{self._mac('session', encoded)}"
        return Session(company, digest, cookie, self._mac("csrf", cookie))

    def session(self, cookie: str) -> Session | None:
        """The session a cookie holds, if this process signed it and its token (or the
        tokenless mode it was made in) is still in force."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS:
            return None
        encoded, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", encoded)):
            return None
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            company, digest, _ = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            return None
        if not (isinstance(company, str) and isinstance(digest, str)):
            return None
        if not self.valid(company, digest):
            return None
        return Session(company, digest, cookie, self._mac("csrf", cookie))

    def valid(self, company: str, digest: str) -> bool:
        """Whether a session of `company`, signed in with the token `digest`, still holds."""
        local = self._tokens.local_company
        if local is not None:
            return not digest and company == local
        return bool(digest) and self._tokens.grants(company, digest)

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}|{text}".encode(), hashlib.sha256).hexdigest()
