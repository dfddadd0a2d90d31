"""Runtime expressions at creation time: `${ … }` detection and the compile check.

An expression is compiled exactly as the worker compiles it (`sandboxed`), except that each
refused builtin is shadowed by a definition naming an undefined variable: jq drops definitions
nobody references, so compilation fails, naming the builtin, exactly when the program can reach
it, whatever its spelling. A short scan adds the friendly refusal of `$ENV` and `$__loc__`
(bound to harmless values at run time anyway) and of a `)` that would close the wrapper's `(`.
The same scan tells the evaluator which named arguments a program uses (`used_variables`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Generator
from dataclasses import dataclass

import jq

from workflowd.domain.diagnostics import Diagnostic
from workflowd.spec._jqworker import REFUSAL, VARIABLES, sandboxed

__all__ = [
    "VARIABLES",
    "ExpressionError",
    "check_expression",
    "compile_error",
    "expression_source",
    "is_expression",
    "used_variables",
]

REFUSED_VARIABLES = frozenset({"ENV", "__loc__"})

_EXPRESSION = re.compile(r"^\s*\$\{(.*)\}\s*$", re.DOTALL)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
# Whitespace and comments; since jq 1.7.1 a backslash continues a comment onto the next line.
_GAP = re.compile(r"(?:\s|#(?:[^\\\n]|\\[\s\S])*)*")
_DETECTOR = "__workflowd_refused_"
_REFUSED_USE = re.compile(rf"\${_DETECTOR}(\w+) is not defined")
_MODULES = re.compile(r"syntax error, unexpected (import|include)\b")
_LOCATION = re.compile(r" at <top-level>, line (\d+)(?:, column (\d+))?:?$")


class ExpressionError(Exception):
    """An expression failed to compile or evaluate; the message says what failed."""


def is_expression(value: str) -> bool:
    """True when the whole string, surrounding whitespace aside, is `${ … }`."""
    return _EXPRESSION.match(value) is not None


def expression_source(value: str) -> str:
    """The jq program inside `${ … }`; a string that is not wrapped is returned as is."""
    match = _EXPRESSION.match(value)
    return match.group(1).strip() if match else value.strip()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "var" (a `$name`, without the `$`) or "stray" (an unmatched `)`)
    text: str


def _skip_gap(source: str, i: int) -> int:
    gap = _GAP.match(source, i)
    return gap.end() if gap else i


def _string(source: str, i: int) -> Generator[_Token, None, int]:
    """The tokens of the code in a string's `\\( … )` interpolations; returns the index after
    the closing quote (the end of the source when the string is unterminated)."""
    i += 1
    while i < len(source):
        if source[i] == '"':
            return i + 1
        if source.startswith("\\(", i):
            i = yield from _code(source, i + 2, interpolation=True)
        else:
            i += 2 if source[i] == "\\" else 1
    return len(source)


def _code(source: str, i: int, interpolation: bool = False) -> Generator[_Token, None, int]:
    """Scan jq code from `i`; in an interpolation, stop after the matching `)`. Returns the
    index where it stopped. jq 1.7 accepts `$ ENV` (space or comment after `$`): so do we."""
    depth = 0
    while i < len(source):
        char = source[i]
        if char.isspace() or char == "#":
            i = _skip_gap(source, i)
        elif char == '"':
            i = yield from _string(source, i)
        elif char == "$":
            name = _IDENT.match(source, _skip_gap(source, i + 1))
            if name:
                yield _Token("var", name.group())
            i = name.end() if name else i + 1
        else:
            if char == "(":
                depth += 1
            elif char == ")" and depth > 0:
                depth -= 1
            elif char == ")" and interpolation:
                return i + 1
            elif char == ")":
                yield _Token("stray", char)
            i += 1
    return i


@functools.lru_cache(maxsize=4096)
def used_variables(source: str) -> frozenset[str]:
    """Every `$name` the program spells, without the `$`: the named arguments it may read.
    Found by the same scan as the `$ENV` refusal (strings, interpolations and comments as jq
    reads them); a name the program binds itself is included too, which only costs shipping a
    value that is not read."""
    return frozenset(t.text for t in _code(source, 0) if t.kind == "var")


def _refusal(names: list[str]) -> str:
    return f"expression uses {', '.join(f'`{name}`' for name in names)}: {REFUSAL}"


def _detect(name: str) -> str:
    return f"${_DETECTOR}{name}"


@functools.lru_cache(maxsize=4096)
def compile_error(source: str, names: frozenset[str] = frozenset()) -> str | None:
    """Why the program is refused (sandbox, syntax, unknown variable), or None; `names` are the
    variables in scope besides the standard ones. Cached: a jq compilation costs about 1.5 ms,
    and workflows repeat their expressions."""
    if not source.strip():
        return "empty expression"
    tokens = list(_code(source, 0))
    refused = [f"${t.text}" for t in tokens if t.kind == "var" and t.text in REFUSED_VARIABLES]
    if refused:
        return _refusal(list(dict.fromkeys(refused)))
    if any(t.kind == "stray" for t in tokens):
        return "jq: syntax error: a `)` closes no `(`"
    try:
        jq.compile(sandboxed(source, _detect, (*VARIABLES, *sorted(names))))
    except ValueError as exc:
        return _describe_jq_error(str(exc), source, names)
    return None


def _describe_jq_error(text: str, source: str, names: frozenset[str]) -> str:
    first = text.splitlines()[0] if text else "invalid jq program"
    first = first.removeprefix("jq: error: ")
    if match := _REFUSED_USE.match(first) or _MODULES.match(first):
        return _refusal([match.group(1)])
    if match := re.match(r"\$(\S+) is not defined", first):
        known = ", ".join("$" + name for name in (*VARIABLES, *sorted(names)))
        return f"unknown variable ${match.group(1)} (available: {known})"
    location = _LOCATION.search(first)
    if location is None:
        return f"jq: {first}"
    message = first[: location.start()]
    line = int(location.group(1)) - 1  # the wrapper's first line precedes the program
    if line > source.count("\n") + 1:
        return f"jq: {message.partition(', unexpected')[0]}: the expression ends too early"
    column = f", column {location.group(2)}" if location.group(2) else ""
    return f"jq: {message} (line {line}{column})"


def check_expression(
    source: str, pointer: str, names: frozenset[str] = frozenset()
) -> Diagnostic | None:
    """Creation-time check of one jq program: sandbox refusals, then syntax and variables."""
    error = compile_error(source, names)
    return None if error is None else Diagnostic(error, pointer)
