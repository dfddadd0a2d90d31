"""Job records survive restarts; a SIGKILL mid-run leaves every DML applied exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest

from tests.dataplane.dp_support import (
    EVENTS_CSV,
    Client,
    PlaneFactory,
    Running,
    eventually,
    sse_events,
)

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
JOBS = 24
SRC = Path(__file__).resolve().parents[2] / "src"


async def test_records_and_event_ids_survive_a_restart(
    start_plane: PlaneFactory, tmp_path: Path
) -> None:
    first = await start_plane(tmp_path / "d", workers=1)
    await first.client.load_csv("events", EVENTS_CSV)
    done = await first.client.run("execute-dml", {"nql": "DELETE FROM company_data.events"})
    blocker = await first.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "s"})
    await _state(first, blocker["job_id"], "running")
    queued = await first.client.submit("execute-dml", {"nql": "DELETE FROM company_data.events"})
    await first.plane.aclose()

    second = await start_plane(tmp_path / "d", workers=1)
    _, again = await second.client.request("GET", f"/jobs/{done['job_id']}")
    assert again == done
    await _state(second, blocker["job_id"], "running")
    await second.client.request("POST", f"/jobs/{blocker['job_id']}/cancel")
    assert (await second.client.wait(blocker["job_id"]))["state"] == "cancelled"
    assert (await second.client.wait(queued["job_id"]))["state"] == "completed"
    _, listed = await second.client.request("GET", "/jobs?order_by=updated_at_desc&per_page=500")
    assert listed["total_records"] == 3
    # Event ids continue from the stored log: the whole history replays in order, no repeats.
    history = await _events(second, "/jobs/events?last_event_id=0", 9)
    assert [int(e["id"]) for e in history] == list(range(1, 10))
    changes = [(e["data"]["job_id"], e["data"]["state"]) for e in history]
    assert changes[:6] == [
        (done["job_id"], "pending"),
        (done["job_id"], "running"),
        (done["job_id"], "completed"),
        (blocker["job_id"], "pending"),
        (blocker["job_id"], "running"),
        (queued["job_id"], "pending"),
    ]
    assert (blocker["job_id"], "cancelled") in changes[6:]
    assert (queued["job_id"], "running") in changes[6:]


async def test_a_cancel_interrupted_by_a_crash_ends_cancelled(
    start_plane: PlaneFactory, tmp_path: Path
) -> None:
    first = await start_plane(tmp_path / "d")
    job = await first.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"})
    await first.plane.aclose()
    # As if the process died between the cancel request and the interrupted query's end.
    with duckdb.connect(str(tmp_path / "d" / "default.duckdb")) as con:
        con.execute(
            "UPDATE _dataplane.jobs SET state = 'pending_cancellation', ended_at = NULL"
            " WHERE job_id = ?",
            [job["job_id"]],
        )
    second = await start_plane(tmp_path / "d")
    _, recovered = await second.client.request("GET", f"/jobs/{job['job_id']}")
    assert recovered["state"] == "cancelled"
    assert recovered["ended_at"] is not None


async def _state(running: Running, job_id: str, state: str) -> None:
    async def reached() -> bool:
        _, job = await running.client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == state)

    await eventually(reached)


async def _events(running: Running, path: str, count: int) -> list[dict[str, Any]]:
    async with running.client.session.get(running.client.url + path) as response:
        return [event async for event in sse_events(response, limit=count)]


@contextlib.asynccontextmanager
async def dataplane_process(
    data_dir: Path,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("DATAPLANE_TOKENS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dataplane", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir), "--workers", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"http://[\d.]+:\d+", line)
        assert match, line
        yield process, match.group(0)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _ledger_at_kill(data_dir: Path) -> bool:
    """The killed process left work unfinished, and exactly the completed DML took effect."""
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        states = dict(
            con.execute(
                "SELECT state, count(*) FROM _dataplane.jobs WHERE type = 'execute-dml'"
                " GROUP BY state"
            ).fetchall()
        )
        rows = con.execute("SELECT count(*) FROM company_data.ledger").fetchall()
    assert states.get("running", 0) >= 1, states
    assert rows == [(states.get("completed", 0),)], (rows, states)
    return True


async def _count(client: Client, query: str) -> int:
    _, body = await client.request("GET", f"/jobs?{query}")
    return int(body["total_records"])


@pytest.mark.slow
async def test_sigkill_while_jobs_run_then_restart_applies_each_dml_once(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data_dir = tmp_path / "data"
    async with dataplane_process(data_dir) as (process, url):
        client = Client(url, session)
        ledger = await client.run(
            "materialize-view",
            {"nql": "SELECT 0::INTEGER AS n WHERE false", "dataset_name": "ledger"},
        )
        assert ledger["state"] == "completed"
        for n in range(JOBS):
            nql = (
                f"INSERT INTO company_data.ledger SELECT {n}"
                " FROM (SELECT count(*) AS c FROM range(150000000)) WHERE c > 0"
            )
            await client.submit("execute-dml", {"nql": nql}, idempotency_key=f"dml-{n}")

        async def some_done_and_one_running() -> bool:
            done = await _count(client, "state=completed&type=execute-dml")
            return done >= 2 and await _count(client, "state=running") >= 1

        await eventually(some_done_and_one_running)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert _ledger_at_kill(data_dir)

    async with dataplane_process(data_dir) as (process, url):
        client = Client(url, session)

        async def all_completed() -> bool:
            return await _count(client, "state=completed&type=execute-dml") == JOBS

        await eventually(all_completed, timeout_s=90)
        assert await _count(client, "state=failed") == 0
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT n, count(*) FROM company_data.ledger GROUP BY n ORDER BY n")
        assert rows.fetchall() == [(n, 1) for n in range(JOBS)]
