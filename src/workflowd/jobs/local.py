"""The local data plane as a supervised child process (`python -m dataplane serve`).

It runs in its own process so that its DuckDB work and its HTTP handling never share the
daemon's event loop or GIL. The daemon starts it before its API serves and stops it after
its runs have drained. If it dies, or stops answering its health check, it is started again
on the same port, with backoff: meanwhile the jobs client retries, its event stream resumes
from the last event id, and jobs submitted under idempotency keys are never duplicated.

The child reads its stdin until end of file: the daemon never writes to it, so the pipe ends
only when the daemon does, even by kill -9, and the child then stops on its own instead of
holding the port and the DuckDB files against the next daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from workflowd.domain.errors import Unavailable

log = logging.getLogger("workflowd.dataplane")

_READY = re.compile(r"dataplane listening on (http://\S+)")
# The child logs `LEVEL logger: message`; its lines are logged again at their own level.
_LEVEL = re.compile(r"^(?:\S+ \S+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")
_LEVELS = logging.getLevelNamesMapping()
_MAX_LINE = 64 * 1024
START_TIMEOUT_S = 60.0
HEALTH_INTERVAL_S = 5.0
HEALTH_TIMEOUT_S = 5.0
HEALTH_FAILURES = 3  # consecutive failed checks before a live but silent child is replaced
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 60.0  # a child that served this long resets the backoff
STOP_TIMEOUT_S = 30.0
_KEPT_LINES = 5
_CONFIG_REFUSED = 2  # `python -m dataplane serve`'s exit status for a configuration it refuses
_KEPT_CHARS = 500


@dataclass(frozen=True, slots=True)
class LocalPlaneConfig:
    data_dir: Path
    host: str
    port: int
    workers: int
    job_timeout_s: float
    memory_limit: str
    tokens_file: Path | None = None


class LocalDataPlane:
    def __init__(self, config: LocalPlaneConfig) -> None:
        self._config = config
        self._port = config.port
        self._proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        # The child's last lines: why it stopped, when it stops before serving.
        self._said: collections.deque[str] = collections.deque(maxlen=_KEPT_LINES)
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.url = ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> str:
        """Start the child and wait until it serves; its URL (the bound port, when 0 was
        asked for, is kept for every restart so the URL stays the same). `Unavailable`, saying
        why the last attempt failed, when it does not serve within `START_TIMEOUT_S`."""
        failure = "it never said it was serving"
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                for delay in _backoff():
                    try:
                        await self._spawn()
                        break
                    except _ChildRefused as exc:
                        raise Unavailable(f"the local data plane refused to start: {exc}") from None
                    except _ChildFailed as exc:
                        failure = str(exc)
                        log.warning(
                            "dataplane did not start (%s); trying again in %.1f s", exc, delay
                        )
                        await asyncio.sleep(delay)  # ok: backoff before the next attempt
        except TimeoutError:
            await self._reap()
            raise Unavailable(
                f"the local data plane did not start within {START_TIMEOUT_S:g} s: {failure}"
            ) from None
        self._supervisor = asyncio.create_task(self._supervise(), name="dataplane-supervisor")
        return self.url

    def reload(self) -> None:
        """Ask the child to read its tokens file again."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGHUP)

    async def aclose(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await self._stop_child()

    def _argv(self) -> list[str]:
        c = self._config
        argv = [sys.executable, "-m", "dataplane", "serve", "--listen", f"{c.host}:{self._port}"]
        argv += ["--data-dir", str(c.data_dir), "--workers", str(c.workers)]
        argv += ["--job-timeout-s", str(c.job_timeout_s), "--memory-limit", c.memory_limit]
        argv += ["--stop-on-stdin-eof"]
        if c.tokens_file is not None:
            argv += ["--tokens-file", str(c.tokens_file)]
        return argv

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_MAX_LINE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._proc = proc
        self._said.clear()
        self._pumps = [
            asyncio.create_task(_pump(proc.stdout, logging.INFO, ready, self._said)),
            asyncio.create_task(_pump(proc.stderr, logging.WARNING, ready, self._said)),
        ]
        exited = asyncio.ensure_future(proc.wait())
        either: list[asyncio.Future[Any]] = [ready, exited]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self._reap()
            said = self._said[-1] if self._said else ""
            if proc.returncode == _CONFIG_REFUSED:
                raise _ChildRefused(said.removeprefix("dataplane: ") or "its configuration")
            said = f": {said}" if said else ""
            raise _ChildFailed(f"it exited with code {proc.returncode} before serving{said}")
        exited.cancel()
        self.url = ready.result()
        self._port = int(self.url.rsplit(":", 1)[1])
        log.info("dataplane (pid %d) serving on %s", proc.pid, self.url)

    async def _supervise(self) -> None:
        """Restart the child whenever it dies or stops answering, backing off while it keeps
        failing and starting over once it has served for a while."""
        loop = asyncio.get_running_loop()
        backoff = _backoff()
        while True:
            started = loop.time()
            reason = await self._watch()
            if loop.time() - started >= STABLE_S:
                backoff = _backoff()
            delay = next(backoff)
            self.restarts += 1
            log.error("dataplane %s; restarting it in %.1f s", reason, delay)
            await asyncio.sleep(delay)  # ok: backoff before the restart
            try:
                await self._spawn()
            except _ChildFailed as exc:
                log.error("dataplane did not start again: %s", exc)

    async def _watch(self) -> str:
        """Wait until the child exits or fails its health check; why it must be restarted."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return "is not running"
        failures = 0
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                exited = asyncio.ensure_future(proc.wait())
                done, _ = await asyncio.wait({exited}, timeout=HEALTH_INTERVAL_S)
                if done:
                    await self._reap()
                    return f"(pid {proc.pid}) exited with code {proc.returncode}"
                exited.cancel()
                failures = 0 if await _healthy(session, self.url) else failures + 1
                if failures >= HEALTH_FAILURES:
                    proc.kill()
                    await self._reap()
                    return f"(pid {proc.pid}) failed {failures} health checks in a row"

    async def _stop_child(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            await self._reap()
            return
        proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            log.error(
                "dataplane (pid %d) did not stop within %.0f s: killed", proc.pid, STOP_TIMEOUT_S
            )
            proc.kill()
        await self._reap()

    async def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._pumps = []


class _ChildFailed(Exception):
    pass


class _ChildRefused(_ChildFailed):
    """It refused its configuration (exit status 2): starting it again cannot help."""


def _backoff() -> Iterator[float]:
    yield from BACKOFF_S
    while True:
        yield BACKOFF_S[-1]


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with session.get(f"{url}/healthz") as resp:
            return resp.status == 200
    return False


async def _pump(
    stream: asyncio.StreamReader,
    level: int,
    ready: asyncio.Future[str],
    said: collections.deque[str],
) -> None:
    """Log each line of the child's output with a prefix (and keep the last in `said`); the
    ready line resolves `ready`."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line beyond the limit: log what there is and go on
            raw = await stream.read(_MAX_LINE)
        if not raw:
            return
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            said.append(line[:_KEPT_CHARS])
        found = _READY.search(line)
        if found is not None and not ready.done():
            ready.set_result(found.group(1))
        parsed = _LEVEL.match(line)
        if parsed is not None:
            log.log(_LEVELS[parsed.group(1)], "dataplane: %s", parsed.group(2))
        elif line:
            log.log(level, "dataplane: %s", line)
