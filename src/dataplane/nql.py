"""Reading NQL with DuckDB's own tokenizer and statement parser.

DuckDB decides what a statement is (`extract_statements`); the tokenizer lets us find names
without being fooled by string literals or comments. Three things are read here: the
`CREATE [OR REPLACE] MATERIALIZED VIEW` form (which DuckDB does not know), the target table of
a DML statement, and `company_data."<numeric id>"` references, which are rewritten to the
dataset's name before DuckDB sees the query (datasets are real tables named by their name).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from dataplane.errors import JobFailure, quote
from dataplane.model import DATASET_NAME_RE, dataset_name_problem

SCHEMA = "company_data"
_DML_TYPES = {"INSERT", "UPDATE", "DELETE"}
_TWO_WORD_KINDS = {"FORCE", "UPDATE"}  # FORCE INSTALL, UPDATE EXTENSIONS
_NUMERIC_ID = re.compile(r'^"\d+"$')
_SUPPORTED_OPTIONS = {
    "DISPLAY_NAME",
    "DESCRIPTION",
    "EXPIRE",
    "TAGS",
    "WRITE_MODE",
    "EXTENDED_STATS",
    "PARTITIONED_BY",
}
_UNSUPPORTED_OPTIONS = {
    "REFRESH_SCHEDULE": "schedule refreshes with a workflow's schedule.cron instead",
}


@dataclass(frozen=True)
class Token:
    text: str
    kind: str
    start: int
    end: int

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind in ("keyword", "identifier") else ""

    @property
    def is_name(self) -> bool:
        return self.kind in ("keyword", "identifier")


@dataclass(frozen=True)
class MaterializedViewSpec:
    name: str
    select: str
    replace: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_ref(name: str) -> str:
    return f"{SCHEMA}.{quote_ident(name)}"


# A job's text is read by several checks (its quota, its target, the reference rule): each
# reads the same tokens and statement, parsed once. Pure functions of the text, so cached.
_PARSED = 256


@functools.lru_cache(maxsize=_PARSED)
def tokenize(sql: str) -> tuple[Token, ...]:
    raw = duckdb.tokenize(sql)
    tokens = []
    for index, (start, kind) in enumerate(raw):
        end = raw[index + 1][0] if index + 1 < len(raw) else len(sql)
        text = sql[start:end].rstrip()
        tokens.append(Token(text, kind.name, start, start + len(text)))
    return tuple(t for t in tokens if t.kind != "comment")


@functools.lru_cache(maxsize=_PARSED)
def statement_kind(sql: str) -> str:
    """What the only statement in `sql` is, as its author would name it (e.g. "SELECT").

    DuckDB's parser decides SELECT, INSERT, UPDATE and DELETE (which may start with WITH).
    Any other kind is named by its leading keyword: DuckDB's own type names mislead here
    (INSTALL is a LOAD, PRAGMA a SET, CHECKPOINT a CALL), and some have no Python name."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise JobFailure(str(exc)) from exc
    if len(statements) != 1:
        raise JobFailure(f"expected exactly one statement, found {len(statements)}")
    try:
        kind = str(statements[0].type.name)
    except ValueError:  # a statement type newer than DuckDB's Python enum
        kind = "an unknown statement"
    if kind in _DML_TYPES | {"SELECT"}:
        return kind
    words = [token.word for token in tokenize(sql)[:2]]
    if not words or not words[0] or words[0] == "WITH":
        return kind
    if words[0] in _TWO_WORD_KINDS and len(words) == 2 and words[1]:
        return " ".join(words)
    return words[0]


def require_select(sql: str) -> None:
    # Checked before DuckDB parses the text, which would only report a syntax error at MERGE.
    if any(token.word == "MERGE" for token in _top_level(tokenize(sql))):
        raise JobFailure("MERGE ON is not supported by the local data plane")
    kind = statement_kind(sql)
    if kind != "SELECT":
        raise JobFailure(f"a materialized view is defined by a SELECT, not {kind}")


def unquote(token: Token) -> str:
    if token.text.startswith('"') and token.text.endswith('"') and len(token.text) >= 2:
        return token.text[1:-1].replace('""', '"')
    return token.text


def resolve_numeric_ids(sql: str, name_of: Callable[[int], str]) -> str:
    """Rewrite every `company_data."<id>"` to `company_data."<name>"`."""
    tokens = tokenize(sql)
    pieces, cursor = [], 0
    for first, dot, ref in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if first.word == SCHEMA.upper() and dot.text == "." and _NUMERIC_ID.match(ref.text):
            pieces += [sql[cursor : ref.start], quote_ident(name_of(int(ref.text[1:-1])))]
            cursor = ref.end
    return "".join(pieces) + sql[cursor:]


