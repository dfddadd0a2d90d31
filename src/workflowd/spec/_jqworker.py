"""The expression worker: a child process that evaluates jq programs and checks JSON Schemas, one
request per line; and `sandboxed`, the program every jq expression is compiled as.

Run as `python -I _jqworker.py <max_memory_bytes>` by `jqworkers.WorkerPool`, with an empty
environment. The daemon imports this module only for `sandboxed` and its constants; it imports
nothing beyond the standard library and jq, so it starts fast (jsonschema is imported when a
`prepare` request announces schema requests). Neither jq nor `re` can be interrupted
in-process, so the parent bounds wall time by killing this process; here we bound memory with
RLIMIT_AS and, as a backstop should the parent vanish mid-evaluation, CPU time with RLIMIT_CPU.

Requests: {"programs": [jq source, …], "names": [variable name, …], "data": [subject, the value
          of each name in order], "max_output": bytes, "cpu_s": seconds}
          {"schema": JSON Schema, "instance": value, "cpu_s": seconds}
          {"prepare": "schema", "cpu_s": seconds}
Replies:  {"ok": [value, …]} for programs; {"ok": null | {"message", "pointer"}} for a schema;
          {"ok": null} for prepare; or {"error": message, "stage": compile|run|limit|schema,
          "index": i, "fatal": bool}
"""

from __future__ import annotations

import importlib
import json
import re
import resource
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jq

VARIABLES: tuple[str, ...] = ("context", "input", "workflow", "task", "runtime", "output")
"""The named arguments every expression may use, without the `$`."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = frozenset({"ENV", "__loc__", "__subject"})

SANDBOXED: tuple[tuple[str, int], ...] = (
    ("env", 0),
    ("input", 0),
    ("inputs", 0),
    ("debug", 0),
    ("debug", 1),
    ("stderr", 0),
    ("input_filename", 0),
    ("input_line_number", 0),
    ("halt", 0),
    ("halt_error", 0),
    ("halt_error", 1),
    ("get_search_list", 0),
    ("get_prog_origin", 0),
    ("get_jq_origin", 0),
    ("modulemeta", 0),
)
"""Builtins that reach the environment, files, stdin/stderr or the process, at every arity jq
defines them (a test compares this table with jq's own `builtins`)."""

REFUSAL = (
    "expressions may not read the environment, files or standard input, write to stderr, "
    "load modules or stop the process"
)
_CACHE_SIZE = 512
_MAX_MESSAGE = 1000
_NOTHING = object()
_Cache = dict[tuple[str, tuple[str, ...]], Any]
_TOO_DEEP = "expression output is nested too deeply to be stored"


def _refuse_at_run_time(name: str) -> str:
    """A definition body that fails the evaluation with a clear message."""
    return f"error({json.dumps(f'`{name}` is not available: {REFUSAL}')})"


def sandboxed(
    source: str,
    body: Callable[[str], str] = _refuse_at_run_time,
    names: Sequence[str] = VARIABLES,
) -> str:
    """The complete program for the jq expression `source`, with the named arguments `names`.

    Every builtin of `SANDBOXED` is shadowed by a definition whose body is `body(name)`, and
    `$ENV` is bound to `{}`: jq resolves names lexically, so no spelling inside `source` reaches
    the originals. `import`/`include` are legal only at the start of a program, which the
    definitions occupy. The named arguments are bound by destructuring one input array, so a
    program compiles once and is reused for every evaluation (jq.compile's `args` would fix the
    values at compile time); the evaluator binds only those the program uses. `source` starts
    on line 2, column 1, so jq's columns are the user's; it is closed on a line of its own, so a
    trailing comment cannot swallow the `)`.
    """
    definitions = "".join(f"def {name}{'(f)' * arity}: {body(name)}; " for name, arity in SANDBOXED)
    bound = "".join(f", ${name}" for name in names)
    return f"{definitions}{{}} as $ENV | . as [$__subject{bound}] | $__subject | (\n{source}\n)"


class _Refused(Exception):
    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


def _compiled(cache: _Cache, source: str, names: list[Any]) -> Any:
    key = (source, tuple(names))
    program = cache.get(key)
    if program is None:
        # Spliced into the program's text: only plain names, and never the prelude's own.
        if not all(isinstance(n, str) and _NAME.fullmatch(n) and n not in _RESERVED for n in names):
            raise _Refused("invalid variable names", "compile")
        try:
            program = jq.compile(sandboxed(source, names=key[1]))
        except ValueError as exc:
            raise _Refused(str(exc), "compile") from exc
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = program
    return program


def _evaluate(cache: _Cache, source: str, names: list[Any], data: list[Any]) -> Any:
    """The program's single value: none is null, a second one is an error. Only two values are
    ever pulled, so a generator such as `range(1e12)` stops at once."""
    values = iter(_compiled(cache, source, names).input_value(data))
    try:
        first = next(values, None)
        if next(values, _NOTHING) is not _NOTHING:
            raise _Refused("expression yielded more than one value", "run")
    except ValueError as exc:
        raise _Refused(str(exc), "run") from exc
    except RecursionError as exc:
        raise _Refused(_TOO_DEEP, "limit") from exc
    return first


def _programs(request: dict[str, Any], cache: _Cache) -> dict[str, Any]:
    results: list[Any] = []
    size = 0
    for index, source in enumerate(request["programs"]):
        try:
            value = _evaluate(cache, source, request["names"], request["data"])
            size += len(_dumped(value))
        except _Refused as exc:
            return {"error": str(exc), "stage": exc.stage, "index": index, "fatal": False}
        if size > request["max_output"]:
            message = f"expression output exceeds {request['max_output']} bytes"
            return {"error": message, "stage": "limit", "index": index, "fatal": False}
        results.append(value)
    return {"ok": results}


def _dumped(value: Any) -> str:
    try:
        return json.dumps(value)
    except RecursionError as exc:
        raise _Refused(_TOO_DEEP, "limit") from exc


def _pointer(path: Iterable[str | int]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _schema(schema: Any, instance: Any) -> dict[str, Any]:
    """The best-matching error of `instance`. The registry holds only `schema` (and the
    metaschemas jsonschema bundles): a `Registry()` refuses to retrieve anything, whereas
    jsonschema's default one fetches unknown `$ref`s over HTTP."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from referencing import Registry

    try:
        validator = Draft202012Validator(schema, registry=Registry())
        error = best_match(validator.iter_errors(instance))
    except MemoryError:
        raise
    except Exception as exc:  # whatever fails here is the schema's fault, not the input's
        message = f"{type(exc).__name__}: {str(exc)[:_MAX_MESSAGE]}"
        return {"error": message, "stage": "schema", "index": -1, "fatal": False}
    if error is None:
        return {"ok": None}
    return {
        "ok": {"message": error.message[:_MAX_MESSAGE], "pointer": _pointer(error.absolute_path)}
    }


def _serve(request: dict[str, Any], cache: _Cache) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    budget = int(usage.ru_utime + usage.ru_stime) + int(request["cpu_s"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (budget, hard))
    if "prepare" in request:
        importlib.import_module("jsonschema")
        return {"ok": None}
    if "schema" in request:
        return _schema(request["schema"], request["instance"])
    return _programs(request, cache)


def main() -> None:
    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cache: _Cache = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            reply = _serve(json.loads(line), cache)
        except MemoryError:
            reply = {
                "error": "expression exceeded the memory limit",
                "stage": "limit",
                "index": -1,
                "fatal": True,
            }
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if reply.get("fatal"):
            return


if __name__ == "__main__":
    main()
