"""Job records survive restarts; a SIGKILL mid-run leaves every DML applied exactly once."""

from __future__ import annotations

import asyncio
import signal
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
    dataplane_process,
    eventually,
    sse_events,
)

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
ENDLESS_DML = f"INSERT INTO company_data.ledger SELECT -1 FROM ({SLOW}) WHERE n > 0"
JOBS = 24


async def test_records_and_event_ids_survive_a_restart(
    start_plane: PlaneFactory, tmp_path: Path
) -> None:
    first = await start_plane(tmp_path / "d", workers=1)
    await first.client.load_csv("events", EVENTS_CSV)
    done = await first.client.run("execute-dml", {"nql": "DELETE FROM company_data.events"})
    blocker = await first.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "s"})
    await _state(first.client, blocker["job_id"], "running")
    queued = await first.client.submit("execute-dml", {"nql": "DELETE FROM company_data.events"})
    await first.plane.aclose()

    second = await start_plane(tmp_path / "d", workers=1)
    _, again = await second.client.request("GET", f"/jobs/{done['job_id']}")
    assert again == done
    await _state(second.client, blocker["job_id"], "running")
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


async def _state(client: Client, job_id: str, state: str) -> None:
    async def reached() -> bool:
        _, job = await client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == state)

    await eventually(reached)


async def _events(running: Running, path: str, count: int) -> list[dict[str, Any]]:
    async with running.client.session.get(running.client.url + path) as response:
        return [event async for event in sse_events(response, limit=count)]


def _ledger_at_kill(data_dir: Path) -> bool:
    """The killed process left a job running, and exactly the completed DML took effect."""
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
    async with dataplane_process(data_dir, "--workers", "2") as served:
        client = Client(served.url, session)
        ledger = await client.run(
            "materialize-view",
            {"nql": "SELECT 0::INTEGER AS n WHERE false", "dataset_name": "ledger"},
        )
        assert ledger["state"] == "completed"
        # A DML that never ends by itself, alone on one worker before the others are
        # submitted: whenever the kill lands, a job is running, whatever the machine's speed.
        endless = await client.submit(
            "execute-dml", {"nql": ENDLESS_DML}, idempotency_key="endless"
        )
        await _state(client, endless["job_id"], "running")
        for n in range(JOBS):
            nql = (
                f"INSERT INTO company_data.ledger SELECT {n}"
                " FROM (SELECT count(*) AS c FROM range(20000000)) WHERE c > 0"
            )
            await client.submit("execute-dml", {"nql": nql}, idempotency_key=f"dml-{n}")

        async def some_done() -> bool:
            return await _count(client, "state=completed&type=execute-dml") >= 2

        await eventually(some_done)
        served.process.send_signal(signal.SIGKILL)
        await served.process.wait()
    assert _ledger_at_kill(data_dir)

    async with dataplane_process(data_dir, "--workers", "2") as served:
        client = Client(served.url, session)
        # Recovered jobs may queue behind the endless one: it must be cancelled to end.
        await _state(client, endless["job_id"], "running")
        await client.request("POST", f"/jobs/{endless['job_id']}/cancel")

        async def all_completed() -> bool:
            return await _count(client, "state=completed&type=execute-dml") == JOBS

        await eventually(all_completed, timeout_s=90)
        assert (await client.wait(endless["job_id"]))["state"] == "cancelled"
        assert await _count(client, "state=failed") == 0
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 30) == 0
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT n, count(*) FROM company_data.ledger GROUP BY n ORDER BY n")
        assert rows.fetchall() == [(n, 1) for n in range(JOBS)]


BURST = 300


async def _submit_burst(client: Client) -> int:
    """Submits BURST one-row inserts, 32 at a time, each under its own idempotency key; returns
    how many submissions got an answer (the rest died with the server)."""
    gate = asyncio.Semaphore(32)

    async def one(n: int) -> bool:
        async with gate:
            nql = f"INSERT INTO company_data.ledger VALUES ({n})"
            try:
                await client.submit("execute-dml", {"nql": nql}, idempotency_key=f"burst-{n}")
            except aiohttp.ClientError:
                return False
            return True

    return sum(await asyncio.gather(*(one(n) for n in range(BURST))))


def _exactly_the_completed_took_effect(data_dir: Path) -> int:
    """Every completed job's row is in the ledger once, no other job's is, and every job's
    record matches the durable change of its last event. Returns the unfinished jobs."""
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        completed = {
            int(key.removeprefix("burst-"))
            for (key,) in con.execute(
                "SELECT idempotency_key FROM _dataplane.jobs"
                " WHERE type = 'execute-dml' AND state = 'completed'"
            ).fetchall()
        }
        rows = con.execute("SELECT n, count(*) FROM company_data.ledger GROUP BY n").fetchall()
        unfinished = con.execute(
            "SELECT count(*) FROM _dataplane.jobs WHERE state IN ('pending', 'running')"
        ).fetchall()
        mismatched = con.execute(
            "SELECT count(*) FROM _dataplane.jobs j LEFT JOIN _dataplane.changes c"
            " ON c.event_id = j.last_event_id"
            " WHERE c.job_id IS DISTINCT FROM j.job_id OR c.job->>'state' != j.state"
        ).fetchall()
    assert sorted(rows) == [(n, 1) for n in sorted(completed)]
    assert mismatched == [(0,)]
    return int(unfinished[0][0])


@pytest.mark.slow
async def test_sigkill_mid_burst_leaves_each_batched_job_done_exactly_once(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data_dir = tmp_path / "data"
    async with dataplane_process(data_dir, "--workers", "2") as served:
        client = Client(served.url, session)
        await client.run(
            "materialize-view",
            {"nql": "SELECT 0::INTEGER AS n WHERE false", "dataset_name": "ledger"},
        )
        burst = asyncio.create_task(_submit_burst(client))

        async def under_way() -> bool:
            return await _count(client, "state=completed&type=execute-dml") >= 20

        await eventually(under_way)
        served.process.send_signal(signal.SIGKILL)
        await served.process.wait()
        answered = await burst
    unfinished = _exactly_the_completed_took_effect(data_dir)
    assert unfinished > 0 or answered < BURST, "the kill came after the burst"

    async with dataplane_process(data_dir, "--workers", "2") as served:
        client = Client(served.url, session)
        assert await _submit_burst(client) == BURST  # the same keys: known jobs, or new ones

        async def all_completed() -> bool:
            return await _count(client, "state=completed&type=execute-dml") == BURST

        await eventually(all_completed, timeout_s=90)
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 30) == 0
    assert _exactly_the_completed_took_effect(data_dir) == 0
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM company_data.ledger").fetchall() == [(BURST,)]
        ids = [
            i
            for (i,) in con.execute("SELECT event_id FROM _dataplane.changes ORDER BY 1").fetchall()
        ]
        histories = con.execute(
            "SELECT list(job->>'state' ORDER BY event_id) FROM _dataplane.changes"
            " WHERE type = 'execute-dml' GROUP BY job_id"
        ).fetchall()
    assert ids == list(range(1, len(ids) + 1)), "event ids continue across the crash"
    assert {tuple(h) for (h,) in histories} == {("pending", "running", "completed")}
