"""The operation catalog: what each `call` accepts, which job it becomes, what it outputs.

Parameters are checked twice: statically when the workflow is created (a value written as a
`${ … }` expression is only compiled then, since its type is unknown), and again by
`check_resolved` once the engine has evaluated the expressions, just before submitting the job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.jobs import DATASET_NAME
from workflowd.domain.json import Json
from workflowd.spec.jqsyntax import is_expression

EXECUTION_CLUSTERS = ("shared", "dedicated")
_COMMON = ("computePoolId", "executionCluster")
# One SQL token: whitespace, a comment, a string, a quoted name, a dollar-quoted string, a word,
# or any other single character. Unterminated comments and strings run to the end.
_SQL_TOKEN = re.compile(
    r"""(?P<skip>\s+|--[^\n]*|/\*[\s\S]*?(?:\*/|\Z))"""
    r"""|(?P<literal>'(?:[^']|'')*(?:'|\Z)|"(?:[^"]|"")*(?:"|\Z)|(\$\w*\$)[\s\S]*?(?:\3|\Z))"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)|(?P<char>[\s\S])"""
)
_DML = ("INSERT", "UPDATE", "DELETE")

Check = Callable[[Mapping[str, Json], str, bool], list[Diagnostic]]


def _sql_tokens(nql: str) -> list[str]:
    """Words (upper-cased), literals (as `'`) and single characters; no spaces or comments."""
    tokens = []
    for match in _SQL_TOKEN.finditer(nql):
        kind = match.lastgroup
        if kind == "word":
            tokens.append(match.group().upper())
        elif kind == "literal":
            tokens.append("'")
        elif kind == "char":
            tokens.append(match.group())
    return tokens


@dataclass(frozen=True, slots=True)
class _Statement:
    keyword: str  # the statement's first keyword after any WITH clause; "" when none
    after_with: bool
    words: tuple[str, ...]  # the tokens from `keyword` on

    def describe(self) -> str:
        found = self.keyword or "a statement without a recognisable keyword"
        return f"WITH … {found}" if self.after_with else found


def _statement(nql: str) -> _Statement:
    """What kind of statement `nql` is, skipping comments, leading `(` and a WITH clause."""
    tokens = _sql_tokens(nql)
    start = _skip_parentheses(tokens, 0)
    after_with = start < len(tokens) and tokens[start] == "WITH"
    if after_with:
        start = _after_ctes(tokens, start + 1)
    return _Statement(_word(tokens, start), after_with, tuple(tokens[start:]))


def _skip_parentheses(tokens: list[str], at: int) -> int:
    while at < len(tokens) and tokens[at] == "(":
        at += 1
    return at


def _word(tokens: list[str], at: int) -> str:
    token = tokens[at] if at < len(tokens) else ""
    return token if token[:1].isalpha() or token[:1] == "_" else ""


def _after_ctes(tokens: list[str], at: int) -> int:
    """The index of the main statement after `WITH [RECURSIVE] name [(cols)] AS [[NOT]
    MATERIALIZED] (body), …`: the first token after a top-level parenthesised group that is
    neither `,` nor `AS` (a column list is followed by AS, a body by `,` or the statement)."""
    depth, closed = 0, False
    for index in range(at, len(tokens)):
        token = tokens[index]
        if depth == 0 and closed and token not in (",", "AS"):
            return _skip_parentheses(tokens, index)
        if token == "(":
            depth += 1
        elif token == ")":
            depth = max(depth - 1, 0)
        closed = token == ")" and depth == 0
    return len(tokens)


def _static(value: Json, resolved: bool) -> bool:
    """Whether `value` can be type-checked now: always after resolution; before, unless it is
    an expression."""
    return resolved or not (isinstance(value, str) and is_expression(value))


def _check_value(name: str, value: Json) -> str | None:
    """The message for a wrongly typed parameter value, or None."""
    if name == "nql":
        ok = isinstance(value, str) and value.strip() != ""
        return None if ok else "nql must be a non-empty string"
    if name == "datasetName":
        ok = isinstance(value, str) and DATASET_NAME.match(value) is not None
        return (
            None
            if ok
            else (
                f"datasetName {value!r} must match ^[A-Za-z0-9_]{{1,256}}$ "
                "(letters, digits and underscores; no hyphens, spaces or quotes)"
            )
        )
    if name == "datasetId":
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return None if ok else f"datasetId must be a positive integer, not {value!r}"
    if name == "computePoolId":
        ok = isinstance(value, str) and value != ""
        return None if ok else "computePoolId must be a non-empty string"
    if name == "executionCluster":
        ok = value in EXECUTION_CLUSTERS
        return None if ok else f"executionCluster must be 'shared' or 'dedicated', not {value!r}"
    return None