def dml_target(sql: str) -> tuple[str, str]:
    """(statement type, target dataset name) of a single INSERT/UPDATE/DELETE."""
    kind = statement_kind(sql)
    if kind not in _DML_TYPES:
        raise JobFailure(f"execute-dml accepts one INSERT, UPDATE or DELETE, not {kind}")
    tokens = _top_level(tokenize(sql))
    if any(t.word == "RETURNING" for t in tokens):
        raise JobFailure("RETURNING is not supported: the job reports rows_affected instead")
    at = next(i for i, t in enumerate(tokens) if t.word == kind)
    rest = tokens[at + 1 :]
    if kind == "INSERT":
        rest = rest[next((i for i, t in enumerate(rest) if t.word == "INTO"), -1) + 1 :]
    elif kind == "DELETE" and rest and rest[0].word == "FROM":
        rest = rest[1:]
    name = _qualified_name(rest)
    if name is None:
        raise JobFailure(f"{kind} must target a dataset as {SCHEMA}.<name>")
    return kind, name


def parse_materialized_view(sql: str) -> MaterializedViewSpec | None:
    """The parts of a `CREATE [OR REPLACE] MATERIALIZED VIEW`, or None for any other text."""
    tokens = tokenize(sql)
    words = [t.word for t in tokens[:5]]
    replace = words[:3] == ["CREATE", "OR", "REPLACE"]
    head = 3 if replace else 1
    if words[:1] != ["CREATE"] or words[head : head + 2] != ["MATERIALIZED", "VIEW"]:
        return None
    rest = tokens[head + 2 :]
    if [t.word for t in rest[:3]] == ["IF", "NOT", "EXISTS"]:
        rest = rest[3:]
    name_tokens = rest[:3] if len(rest) > 2 and rest[1].text == "." else rest[:1]
    name = _view_name(name_tokens)
    as_at = next((i for i, t in enumerate(rest) if t.word == "AS"), None)
    if as_at is None:
        raise JobFailure("CREATE MATERIALIZED VIEW needs AS <select>")
    options = _parse_options(rest[len(name_tokens) : as_at])
    select = sql[rest[as_at].end :].strip()
    require_select(select)
    return MaterializedViewSpec(name=name, select=select, replace=replace, options=options)


def _view_name(tokens: Sequence[Token]) -> str:
    if len(tokens) == 3 and unquote(tokens[0]).lower() != SCHEMA:
        raise JobFailure(f"a materialized view lives in {SCHEMA}, not {quote(unquote(tokens[0]))}")
    if not tokens or not tokens[-1].is_name:
        raise JobFailure(f"the view name must match {DATASET_NAME_RE.pattern}")
    problem = dataset_name_problem(unquote(tokens[-1]), "the view name")
    if problem is not None:
        raise JobFailure(problem)
    return unquote(tokens[-1])


def _parse_options(tokens: Sequence[Token]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        key = tokens[index].word
        if key in _UNSUPPORTED_OPTIONS:
            raise JobFailure(
                f"{key} is not supported by the local data plane: {_UNSUPPORTED_OPTIONS[key]}"
            )
        if key not in _SUPPORTED_OPTIONS:
            raise JobFailure(f"unknown materialized view option {quote(tokens[index].text)}")
        index += 1
        if index < len(tokens) and tokens[index].text == "=":
            index += 1
        end = next(
            (i for i in range(index, len(tokens)) if tokens[i].word in _all_options()),
            len(tokens),
        )
        options[key.lower()] = _option_value(key, tokens[index:end])
        index = end
    if options.get("write_mode", "overwrite") not in ("overwrite", "append"):
        raise JobFailure("WRITE_MODE must be 'overwrite' or 'append'")
    return options


def _all_options() -> set[str]:
    return _SUPPORTED_OPTIONS | set(_UNSUPPORTED_OPTIONS)


def _option_value(key: str, tokens: Sequence[Token]) -> Any:
    values = [_literal(t) for t in tokens if t.text not in ("(", ")", ",")]
    if not values:
        raise JobFailure(f"materialized view option {key} needs a value")
    if key == "PARTITIONED_BY":
        return " ".join(values)
    if key == "TAGS":
        return values
    if len(values) != 1:
        raise JobFailure(f"materialized view option {key} takes one value")
    return values[0].lower() if key in ("WRITE_MODE", "EXTENDED_STATS") else values[0]


def _literal(token: Token) -> str:
    if token.kind == "string_const" and token.text.startswith("'"):
        return token.text[1:-1].replace("''", "'")
    return unquote(token)


def _top_level(tokens: Sequence[Token]) -> list[Token]:
    depth, outside = 0, []
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0:
            outside.append(token)
    return outside


def _qualified_name(tokens: Sequence[Token]) -> str | None:
    if len(tokens) < 3 or tokens[1].text != "." or not tokens[2].is_name:
        return None
    if unquote(tokens[0]).lower() != SCHEMA:
        return None
    return unquote(tokens[2])
