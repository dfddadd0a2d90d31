"""Real subprocesses for crash tests: start, wait for the ready line, kill -9, restart."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import sys
from pathlib import Path

from tests.conftest import REPO, venv_bin


class ExitedBeforeReady(AssertionError):
    def __init__(self, program: str, returncode: int | None, output: str) -> None:
        super().__init__(f"{program} exited ({returncode}) before ready:\n{output}")
        self.returncode = returncode


class Process:
    def __init__(
        self, proc: asyncio.subprocess.Process, ready: re.Match[str], before: list[str]
    ) -> None:
        self.proc = proc
        self.ready = ready
        self.before_ready = before  # every line printed up to the ready line
        self.last_lines: collections.deque[str] = collections.deque(maxlen=50)
        self._drain = asyncio.create_task(self._read_output())

    @classmethod
    async def start(
        cls, argv: list[str], ready: str, env: dict[str, str] | None = None, timeout_s: float = 30
    ) -> Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        assert proc.stdout is not None
        seen = []
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise ExitedBeforeReady(argv[0], await proc.wait(), "".join(seen))
                seen.append(line)
                match = re.search(ready, line)
                if match:
                    break
        return cls(proc, match, seen)

    async def _read_output(self) -> None:
        # Keep reading so a chatty child never blocks on a full pipe; the last lines stay.
        assert self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # a line beyond the stream's limit: keep a piece of it
                line = await self.proc.stdout.read(65536)
            if not line:
                return
            self.last_lines.append(line.decode(errors="replace"))

    async def wait(self, timeout_s: float = 60) -> int:
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
        await self._drain
        return code

    async def kill9(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await self.wait(timeout_s=15)
        except TimeoutError:
            await self.kill9()


async def serve_embedded(data_dir: Path, *extra: str) -> tuple[Process, str, str]:
    """`workflowd serve` as a new user runs it (its own data plane), every port on loopback
    and chosen by the system; returns the process, its gRPC address and its jobs API URL."""
    flags = [
        "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--dataplane-listen", "127.0.0.1:0", *extra,
    ]  # fmt: skip
    proc = await Process.start(
        [venv_bin("workflowd"), "serve", *flags],
        r"serving gRPC on (\d+\.\d+\.\d+\.\d+:\d+) \(jobs API (http://\S+),",
        env={"PYTHONPATH": str(REPO)},
    )
    return proc, proc.ready.group(1), proc.ready.group(2)


async def start_dataplane(data_dir: Path) -> tuple[Process, str]:
    proc = await Process.start(
        [
            sys.executable,
            "-m",
            "dataplane",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
        ],
        r"listening on (http://\S+)",
    )
    return proc, proc.ready.group(1)


async def start_workflowd(
    data_dir: Path,
    jobs_url: str,
    crash_point: str = "",
    listen: str = "127.0.0.1:0",
    extra: tuple[str, ...] = (),
) -> tuple[Process, str]:
    """`workflowd serve` as a subprocess (with `extra` flags); with `crash_point`, the tests'
    own entry point that makes it kill itself there."""
    flags = [
        "--listen", listen, "--http-listen", "127.0.0.1:0", "--data-dir", str(data_dir),
        "--jobs-url", jobs_url, *extra,
    ]  # fmt: skip
    if crash_point:
        argv = [sys.executable, "-m", "tests.crashing_daemon", crash_point, *flags]
    else:
        argv = [venv_bin("workflowd"), "serve", *flags]
    proc = await Process.start(
        argv, r"serving gRPC on (\d+\.\d+\.\d+\.\d+:\d+)", env={"PYTHONPATH": str(REPO)}
    )
    return proc, proc.ready.group(1)