def _check_common(
    operation: Operation, with_: Mapping[str, Json], pointer: str, resolved: bool
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for name, value in with_.items():
        where = pointer_join(pointer, name)
        if name not in operation.params:
            allowed = ", ".join(operation.params)
            out.append(
                Diagnostic(
                    f"unknown parameter {name!r} for {operation.name} (allowed: {allowed})", where
                )
            )
        elif _static(value, resolved) and (message := _check_value(name, value)):
            out.append(Diagnostic(message, where))
    return out


def _check_cmv(with_: Mapping[str, Json], pointer: str, resolved: bool) -> list[Diagnostic]:
    nql = with_.get("nql")
    if "nql" not in with_:
        return [Diagnostic("CreateMaterializedViewIfNotExists requires nql", pointer)]
    if not (_static(nql, resolved) and isinstance(nql, str) and nql.strip()):
        return []
    statement = _statement(nql)
    where = pointer_join(pointer, "nql")
    if statement.keyword == "SELECT":
        if "datasetName" not in with_:
            return [
                Diagnostic("nql is a SELECT, so datasetName (the view's name) is required", pointer)
            ]
        return []
    if _is_create_mv(statement):
        if "datasetName" in with_:
            return [
                Diagnostic(
                    "datasetName must not be given when nql is a CREATE MATERIALIZED VIEW "
                    "statement: the view's name is in the statement",
                    pointer_join(pointer, "datasetName"),
                )
            ]
        return []
    return [
        Diagnostic(
            "nql must be a SELECT (with datasetName) or a "
            f"CREATE [OR REPLACE] MATERIALIZED VIEW statement, not {statement.describe()}",
            where,
        )
    ]


def _is_create_mv(statement: _Statement) -> bool:
    """`CREATE [OR REPLACE] MATERIALIZED VIEW <something>`."""
    words = statement.words
    if statement.after_with or words[:1] != ("CREATE",):
        return False
    head = 3 if words[1:3] == ("OR", "REPLACE") else 1
    return words[head : head + 2] == ("MATERIALIZED", "VIEW") and len(words) > head + 2


def _check_refresh(with_: Mapping[str, Json], pointer: str, resolved: bool) -> list[Diagnostic]:
    given = [name for name in ("datasetName", "datasetId") if name in with_]
    if len(given) != 1:
        return [
            Diagnostic(
                "RefreshMaterializedView needs exactly one of datasetName or datasetId", pointer
            )
        ]
    return []


def _check_dml(with_: Mapping[str, Json], pointer: str, resolved: bool) -> list[Diagnostic]:
    nql = with_.get("nql")
    if "nql" not in with_:
        return [Diagnostic("ExecuteDml requires nql", pointer)]
    if not (_static(nql, resolved) and isinstance(nql, str) and nql.strip()):
        return []
    statement = _statement(nql)
    if statement.keyword in _DML:
        return []
    hint = (
        " (use CreateMaterializedViewIfNotExists to persist a SELECT)"
        if statement.keyword == "SELECT"
        else ""
    )
    return [
        Diagnostic(
            f"ExecuteDml runs one INSERT, UPDATE or DELETE (optionally after a WITH clause), "
            f"not {statement.describe()}{hint}",
            pointer_join(pointer, "nql"),
        )
    ]


def _pick(result: Mapping[str, Json], snake: str) -> Json:
    """A result field by its snake_case name, tolerating a camelCase one."""
    if snake in result:
        return result[snake]
    return result.get(_camel(snake))


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", camel).lower()


def _row_stats(result: Mapping[str, Json]) -> Json:
    """`{rowCount}` from a top-level `row_count` or a nested `row_stats`; null when neither is
    known (as Narrative's data planes that keep no counts answer)."""
    stats = _pick(result, "row_stats")
    count = _pick(stats, "row_count") if isinstance(stats, dict) else _pick(result, "row_count")
    return None if count is None and not isinstance(stats, dict) else {"rowCount": count}


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    job_type: str
    params: tuple[str, ...]
    outputs: tuple[str, ...]  # snake_case result fields, output as camelCase
    _check: Check

    def check_params(self, with_: Mapping[str, Json], pointer: str) -> list[Diagnostic]:
        """Creation-time check; values written as expressions are left to `check_resolved`."""
        return _check_common(self, with_, pointer, False) + self._check(with_, pointer, False)

    def check_resolved(self, resolved_with: Mapping[str, Json], pointer: str) -> list[Diagnostic]:
        """Run-time check of the parameters once every expression has been evaluated."""
        common = _check_common(self, resolved_with, pointer, True)
        return common + self._check(resolved_with, pointer, True)

    def to_job_input(self, resolved_with: Mapping[str, Json]) -> dict[str, Json]:
        """The jobs API input: the same parameters in snake_case."""
        return {_snake(name): value for name, value in resolved_with.items()}

    def output_from_result(self, result: Mapping[str, Json]) -> dict[str, Json]:
        """The task output (camelCase) from the job's result (snake_case); missing → null."""
        out: dict[str, Json] = {_camel(field): _pick(result, field) for field in self.outputs}
        if "row_stats" in self.outputs:
            out["rowStats"] = _row_stats(result)
        return out


_MV_OUTPUTS = ("dataset_id", "dataset_name", "snapshot_id", "recalculation_id", "row_stats")

OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "CreateMaterializedViewIfNotExists",
            "materialize-view",
            ("nql", "datasetName", *_COMMON),
            ("dataset_id", "dataset_name", "created", *_MV_OUTPUTS[2:]),
            _check_cmv,
        ),
        Operation(
            "RefreshMaterializedView",
            "refresh-materialized-view",
            ("datasetName", "datasetId", *_COMMON),
            _MV_OUTPUTS,
            _check_refresh,
        ),
        Operation(
            "ExecuteDml",
            "execute-dml",
            ("nql", *_COMMON),
            ("dataset_id", "dataset_name", "statement_type", "rows_affected"),
            _check_dml,
        ),
    )
}
