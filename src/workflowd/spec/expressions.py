"""Runtime expressions: detection, creation-time checks, and the bounded evaluator.

Semantics (strict mode, as the DSL's default):
- a string that is wholly `${ … }` is a jq program; its value keeps its JSON type;
- any other string is literal; objects and arrays are templates walked recursively;
- `input.from`, `output.as` and `export.as` also accept a bare jq string (`evaluate_field`);
- a program yielding no value gives null; yielding more than one value is an error (taking the
  first would silently hide a mistake such as `.[]` where `.[0]` was meant).

Evaluation happens in worker processes (`jqworkers`), bounded in wall time, memory and output
size; values without any expression never reach a worker, and a worker receives only the named
arguments its programs use. The same workers check run inputs
against a workflow's `input.schema` (`check_schema`): a schema's `pattern` runs Python's
backtracking `re`, which only a process boundary can interrupt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from workflowd.domain.diagnostics import pointer_join
from workflowd.domain.json import Json
from workflowd.spec.jqsyntax import (
    REFUSED_VARIABLES,
    VARIABLES,
    ExpressionError,
    check_expression,
    compile_error,
    expression_source,
    is_expression,
    used_variables,
)
from workflowd.spec.jqworkers import EvaluationLimitError, PoolLimits, WorkerPool

__all__ = [
    "VARIABLES",
    "EvaluationLimitError",
    "Evaluator",
    "ExpressionError",
    "SchemaResult",
    "SchemaUnusableError",
    "check_expression",
    "expression_source",
    "find_expressions",
    "is_expression",
]

_Path = tuple[str | int, ...]
_SCHEMA_CHECK = "validating the input against the workflow's input.schema"


@dataclass(frozen=True, slots=True)
class SchemaResult:
    """The best-matching error of an instance against a schema: `message` is None when the
    instance is valid; `pointer` is the JSON pointer of the offending value ("" for the whole)."""

    message: str | None = None
    pointer: str = ""


class SchemaUnusableError(Exception):
    """The schema itself cannot be applied: a `$ref` that resolves nowhere in the document, a
    pattern Python cannot compile, a reference cycle …"""


def find_expressions(value: Json, path: _Path = ()) -> list[tuple[_Path, str]]:
    """Every `${ … }` leaf of a template, with its path and jq source."""
    if isinstance(value, str):
        return [(path, expression_source(value))] if is_expression(value) else []
    if isinstance(value, dict):
        return [
            found for key, item in value.items() for found in find_expressions(item, (*path, key))
        ]
    if isinstance(value, list):
        return [
            found for i, item in enumerate(value) for found in find_expressions(item, (*path, i))
        ]
    return []


def _substitute(value: Json, results: Mapping[_Path, Json], path: _Path = ()) -> Json:
    if path in results:
        return results[path]
    if isinstance(value, dict):
        return {key: _substitute(item, results, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, results, (*path, i)) for i, item in enumerate(value)]
    return value


class Evaluator:
    """Evaluates expressions against a subject (`.`) and the named arguments of `VARIABLES`.

    Starts its worker processes lazily; `aclose()` (or `async with`) stops them."""

    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        max_output_bytes: int = 1024 * 1024,
        max_memory_bytes: int = 512 * 1024 * 1024,
        workers: int = 2,
    ) -> None:
        limits = PoolLimits(timeout_s, max_output_bytes, max_memory_bytes, workers)
        self._pool = WorkerPool(limits)

    async def evaluate(self, expr: Json, subject: Json, variables: Mapping[str, Json]) -> Json:
        """`expr` as written: `${ … }` strings are evaluated, other strings are literal, objects
        and arrays are walked. `expr` is never modified; when it holds no expression it is
        returned as is, without touching a worker. `variables` are named without the `$`."""
        found = find_expressions(expr)
        if not found:
            return expr
        results = await self._run(found, subject, variables)
        return _substitute(expr, results)

    async def evaluate_field(
        self, value: Json, subject: Json, variables: Mapping[str, Json]
    ) -> Json:
        """For `input.from`, `output.as`, `export.as`: a string is jq with or without `${ }`;
        an object or array is a template."""
        if isinstance(value, str):
            results = await self._run([((), expression_source(value))], subject, variables)
            return results[()]
        return await self.evaluate(value, subject, variables)

    async def _run(
        self, found: list[tuple[_Path, str]], subject: Json, variables: Mapping[str, Json]
    ) -> dict[_Path, Json]:
        # The variables a scope adds (a loop's item, a caught error) besides the standard ones.
        scope = frozenset(name.removeprefix("$") for name in variables).difference(VARIABLES)
        for path, source in found:
            # Checked again before evaluation for the friendlier messages; the worker's
            # sandbox does not depend on it.
            error = compile_error(source, scope)
            if error is not None:
                raise ExpressionError(_where(path) + error)
        sources = [source for _, source in found]
        names, data = _bindings(sources, subject, variables)
        reply = await self._pool.run(sources, names, data)
        if "ok" in reply:
            return {path: value for (path, _), value in zip(found, reply["ok"], strict=True)}
        raise ExpressionError(_failure(reply, found))

    async def check_schema(self, schema: Json, instance: Json) -> SchemaResult:
        """Validate `instance` against the JSON Schema 2020-12 `schema` in a worker, where a
        `$ref` resolves only inside `schema`. Raises EvaluationLimitError when the check overruns
        the evaluator's time or memory bound, SchemaUnusableError when `schema` cannot be
        applied."""
        reply = await self._pool.check_schema(schema, instance, _SCHEMA_CHECK)
        if reply.get("stage") == "limit":
            raise EvaluationLimitError(f"{_SCHEMA_CHECK} exceeded the memory limit")
        if "error" in reply:
            raise SchemaUnusableError(str(reply["error"]))
        found = reply["ok"]
        if found is None:
            return SchemaResult()
        return SchemaResult(str(found["message"]), str(found["pointer"]))

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> Evaluator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _bindings(
    sources: list[str], subject: Json, variables: Mapping[str, Json]
) -> tuple[list[str], list[Json]]:
    """The named arguments the programs use, and the data to send: the subject, then their
    values (null for one the caller did not give). A value no program reads is never encoded
    nor sent: a run's large input costs nothing to expressions that do not read it. Besides the
    standard variables, a scope's own (a loop's item, a caught error) are bound by their names,
    which the definition's checks made plain identifiers."""
    values = {name.removeprefix("$"): value for name, value in variables.items()}
    used = frozenset[str]().union(*(used_variables(source) for source in sources))
    names = sorted(used.difference(REFUSED_VARIABLES))
    return names, [subject, *(values.get(name) for name in names)]


def _where(path: _Path) -> str:
    return f"at {pointer_join('', *path)}: " if path else ""


def _failure(reply: Mapping[str, Any], found: list[tuple[_Path, str]]) -> str:
    index = reply.get("index", -1)
    where = _where(found[index][0]) if 0 <= index < len(found) else ""
    return where + str(reply.get("error", "expression failed"))
