"""Bearer tokens and the companies they belong to, read from a TOML file of hashes:

```toml
[[tokens]]
company = "acme"          # [a-z0-9_-]{1,64}
name = "acme-ci"          # shown in logs and errors, never the token
sha256 = "<64 hex>"       # SHA-256 of the token; no token is stored or logged in clear
```

The local data plane reads the same file format (`dataplane.auth`), where `[[service_tokens]]`
(a name and a digest, no company) may also stand. Both readers apply the same rules, word for
word, so that no file is taken by one and refused by the other (`tests/test_tokens_rules.py`
feeds both the same hostile files): every value must match its pattern whole (no trailing
newline slips past), names and digests are unique across the file, nothing unknown is
ignored. workflowd validates `[[service_tokens]]` but serves no one with them: a service token
acts for any company it names, which only a data plane accepts. The data plane does not import
workflowd, so the rules are written twice rather than shared.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflowd.domain.errors import InvalidRequest

COMPANY = re.compile(r"^[a-z0-9_-]{1,64}$")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_FIELDS = {"tokens": ("company", "name", "sha256"), "service_tokens": ("name", "sha256")}
_QUOTE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token says the caller is."""

    company: str
    name: str
    sha256: str


class TokenTable:
    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_hash = dict(principals)

    def principals(self) -> list[Principal]:
        return list(self._by_hash.values())

    def principal(self, token: str) -> Principal | None:
        return self._by_hash.get(sha256_hex(token))

    def grants(self, principal: Principal) -> bool:
        """Whether `principal`'s token still speaks for its company: a reload that removes the
        token, or moves it to another company, ends what it had opened."""
        now = self._by_hash.get(principal.sha256)
        return now is not None and now.company == principal.company

    def __len__(self) -> int:
        return len(self._by_hash)


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def load_tokens(path: Path) -> TokenTable:
    """The table of a tokens file; InvalidRequest (field "tokens_file") says what is wrong,
    naming the entry and the field."""
    try:
        return _parse(_document(path), f"the tokens file {path}")
    except ValueError as exc:
        raise InvalidRequest("tokens_file", str(exc)) from None


def _document(path: Path) -> Mapping[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the tokens file {path}: {exc}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot read the tokens file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the tokens file {path} is not valid TOML: {exc}") from exc


def _parse(document: Mapping[str, Any], source: str) -> TokenTable:
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"{source} has an unknown section {_quote(unknown[0])}; it holds [[tokens]] and"
            " [[service_tokens]] only"
        )
    principals: dict[str, Principal] = {}
    names: set[str] = set()
    digests: set[str] = set()
    for section, fields in _FIELDS.items():
        entries = document.get(section, [])
        if not isinstance(entries, list):
            raise ValueError(f"{source}: {section} must be an array of tables ([[{section}]])")
        for index, entry in enumerate(entries):
            where = f"{source}: {section}[{index}]"
            company, name, sha = _entry(entry, fields, where)
            where = f"{where} (name {_quote(name)})"
            if name in names:
                raise ValueError(f"{where}: name is already used by another token")
            if sha in digests:
                raise ValueError(f"{where}: sha256 is the digest of another token too")
            names.add(name)
            digests.add(sha)
            if company is not None:
                principals[sha] = Principal(company, name, sha)
    if not digests:
        raise ValueError(
            f"{source} has no [[tokens]] or [[service_tokens]] entry; without tokens, leave"
            " out --tokens-file"
        )
    return TokenTable(principals)


def _entry(entry: object, fields: tuple[str, ...], where: str) -> tuple[str | None, str, str]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise ValueError(f"{where} has an unknown field {_quote(unknown[0])}")
    for field in fields:
        if not isinstance(entry.get(field), str):
            raise ValueError(f"{where}: {field} is required and must be a string")
    name, sha = entry["name"], entry["sha256"]
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: name must match {_NAME.pattern}")
    where = f"{where} (name {_quote(name)})"
    if not _SHA256.fullmatch(sha):
        # Not quoted: it might be a token put there by mistake.
        raise ValueError(
            f"{where}: sha256 must be the 64 lowercase hexadecimal digits of the token's"
            f" SHA-256, not {len(sha)} characters of something else"
        )
    company = entry.get("company")
    if company is not None and not COMPANY.fullmatch(company):
        raise ValueError(f"{where}: company {_quote(company)} must match {COMPANY.pattern}")
    return company, name, sha


def _quote(value: str) -> str:
    """`value` as a quoted literal, cut so that the file's content never makes an error
    unboundedly long."""
    if len(value) <= _QUOTE_LIMIT:
        return repr(value)
    return repr(value[:_QUOTE_LIMIT]) + f"… ({len(value)} characters)"
