"""Helpers for the data plane tests: bounded waiting, an HTTP client, an SSE parser, a data
plane in a subprocess.

A plain module (not conftest.py) so test modules can import it: `tests/` is not a package."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import duckdb

from dataplane.app import DataPlane
from dataplane.company import JOURNAL_SUFFIX, OPEN_CONFIG

T = TypeVar("T")
TERMINAL = {"completed", "failed", "cancelled"}
SRC = Path(__file__).resolve().parents[2] / "src"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float = 20.0, interval_s: float = 0.02
) -> T:
    """Polls `probe` until it returns something other than None/False, within a bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)  # ok: tick of a bounded wait


@dataclass
class Client:
    """A thin test client for one data plane (and one bearer token, if any)."""

    url: str
    session: aiohttp.ClientSession
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token:
            self.headers["Authorization"] = f"Bearer {self.token}"

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(
            method, self.url + path, headers=self.headers, **kwargs
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def submit(
        self, job_type: str, job_input: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        status, job = await self.request(
            "POST", "/jobs", json={"type": job_type, "input": job_input, **extra}
        )
        assert status in (200, 201), job
        return dict(job)

    async def wait(self, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        async def terminal() -> dict[str, Any] | None:
            _, job = await self.request("GET", f"/jobs/{job_id}")
            return dict(job) if job["state"] in TERMINAL else None

        return await eventually(terminal, timeout_s)

    async def run(self, job_type: str, job_input: dict[str, Any], **extra: Any) -> dict[str, Any]:
        job = await self.submit(job_type, job_input, **extra)
        return await self.wait(job["job_id"])

    async def problem(self, method: str, path: str, status: int, **kwargs: Any) -> str:
        """Sends a request that must fail with a problem+json `status`; returns its detail."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.session.request(
            method, self.url + path, headers=headers, **kwargs
        ) as response:
            body = await response.text()
            assert response.status == status, (path[:200], body)
            assert response.content_type == "application/problem+json", body
        problem = json.loads(body)
        assert set(problem) == {"type", "title", "status", "detail"}, problem
        assert problem["status"] == status
        return str(problem["detail"])

    async def load_csv(self, name: str, text: str) -> dict[str, Any]:
        status, body = await self.request(
            "POST", f"/datasets/{name}/load?format=csv", data=text.encode()
        )
        assert status == 200, body
        return dict(body)


@dataclass
class Running:
    plane: DataPlane
    client: Client
    data_dir: Path

    def query(self, sql: str, company: str = "default") -> list[tuple[Any, ...]]:
        """Reads the company's DuckDB file directly (the same in-process database instance)."""
        with duckdb.connect(
            str(self.data_dir / f"{company}.duckdb"), config=dict(OPEN_CONFIG)
        ) as con:
            return list(con.execute(sql).fetchall())

    def journal(self, sql: str, company: str = "default") -> list[tuple[Any, ...]]:
        """Reads the company's job journal (SQLite) directly."""
        return read_journal(self.data_dir, sql, company)


def read_journal(
    data_dir: Path, sql: str, company: str = "default", params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Runs `sql` on a company's job journal file (`jobs`, `changes`) and commits."""
    with contextlib.closing(sqlite3.connect(data_dir / f"{company}{JOURNAL_SUFFIX}")) as db:
        rows = list(db.execute(sql, params).fetchall())
        db.commit()
        return rows


PlaneFactory = Callable[..., Awaitable[Running]]


def tokens_toml(
    company_tokens: dict[str, str] | None = None, service_tokens: dict[str, str] | None = None
) -> str:
    """A tokens file for the tokens in clear (token → company, token → service name)."""
    entries = [
        f'[[tokens]]\ncompany = "{company}"\nname = "{company}-{index}"\n'
        f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for index, (token, company) in enumerate((company_tokens or {}).items())
    ]
    entries += [
        f'[[service_tokens]]\nname = "{name}"\n'
        f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for token, name in (service_tokens or {}).items()
    ]
    return "\n".join(entries)


EVENTS_CSV = "event_id,user_id,event_type,amount\n" + "".join(
    f"{i},{i % 7},{'purchase' if i % 3 == 0 else 'view'},{i * 1.5}\n" for i in range(1, 101)
)


async def sse_events(
    response: aiohttp.ClientResponse, limit: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Parses server-sent events: yields {id, event, data} dicts; comments as {comment}."""
    event: dict[str, Any] = {}
    count = 0
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if event:
                yield event
                count += 1
                event = {}
                if limit is not None and count >= limit:
                    return
        else:
            key, _, value = line.partition(": ")
            event[key] = json.loads(value) if key == "data" else value


@dataclass
class Served:
    """`python -m dataplane serve` in a subprocess; its log (stderr) goes to `log`."""

    process: asyncio.subprocess.Process
    url: str
    log: Path

    async def logged(self, text: str) -> None:
        """Waits until the log has a line containing `text`."""

        async def found() -> bool:
            return text in self.log.read_text()

        await eventually(found)


@contextlib.asynccontextmanager
async def dataplane_process(data_dir: Path, *args: str) -> AsyncIterator[Served]:
    """Serves on a free loopback port; killed at the end unless the test stopped it."""
    log = data_dir.parent / f"{data_dir.name}-{time.monotonic_ns()}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dataplane", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir), *args,
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"https?://[\d.]+:\d+", line)
        assert match, (line, log.read_text())
        yield Served(process, match.group(0), log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
