"""Bearer tokens and the companies they belong to, read from a TOML file of hashes:

```toml
[[tokens]]
company = "acme"          # ^[a-z0-9_-]{1,64}$
name = "acme-ci"          # shown in logs and errors, never the token
sha256 = "<64 hex>"       # SHA-256 of the token; no token is stored or logged in clear
```

The same file can be given to the local data plane, which then accepts each company's token
for that company's datasets and jobs.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from workflowd.domain.errors import InvalidRequest

COMPANY = re.compile(r"^[a-z0-9_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token says the caller is."""

    company: str
    name: str
    sha256: str


class TokenTable:
    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_hash = dict(principals)

    @property
    def companies(self) -> frozenset[str]:
        return frozenset(p.company for p in self._by_hash.values())

    @property
    def hashes(self) -> frozenset[str]:
        return frozenset(self._by_hash)

    def principals(self) -> list[Principal]:
        return list(self._by_hash.values())

    def principal(self, token: str) -> Principal | None:
        return self._by_hash.get(sha256_hex(token))

    def __len__(self) -> int:
        return len(self._by_hash)


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def load_tokens(path: Path) -> TokenTable:
    """The table of a tokens file; InvalidRequest (field "tokens_file") says what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest("tokens_file", f"cannot read {path}: {exc}") from exc
    unknown = set(data) - {"tokens", "service_tokens"}
    if unknown:
        raise InvalidRequest("tokens_file", f"{path}: unknown tables {sorted(unknown)}")
    entries = data.get("tokens", [])
    if not isinstance(entries, list) or not entries:
        raise InvalidRequest("tokens_file", f"{path} has no [[tokens]] entries")
    principals: dict[str, Principal] = {}
    for index, entry in enumerate(entries):
        principal = _principal(entry, f"{path}: tokens[{index}]")
        if principal.sha256 in principals:
            raise InvalidRequest("tokens_file", f"{path}: tokens[{index}] repeats a token")
        principals[principal.sha256] = principal
    return TokenTable(principals)


def _principal(entry: object, where: str) -> Principal:
    if not isinstance(entry, dict) or set(entry) != {"company", "name", "sha256"}:
        raise InvalidRequest("tokens_file", f"{where} needs exactly company, name and sha256")
    company, name, digest = entry["company"], entry["name"], entry["sha256"]
    if not isinstance(company, str) or not COMPANY.match(company):
        raise InvalidRequest("tokens_file", f"{where}: company must match {COMPANY.pattern}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest("tokens_file", f"{where}: name must match {_NAME.pattern}")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise InvalidRequest(
            "tokens_file", f"{where}: sha256 must be 64 lowercase hex digits (the token's hash)"
        )
    return Principal(company, name, digest)
