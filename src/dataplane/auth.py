"""Bearer tokens and the companies they reach, from a TOML tokens file.

```toml
[[tokens]]            # a company's own token: it reaches that company only
company = "acme"
name = "acme-ci"      # a label for logs and errors; never the token
sha256 = "<64 hex>"   # SHA-256 of the token
[[service_tokens]]    # a service (workflowd) acting for any company it names
name = "workflowd"
sha256 = "<64 hex>"
```

Only SHA-256 digests are kept, so neither the file nor the process holds a token in clear. A
presented token is hashed and looked up by its digest: the digest of a guess says nothing
about the digests it missed, so the lookup needs no constant-time comparison.

workflowd reads its own tokens file (`workflowd.api.tokens`) with exactly these rules, so a file
one of them refuses the other refuses too (`tests/test_tokens_rules.py` feeds both the same
hostile files); the two stay apart because the data plane never imports workflowd.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplane.errors import quote
from dataplane.model import COMPANY_RE

# The same rules as workflowd's own reading of a tokens file, so that one file serves both.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_FIELDS = {"tokens": ("company", "name", "sha256"), "service_tokens": ("name", "sha256")}


@dataclass(frozen=True)
class Principal:
    """Who a token speaks for: one company, or (`company` None) a service naming any."""

    name: str
    company: str | None


@dataclass(frozen=True)
class TokenTable:
    by_digest: Mapping[str, Principal]

    @property
    def company_tokens(self) -> int:
        return sum(1 for p in self.by_digest.values() if p.company is not None)

    @property
    def service_tokens(self) -> int:
        return len(self.by_digest) - self.company_tokens

    def lookup(self, token: str) -> Principal | None:
        return self.by_digest.get(digest(token))

    def grants(self, sha256: str, principal: Principal) -> bool:
        """Whether the token of digest `sha256` still speaks for what `principal` said it did
        (the same company, or a service still): a reload that removes the token or moves it to
        another company ends what it had opened."""
        now = self.by_digest.get(sha256)
        return now is not None and now.company == principal.company

    @classmethod
    def of(
        cls,
        company_tokens: Mapping[str, str] | None = None,
        service_tokens: Mapping[str, str] | None = None,
    ) -> TokenTable:
        """A table from tokens in clear, for code that mints its own (token → company, and
        token → service name); only their digests are kept."""
        entries: dict[str, Any] = {
            "tokens": [
                {"company": company, "name": f"{company}-{index}", "sha256": digest(token)}
                for index, (token, company) in enumerate((company_tokens or {}).items())
            ],
            "service_tokens": [
                {"name": name, "sha256": digest(token)}
                for token, name in (service_tokens or {}).items()
            ],
        }
        return parse_tokens(entries, "the tokens given")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: Path) -> TokenTable:
    """The tokens file at `path`; a ValueError says what is wrong with it, naming the entry and
    the field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the tokens file {path}: {exc}") from exc
    return read_tokens(raw, path)


def read_tokens(raw: bytes, path: Path) -> TokenTable:
    """The tokens file `path` whose bytes are `raw`."""
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot read the tokens file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the tokens file {path} is not valid TOML: {exc}") from exc
    return parse_tokens(document, f"the tokens file {path}")


def parse_tokens(document: Mapping[str, Any], source: str) -> TokenTable:
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"{source} has an unknown section {quote(unknown[0])}; it holds [[tokens]] and"
            " [[service_tokens]] only"
        )
    table: dict[str, Principal] = {}
    names: set[str] = set()
    for section, fields in _FIELDS.items():
        entries = document.get(section, [])
        if not isinstance(entries, list):
            raise ValueError(f"{source}: {section} must be an array of tables ([[{section}]])")
        for index, entry in enumerate(entries):
            where = f"{source}: {section}[{index}]"
            principal, sha = _entry(entry, fields, where)
            where = f"{where} (name {quote(principal.name)})"
            if principal.name in names:
                raise ValueError(f"{where}: name is already used by another token")
            if sha in table:
                raise ValueError(f"{where}: sha256 is the digest of another token too")
            names.add(principal.name)
            table[sha] = principal
    if not table:
        raise ValueError(
            f"{source} has no [[tokens]] or [[service_tokens]] entry; without tokens, leave"
            " out --tokens-file"
        )
    return TokenTable(table)


def _entry(entry: object, fields: tuple[str, ...], where: str) -> tuple[Principal, str]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise ValueError(f"{where} has an unknown field {quote(unknown[0])}")
    for field in fields:
        if not isinstance(entry.get(field), str):
            raise ValueError(f"{where}: {field} is required and must be a string")
    name, sha = entry["name"], entry["sha256"]
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: name must match {_NAME.pattern}")
    where = f"{where} (name {quote(name)})"
    if not _SHA256.fullmatch(sha):
        # Not quoted: it might be a token put there by mistake.
        raise ValueError(
            f"{where}: sha256 must be the 64 lowercase hexadecimal digits of the token's"
            f" SHA-256, not {len(sha)} characters of something else"
        )
    company = entry.get("company")
    if company is not None and not COMPANY_RE.fullmatch(company):
        raise ValueError(f"{where}: company {quote(company)} must match {COMPANY_RE.pattern}")
    return Principal(name, company), sha
