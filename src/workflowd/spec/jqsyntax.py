"""Runtime expressions at creation time: `${ … }` detection, the sandbox check, jq compilation.

The sandbox check tokenizes the jq source instead of searching it for substrings, so a field
(`.environment`, `.input`), an object key (`{input: 1}`) or a string literal (`"env"`) stays
allowed, while code hidden in a string interpolation (`"\\(env)"`) is still seen.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Generator
from dataclasses import dataclass

import jq

from workflowd.domain.diagnostics import Diagnostic

VARIABLES: tuple[str, ...] = ("context", "input", "workflow", "task", "runtime", "output")
"""The named arguments every expression may use, without the `$`."""

SANDBOXED_FUNCTIONS = frozenset(
    {
        "env",
        "input",
        "inputs",
        "debug",
        "stderr",
        "input_filename",
        "input_line_number",
        "halt",
        "halt_error",
        "get_search_list",
        "get_prog_origin",
        "get_jq_origin",
        "modulemeta",
        "import",
        "include",
    }
)
"""Builtins that reach the environment, files, stdin/stderr or the process itself."""

SANDBOXED_VARIABLES = frozenset({"ENV", "__loc__"})

_EXPRESSION = re.compile(r"^\s*\$\{(.*)\}\s*$", re.DOTALL)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")


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
    kind: str  # "ident", "var", "field", "punct"
    text: str


def _skip_string(source: str, i: int) -> Generator[_Token | int, None, None]:
    """Yield the tokens of the code inside `\\( … )` interpolations, then the index after the
    closing quote (or the end of the source when the string is unterminated)."""
    i += 1
    while i < len(source):
        char = source[i]
        if char == '"':
            yield i + 1
            return
        if char == "\\" and source.startswith("\\(", i):
            end = yield from _code(source, i + 2, interpolation=True)
            i = end
            continue
        i += 2 if char == "\\" else 1
    yield len(source)


def _code(source: str, i: int, interpolation: bool = False) -> Generator[_Token, None, int]:
    """Tokenize jq code from `i`; in an interpolation, stop after the matching `)`.
    The generator's return value is the index where it stopped."""
    depth = 0
    while i < len(source):
        char = source[i]
        if char.isspace():
            i += 1
        elif char == "#":
            newline = source.find("\n", i)
            i = len(source) if newline < 0 else newline
        elif char == '"':
            for item in _skip_string(source, i):
                if isinstance(item, int):
                    i = item
                else:
                    yield item
        elif char in "$@." and (match := _IDENT.match(source, i + 1)):
            kind = {"$": "var", "@": "format", ".": "field"}[char]
            yield _Token(kind, match.group())
            i = match.end()
        elif match := _IDENT.match(source, i):
            yield _Token("ident", match.group())
            i = match.end()
        else:
            if char == "(":
                depth += 1
            elif char == ")":
                if interpolation and depth == 0:
                    return i + 1
                depth -= 1
            yield _Token("punct", char)
            i += 1
    return i


def _object_key(tokens: list[_Token], index: int) -> bool:
    """`{input: 1}`: an identifier written as an object key is a name, not a call."""
    before = tokens[index - 1].text if index > 0 else ""
    after = tokens[index + 1].text if index + 1 < len(tokens) else ""
    return before in ("{", ",") and after == ":"


def sandbox_violations(source: str) -> list[str]:
    """The refused builtins and variables the program uses, as written (`env`, `$ENV`)."""
    tokens = list(_code(source, 0))
    found: list[str] = []
    for index, token in enumerate(tokens):
        if token.kind == "var" and token.text in SANDBOXED_VARIABLES:
            found.append("$" + token.text)
        elif (
            token.kind == "ident"
            and token.text in SANDBOXED_FUNCTIONS
            and not _object_key(tokens, index)
        ):
            found.append(token.text)
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=4096)
def compile_error(source: str) -> str | None:
    """Why the program is refused (sandbox, syntax, unknown variable), or None. Cached: a jq
    compilation costs about 1.5 ms, and workflows repeat their expressions."""
    if not source.strip():
        return "empty expression"
    refused = sandbox_violations(source)
    if refused:
        names = ", ".join(f"`{name}`" for name in refused)
        return (
            f"expression uses {names}: expressions may not read the environment, files or "
            "standard input, write to stderr, load modules or stop the process"
        )
    try:
        jq.compile(source, args=dict.fromkeys(VARIABLES))
    except ValueError as exc:
        return _describe_jq_error(str(exc))
    return None


def _describe_jq_error(text: str) -> str:
    first = text.splitlines()[0] if text else "invalid jq program"
    first = first.removeprefix("jq: error: ").replace(" at <top-level>", "").rstrip(":")
    if match := re.match(r"\$(\S+) is not defined", first):
        known = ", ".join("$" + name for name in VARIABLES)
        return f"unknown variable ${match.group(1)} (available: {known})"
    return f"jq: {first}"


def check_expression(source: str, pointer: str) -> Diagnostic | None:
    """Creation-time check of one jq program: sandbox refusals, then syntax and variables."""
    error = compile_error(source)
    return None if error is None else Diagnostic(error, pointer)
