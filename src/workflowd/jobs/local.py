"""The local data plane as a supervised child process (`python -m dataplane serve`).

It runs in its own process so that its DuckDB work and its HTTP handling never share the
daemon's event loop or GIL. The daemon starts it before its API serves and stops it after
its runs have drained. If it dies, or stops answering its health check, it is started again,
with backoff: meanwhile the jobs client retries, its event stream resumes from the last event
id, and jobs submitted under idempotency keys are never duplicated.

Nothing but this daemon's child can answer on the data plane's port: the daemon binds the
listening socket once, at start, keeps it open for its whole life and hands it down to each
child, so no other process can bind that port while the daemon lives, even while the child is
dead (connections then wait in the socket's backlog for the next child). With TLS, the jobs
client also pins the certificate the child serves. With tokens, each child start gets a
service token of its own (the data plane's tokens file is rewritten before each start), so a
token that leaked dies with the child it was made for; the jobs client's credential switches
to the new one.

The child reads its stdin until end of file: the daemon never writes to it, so the pipe ends
only when the daemon does, even by kill -9, and the child then stops on its own instead of
holding the port and the DuckDB files against the next daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from workflowd.domain.errors import InvalidRequest
from workflowd.domain.retry import Backoff
from workflowd.jobs.credential import Credential
from workflowd.jobs.local_trust import (
    CompanyToken,
    DataPlaneFailed,
    PlaneTls,
    fingerprint,
    listen,
    listen_address,
    url,
    write_tokens,
)

log = logging.getLogger("workflowd.dataplane")

_READY = re.compile(r"dataplane listening on (https?://\S+)")
_RELOADED = re.compile(r"dataplane tokens ([0-9a-f]{64}|-) (reloaded|refused: (.*))")
# The child logs `LEVEL logger: message`; its lines are logged again at their own level.
_LEVEL = re.compile(r"^(?:\S+ \S+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")
_LEVELS = logging.getLevelNamesMapping()
_MAX_LINE = 64 * 1024
_CONFIG_REFUSED = 2  # the child's exit status when it refuses its configuration
_PRIVATE_UMASK = 0o077
START_TIMEOUT_S = 60.0
RELOAD_TIMEOUT_S = 10.0
HEALTH_INTERVAL_S = 5.0
HEALTH_TIMEOUT_S = 5.0
HEALTH_FAILURES = 3  # consecutive failed checks before a live but silent child is replaced
# Between a failed start and the next: 0.1 s, 0.2 s, 0.4 s… up to 30 s (one child, nothing
# to spread apart, so no jitter).
RESTART_BACKOFF = Backoff(0.1, max_delay_s=30.0)
STABLE_S = 60.0  # a child that served this long resets the backoff
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class LocalPlaneConfig:
    data_dir: Path
    host: str
    port: int
    workers: int
    job_timeout_s: float
    memory_limit: str
    # Where the daemon writes the data plane's tokens file; None: no tokens at all.
    tokens_file: Path | None = None
    tls: PlaneTls | None = None
    # Bytes of datasets each company may keep (0: no quota).
    dataset_quota_bytes: int = 0
    # Variables the child gets besides this process's own (OpenTelemetry's `OTEL_*`).
    env: Mapping[str, str] = field(default_factory=dict)


class LocalDataPlane:
    def __init__(self, config: LocalPlaneConfig, companies: Sequence[CompanyToken] = ()) -> None:
        self._config = config
        self._companies = tuple(companies)
        self._service_sha256 = ""
        # The token the jobs client presents to the child now serving.
        self.credential = Credential()
        self.pin = None if config.tls is None else fingerprint(config.tls.cert)
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._ready: asyncio.Future[None] | None = None
        self._reload: tuple[str, asyncio.Future[str | None]] | None = None
        self._last_words: collections.deque[str] = collections.deque(maxlen=5)
        self._switching = asyncio.Lock()  # one child start, or one reload, at a time
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0
        self.url = ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> str:
        """Bind the port, start the child and wait until it serves; its URL (the port, when
        0 was asked for, is the one bound: it stays the same across restarts)."""
        self._sock = listen(self._config.host, self._config.port)
        self.url = url(self._sock, self._config.tls is not None)
        last = "it never said it was serving"
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                for delay in _delays():
                    try:
                        await self._spawn()
                        break
                    except _ChildFailed as exc:
                        if exc.refused:
                            raise InvalidRequest("dataplane", exc.reason) from None
                        last = exc.reason
                    log.warning("dataplane did not start (%s); trying again in %.1f s", last, delay)
                    await asyncio.sleep(delay)  # ok: backoff before the next attempt
        except TimeoutError:
            await self._reap()
            raise DataPlaneFailed(
                f"the data plane did not start within {START_TIMEOUT_S:g} s: {last}"
            ) from None
        self._supervisor = asyncio.create_task(self._supervise(), name="dataplane-supervisor")
        return self.url

    async def reload(self, companies: Sequence[CompanyToken]) -> str | None:
        """Rewrite the data plane's tokens file with `companies` and have the child read it;
        None once it is in force, else why not (the previous tokens then stay in force, in the
        child and in the file)."""
        async with self._switching:
            previous, self._companies = self._companies, tuple(companies)
            written = self._write_tokens()
            proc = self._proc
            if proc is None or proc.returncode is not None:
                return None  # the next child reads the new file
            refusal = await self._ask_reload(proc, written)
            if refusal is not None:
                self._companies = previous
                self._write_tokens()
            return refusal

    async def aclose(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await self._stop_child()
        if self._sock is not None:
            self._sock.close()

    def _argv(self) -> list[str]:
        c = self._config
        assert self._sock is not None
        argv = [sys.executable, "-m", "dataplane", "serve"]
        argv += ["--listen", listen_address(self._sock)]
        argv += ["--listen-fd", str(self._sock.fileno())]
        argv += ["--data-dir", str(c.data_dir), "--workers", str(c.workers)]
        argv += ["--job-timeout-s", str(c.job_timeout_s), "--memory-limit", c.memory_limit]
        argv += ["--stop-on-stdin-eof"]
        argv += ["--quota-dataset-bytes", str(c.dataset_quota_bytes)]
        if c.tokens_file is not None:
            argv += ["--tokens-file", str(c.tokens_file)]
        if c.tls is not None:
            argv += ["--tls-cert", str(c.tls.cert), "--tls-key", str(c.tls.key)]
            if c.tls.client_ca is not None:
                argv += ["--tls-client-ca", str(c.tls.client_ca)]
                argv += ["--service-tokens-need-no-client-cert"]
        return argv

    async def _spawn(self) -> None:
        async with self._switching:
            self._new_service_token()
            await self._start_child()

    def _new_service_token(self) -> None:
        """A token for the child about to start, in its tokens file and in the credential
        the jobs client presents from now on (a request still carrying the previous token is
        refused by the new child, and retried)."""
        if self._config.tokens_file is None:
            return
        token = secrets.token_urlsafe(32)
        self._service_sha256 = hashlib.sha256(token.encode()).hexdigest()
        self._write_tokens()
        self.credential.replace(token)

    async def _start_child(self) -> None:
        assert self._sock is not None
        proc = await asyncio.create_subprocess_exec(
            *self._argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_MAX_LINE,
            pass_fds=(self._sock.fileno(),),
            umask=_PRIVATE_UMASK,
            env={**os.environ, **self._config.env} if self._config.env else None,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._proc = proc
        self._ready = ready = asyncio.get_running_loop().create_future()
        self._last_words.clear()
        self._pumps = [
            asyncio.create_task(self._pump(proc.stdout, logging.INFO)),
            asyncio.create_task(self._pump(proc.stderr, logging.WARNING)),
        ]
        exited = asyncio.ensure_future(proc.wait())
        either: list[asyncio.Future[Any]] = [ready, exited]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not ready.done():
            ready.cancel()
            await self._reap()
            raise _ChildFailed(proc.returncode, self._last_words)
        log.info("dataplane (pid %d) serving on %s", proc.pid, self.url)

    async def _ask_reload(self, proc: asyncio.subprocess.Process, written: str) -> str | None:
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._reload = (written, answer)
        exited = asyncio.ensure_future(proc.wait())
        either: list[asyncio.Future[Any]] = [answer, exited]
        try:
            proc.send_signal(signal.SIGHUP)
            await asyncio.wait(
                either, timeout=RELOAD_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            exited.cancel()
            self._reload = None
        if answer.done():
            refusal = answer.result()
            return None if refusal is None else f"the data plane refused them: {refusal}"
        if proc.returncode is not None:
            return "the data plane exited during the reload"
        # Replaced, so that it can never apply the new tokens later, alone.
        proc.kill()
        return (
            f"the data plane did not answer within {RELOAD_TIMEOUT_S:g} s; it is restarted"
            " with the previous tokens"
        )

    def _write_tokens(self) -> str:
        assert self._config.tokens_file is not None
        return write_tokens(self._config.tokens_file, self._companies, self._service_sha256)

    async def _supervise(self) -> None:
        """Restart the child whenever it dies or stops answering, backing off while it keeps
        failing and starting over once it has served for a while."""
        loop = asyncio.get_running_loop()
        delays = RESTART_BACKOFF.delays()
        while True:
            started = loop.time()
            reason = await self._watch()
            if loop.time() - started >= STABLE_S:
                delays.reset()
            delay = delays.next()
            self.restarts += 1
            log.error("dataplane %s; restarting it in %.1f s", reason, delay)
            await asyncio.sleep(delay)  # ok: backoff before the restart
            try:
                await self._spawn()
            except _ChildFailed as exc:
                log.error("dataplane did not start again: %s", exc.reason)
            except OSError as exc:  # e.g. its tokens file could not be written: try again
                log.error("dataplane could not be started again: %s", exc)

    async def _watch(self) -> str:
        """Wait until the child exits or fails its health check; why it must be restarted."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return "is not running"
        failures = 0
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
        connector = aiohttp.TCPConnector(ssl=self._trust())
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
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

    def _trust(self) -> aiohttp.Fingerprint | bool:
        return True if self.pin is None else aiohttp.Fingerprint(self.pin)

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

    async def _pump(self, stream: asyncio.StreamReader, level: int) -> None:
        """Log each line of the child's output with a prefix; the ready line and reload
        answers resolve what waits for them."""
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line beyond the limit: log what there is and go on
                raw = await stream.read(_MAX_LINE)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            if self._answered(line):
                continue
            if level == logging.WARNING and line:
                self._last_words.append(line)
            parsed = _LEVEL.match(line)
            if parsed is not None:
                log.log(_LEVELS[parsed.group(1)], "dataplane: %s", parsed.group(2))
            elif line:
                log.log(level, "dataplane: %s", line)

    def _answered(self, line: str) -> bool:
        """Whether `line` is the child's ready line or a reload answer (its log says the
        same in words)."""
        if _READY.fullmatch(line) and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
            return False
        found = _RELOADED.fullmatch(line)
        if found is None:
            return False
        if self._reload is not None and found.group(1) in (self._reload[0], "-"):
            answer = self._reload[1]
            if not answer.done():
                answer.set_result(found.group(3))
        return True


class _ChildFailed(Exception):
    """The child exited before serving; `reason` says why in its own last words when it
    left some. `refused`: it refused its configuration, and would again."""

    def __init__(self, returncode: int | None, last_words: Sequence[str]) -> None:
        said = next((line for line in reversed(last_words) if line), "")
        said = said.removeprefix("dataplane: ")
        self.refused = returncode == _CONFIG_REFUSED and bool(said)
        if self.refused:
            self.reason = said
        elif said:
            self.reason = f"it exited with code {returncode} before serving: {said}"
        else:
            self.reason = f"it exited with code {returncode} before serving"
        super().__init__(self.reason)


def _delays() -> Iterator[float]:
    delays = RESTART_BACKOFF.delays()
    while True:
        yield delays.next()


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with session.get(f"{url}/healthz") as resp:
            return resp.status == 200
    return False
