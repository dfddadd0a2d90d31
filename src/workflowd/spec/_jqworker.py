"""The expression worker: a child process that evaluates jq programs, one request per line.

Run as `python -I _jqworker.py <max_memory_bytes>` by `jqworkers.WorkerPool`, never imported by the
daemon. It imports only the standard library and jq, so it starts fast. jq cannot be interrupted
in-process, so the parent bounds wall time by killing this process; here we bound memory with
RLIMIT_AS and, as a backstop should the parent vanish mid-evaluation, CPU time with RLIMIT_CPU.

Request:  {"programs": [jq source, …], "data": [subject, $context, $input, $workflow, $task,
           $runtime, $output], "max_output": bytes, "cpu_s": seconds}
Reply:    {"ok": [value, …]} or {"error": message, "stage": compile|run|limit, "index": i,
           "fatal": bool}
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

import jq

# Named arguments are bound by destructuring one input array, so a program compiles once and
# is reused for every evaluation (jq.compile's `args` would fix the values at compile time).
_WRAPPER = (
    ". as [$__subject, $context, $input, $workflow, $task, $runtime, $output]"
    " | $__subject | (\n{}\n)"
)
_CACHE_SIZE = 512
_NOTHING = object()


class _Refused(Exception):
    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


def _compiled(cache: dict[str, Any], source: str) -> Any:
    program = cache.get(source)
    if program is None:
        try:
            program = jq.compile(_WRAPPER.format(source))
        except ValueError as exc:
            raise _Refused(str(exc), "compile") from exc
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[source] = program
    return program


def _evaluate(cache: dict[str, Any], source: str, data: list[Any]) -> Any:
    """The program's single value: none is null, a second one is an error. Only two values are
    ever pulled, so a generator such as `range(1e12)` stops at once."""
    values = iter(_compiled(cache, source).input_value(data))
    try:
        first = next(values, None)
        if next(values, _NOTHING) is not _NOTHING:
            raise _Refused("expression yielded more than one value", "run")
    except ValueError as exc:
        raise _Refused(str(exc), "run") from exc
    return first


def _serve(request: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    budget = int(usage.ru_utime + usage.ru_stime) + int(request["cpu_s"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (budget, hard))
    results: list[Any] = []
    size = 0
    for index, source in enumerate(request["programs"]):
        try:
            value = _evaluate(cache, source, request["data"])
        except _Refused as exc:
            return {"error": str(exc), "stage": exc.stage, "index": index, "fatal": False}
        size += len(json.dumps(value))
        if size > request["max_output"]:
            message = f"expression output exceeds {request['max_output']} bytes"
            return {"error": message, "stage": "limit", "index": index, "fatal": False}
        results.append(value)
    return {"ok": results}


def main() -> None:
    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cache: dict[str, Any] = {}
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
