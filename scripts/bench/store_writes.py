"""Per-change cost of a durable write: aiosqlite statements against the group-committing writer.

One change is what a task's end costs the store: update a row and append an event row, in one
durable transaction. The same change is made three ways on a fresh WAL file each
(`synchronous=NORMAL`, as the daemon runs):

- aiosqlite, one transaction per change: `BEGIN IMMEDIATE`, two awaited statements, `COMMIT`
  on one connection (concurrent callers queue on its lock, since SQLite has one writer);
- aiosqlite, many changes per transaction: as above, but a caller takes whatever is queued and
  commits it together (group commit written over aiosqlite);
- workflowd's `GroupWriter` (`store/writer.py`): a change is a function run on the writer's
  own thread, every change queued meanwhile in the same transaction.

Each is measured with 1 caller at a time (latency) and with `--concurrency` callers (what
thousands of active runs look like). Usage: `.venv/bin/python scripts/bench/store_writes.py
[--quick]`. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
from instant_jobs_api import percentile

from workflowd.store.sql import Conn, SqliteConn
from workflowd.store.writer import GroupWriter

SCHEMA = (
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, updated INTEGER NOT NULL)",
    "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL,"
    " body TEXT NOT NULL)",
)
RUNS = 1000
UPDATE = "UPDATE runs SET status = ?, updated = ? WHERE id = ?"
APPEND = "INSERT INTO events (run_id, body) VALUES (?, ?)"
BODY = json.dumps({"type": "TASK_COMPLETED", "task": "t0", "output": {"rows": 42}})

Change = Callable[[int], Awaitable[None]]


def prepare(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.executemany("INSERT INTO runs VALUES (?, 'running', 0)", [(i,) for i in range(RUNS)])


class AioPerChange:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()
        self.commits = 0

    async def change(self, i: int) -> None:
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            await self.conn.execute(UPDATE, ("completed", i, i % RUNS))
            await self.conn.execute(APPEND, (i % RUNS, BODY))
            await self.conn.execute("COMMIT")
            self.commits += 1


class AioGrouped:
    """Group commit over aiosqlite: callers queue; whoever finds the connection free commits
    everything queued so far in one transaction, statement by statement."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()
        self.queue: list[tuple[int, asyncio.Future[None]]] = []
        self.commits = 0

    async def change(self, i: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self.queue.append((i, done))
        async with self.lock:
            if not done.done():
                batch, self.queue = self.queue, []
                await self.conn.execute("BEGIN IMMEDIATE")
                for j, _ in batch:
                    await self.conn.execute(UPDATE, ("completed", j, j % RUNS))
                    await self.conn.execute(APPEND, (j % RUNS, BODY))
                await self.conn.execute("COMMIT")
                self.commits += 1
                for _, waiting in batch:
                    waiting.set_result(None)
        await done


class Grouped:
    def __init__(self, writer: GroupWriter) -> None:
        self.writer = writer

    @property
    def commits(self) -> int:
        return self.writer.commits

    async def change(self, i: int) -> None:
        def op(conn: Conn) -> None:
            conn.execute(UPDATE, ("completed", i, i % RUNS))
            conn.execute(APPEND, (i % RUNS, BODY))

        await self.writer.submit(op)


async def measure(change: Change, changes: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(changes))

    async def caller() -> None:
        for i in counter:
            started = time.perf_counter()
            await change(i)
            latencies.append((time.perf_counter() - started) * 1e6)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(caller())
    elapsed = time.perf_counter() - started
    return {
        "changes_per_s": round(changes / elapsed),
        "us_per_change": round(elapsed * 1e6 / changes, 1),
        "latency_us_p50": round(percentile(latencies, 50), 1),
        "latency_us_p99": round(percentile(latencies, 99), 1),
    }


async def aio_connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def writer_connect(path: Path) -> Callable[[], SqliteConn]:
    def connect() -> SqliteConn:
        raw = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        raw.execute("PRAGMA synchronous=NORMAL")
        return _Closing(raw)

    return connect


class _Closing(SqliteConn):
    def close(self) -> None:
        self.raw.close()


async def one_way(name: str, work: Path, changes: int, concurrency: int) -> dict[str, Any]:
    path = work / f"{name}-{concurrency}.db"
    prepare(path)
    if name == "group_writer":
        writer = GroupWriter(writer_connect(path), "BEGIN IMMEDIATE", "bench")
        writer.start()
        way: AioPerChange | AioGrouped | Grouped = Grouped(writer)
        try:
            figures = await measure(way.change, changes, concurrency)
        finally:
            await writer.aclose()
    else:
        conn = await aio_connect(path)
        way = AioPerChange(conn) if name == "aiosqlite_per_change" else AioGrouped(conn)
        try:
            figures = await measure(way.change, changes, concurrency)
        finally:
            await conn.close()
    return figures | {"changes_per_commit": round(changes / max(1, way.commits), 1)}


async def bench(changes: int, concurrency: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("aiosqlite_per_change", "aiosqlite_grouped", "group_writer"):
        for callers in (1, concurrency):
            figures = await one_way(name, work, changes, callers)
            out[f"{name}_c{callers}"] = figures
            print(f"{name:22} {callers:5} callers: {json.dumps(figures)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--changes", type=int, help="changes per measurement (default 20000)")
    parser.add_argument("--concurrency", type=int, default=1000, help="concurrent callers")
    args = parser.parse_args()
    changes = args.changes or (1000 if args.quick else 20_000)
    load_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="workflowd-store-bench-") as tmp:
        out = asyncio.run(bench(changes, args.concurrency, Path(tmp)))
    out["changes"] = changes
    out["load_avg_1m_at_start"] = round(load_1m, 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
