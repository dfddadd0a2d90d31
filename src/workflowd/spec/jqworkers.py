"""A small pool of long-lived sandboxed worker processes (see `_jqworker.py`): jq evaluations
and JSON Schema checks, bounded in wall time, memory and output.

Each slot owns at most one child. A request takes an idle slot (so concurrent requests wait
their turn instead of sharing a pipe; companies take turns, so one company's backlog of
evaluations delays another's by one turn, see `domain/fairness.py`), starts the child if
needed, and writes one line and reads one line under a wall-time bound. When the bound
expires, the caller is cancelled mid-exchange, or the child dies, the child is killed and the
slot restarts it lazily on its next use: a half-finished exchange must never be read by the
next request.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflowd.domain.fairness import FairSlots, acting_for
from workflowd.domain.json import Json
from workflowd.spec.jqsyntax import ExpressionError

_WORKER = str(Path(__file__).with_name("_jqworker.py"))
_LINE_OVERHEAD = 64 * 1024


class EvaluationLimitError(ExpressionError):
    """A request overran its wall time or memory, or crashed its worker."""


@dataclass
class _Slot:
    process: asyncio.subprocess.Process | None = None
    killed: asyncio.subprocess.Process | None = None  # killed, not yet reaped
    schema_ready: bool = False  # the process has imported jsonschema


@dataclass(frozen=True)
class PoolLimits:
    timeout_s: float = 1.0
    max_output_bytes: int = 1024 * 1024
    max_memory_bytes: int = 512 * 1024 * 1024
    workers: int = 2
    startup_timeout_s: float = 30.0


class WorkerPool:
    def __init__(self, limits: PoolLimits) -> None:
        self._limits = limits
        self._idle: list[_Slot] | None = None
        self._turns = FairSlots(limits.workers)
        self._closed = False

    def _slots(self) -> list[_Slot]:
        if self._idle is None:
            self._idle = [_Slot() for _ in range(self._limits.workers)]
        return self._idle

    async def run(self, programs: list[str], names: list[str], data: list[Json]) -> dict[str, Any]:
        """Evaluate `programs` in one exchange, with `data` the subject and then the values of
        the named arguments `names`; return the worker's reply."""
        request = {
            "programs": programs,
            "names": names,
            "data": data,
            "max_output": self._limits.max_output_bytes,
        }
        return await self._request(request, "expression evaluation")

    async def check_schema(self, schema: Json, instance: Json, what: str) -> dict[str, Any]:
        """Validate `instance` against `schema` in one exchange; return the worker's reply."""
        return await self._request({"schema": schema, "instance": instance}, what, schema=True)

    async def _request(
        self, request: dict[str, Any], what: str, schema: bool = False
    ) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("the expression evaluator is closed")
        line = _line({**request, "cpu_s": self._limits.timeout_s})
        idle = self._slots()
        async with self._turns.slot(acting_for.get()):
            slot = idle.pop()  # a turn always finds an idle slot: there are as many as turns
            try:
                process = await self._started(slot)
                if schema and not slot.schema_ready:
                    await self._prepare_schema(slot, process)
                return await self._exchange(slot, process, line, self._limits.timeout_s, what)
            finally:
                idle.append(slot)

    async def _prepare_schema(self, slot: _Slot, process: asyncio.subprocess.Process) -> None:
        """Import jsonschema in the worker under the startup bound: the import takes a good
        part of the request bound, and a slow start is the daemon's trouble, not the input's."""
        startup = self._limits.startup_timeout_s
        line = _line({"prepare": "schema", "cpu_s": startup})
        try:
            await self._exchange(slot, process, line, startup, "starting schema validation")
        except EvaluationLimitError as exc:
            raise ExpressionError(str(exc)) from exc
        slot.schema_ready = True

    async def _exchange(
        self,
        slot: _Slot,
        process: asyncio.subprocess.Process,
        line: bytes,
        timeout_s: float,
        what: str,
    ) -> dict[str, Any]:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                process.stdin.write(line)
                await process.stdin.drain()
                reply = await process.stdout.readline()
        except TimeoutError:
            self._kill(slot)
            raise EvaluationLimitError(f"{what} took longer than {timeout_s:g} s") from None
        except (ConnectionError, ValueError) as exc:  # dead pipe; over-long line
            self._kill(slot)
            raise ExpressionError(f"{what} failed: {exc}") from exc
        except BaseException:
            self._kill(slot)
            raise
        if not reply:
            self._kill(slot)
            raise EvaluationLimitError(
                f"{what} exceeded the memory limit "
                f"({self._limits.max_memory_bytes // (1024 * 1024)} MiB) or crashed"
            )
        answer: dict[str, Any] = json.loads(reply)
        if answer.get("fatal"):
            self._kill(slot)
        return answer

    async def _started(self, slot: _Slot) -> asyncio.subprocess.Process:
        await self._reap(slot)
        if slot.process is not None and slot.process.returncode is None:
            return slot.process
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            _WORKER,
            str(self._limits.max_memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={},  # nothing of the daemon's environment (tokens, paths) reaches a worker
            limit=self._limits.max_output_bytes + _LINE_OVERHEAD,
        )
        slot.process = process
        slot.schema_ready = False
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self._limits.startup_timeout_s):
                ready = await process.stdout.readline()
        except BaseException:
            self._kill(slot)
            raise
        if ready != b"ready\n":
            self._kill(slot)
            raise ExpressionError("the expression evaluator could not start")
        return process

    @staticmethod
    def _kill(slot: _Slot) -> None:
        """Kill now (synchronously, so it works while being cancelled); reap on next use."""
        process, slot.process = slot.process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        slot.killed = process

    @staticmethod
    async def _reap(slot: _Slot) -> None:
        if slot.killed is not None:
            await slot.killed.wait()
            slot.killed = None

    async def aclose(self) -> None:
        """Wait for evaluations in flight, then stop every child. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._idle is None:
            return
        for _ in range(self._limits.workers):
            await self._turns.acquire("")
        for slot in self._idle:
            await self._stop(slot)

    async def _stop(self, slot: _Slot) -> None:
        process = slot.process
        if process is not None and process.returncode is None and process.stdin is not None:
            process.stdin.close()  # the child exits when its input ends
            try:
                async with asyncio.timeout(self._limits.startup_timeout_s):
                    await process.wait()
            except TimeoutError:
                self._kill(slot)
        elif process is not None:
            self._kill(slot)
        slot.process = None
        await self._reap(slot)


def _line(request: dict[str, Any]) -> bytes:
    return (json.dumps(request) + "\n").encode()
