"""Diagnostics: what is wrong with a specification, and exactly where."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem. `pointer` is a JSON pointer; `line`/`column` are 1-based, 0 when unknown."""

    message: str
    pointer: str = ""
    line: int = 0
    column: int = 0
    severity: Severity = Severity.ERROR

    def render(self, source: str = "") -> str:
        """`file:line:col: pointer: message`, the shape compilers and editors understand."""
        where = f"{source}:{self.line}:{self.column}" if self.line else (source or "<spec>")
        pointer = self.pointer or "/"
        return f"{where}: {pointer}: {self.message}"


def pointer_join(base: str, *parts: str | int) -> str:
    """Extend a JSON pointer, escaping `~` and `/` as RFC 6901 says."""
    out = base
    for part in parts:
        out += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return out
