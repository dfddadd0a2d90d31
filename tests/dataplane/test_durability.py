"""Job records survive restarts; a SIGKILL mid-run leaves every DML applied exactly once."""

from __future__ import annotations

import asyncio
import json
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
    read_journal,
    sse_events,
)

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
ENDLESS_DML = f"INSERT INTO company_data.ledger SELECT -1 FROM ({SLOW}) WHERE n > 0"
JOBS = 24
# Jobs whose effects committed with their proofs while the journal still says otherwise.
PROVED = "SELECT job_id FROM _dataplane.completions"


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
    job = await first.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "v"})
    await _state(first.client, job["job_id"], "running")
    await first.plane.aclose()  # the job stays running: it runs again at the next start
    # As if the process died between the cancel request and the interrupted query's end.
    read_journal(
        tmp_path / "d",
        "UPDATE jobs SET state = 'pending_cancellation' WHERE job_id = ?",
        params=[job["job_id"]],
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
    """The killed process left a job running, and exactly the completed DML took effect (a
    job killed between its effect's commit and the journal's is proved: see below)."""
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM company_data.ledger").fetchall()
        proved = [job_id for (job_id,) in con.execute(PROVED).fetchall()]
    [(took_effect,)] = read_journal(
        data_dir,
        "SELECT count(*) FROM jobs WHERE type = 'execute-dml'"
        f" AND (state = 'completed' OR job_id IN ({', '.join('?' * len(proved))}))",
        params=proved,
    )
    states = dict(
        read_journal(
            data_dir, "SELECT state, count(*) FROM jobs WHERE type = 'execute-dml' GROUP BY state"
        )
    )
    assert states.get("running", 0) >= 1, states
    assert rows == [(took_effect,)], (rows, states, proved)
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
    record matches the durable change of its last event. Returns the unfinished jobs. A job
    killed between its effect's commit and the journal's counts as completed: its proof is
    in DuckDB with the effect, and completes it at the next start."""
    with duckdb.connect(str(data_dir / "default.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT n, count(*) FROM company_data.ledger GROUP BY n").fetchall()
        proved = [job_id for (job_id,) in con.execute(PROVED).fetchall()]
    marks = ", ".join("?" * len(proved))
    completed = {
        int(key.removeprefix("burst-"))
        for (key,) in read_journal(
            data_dir,
            "SELECT idempotency_key FROM jobs WHERE type = 'execute-dml'"
            f" AND (state = 'completed' OR job_id IN ({marks}))",
            params=proved,
        )
    }
    [(unfinished,)] = read_journal(
        data_dir,
        f"SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')"
        f" AND job_id NOT IN ({marks})",
        params=proved,
    )
    mismatched = read_journal(
        data_dir,
        "SELECT count(*) FROM jobs j LEFT JOIN changes c ON c.event_id = j.last_event_id"
        " WHERE c.job_id IS NOT j.job_id OR json_extract(c.job, '$.state') != j.state",
    )
    assert sorted(rows) == [(n, 1) for n in sorted(completed)]
    assert mismatched == [(0,)]
    return int(unfinished)


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
    ids = [i for (i,) in read_journal(data_dir, "SELECT event_id FROM changes ORDER BY 1")]
    histories = read_journal(
        data_dir,
        "SELECT group_concat(state, ' ') FROM (SELECT job_id, json_extract(job, '$.state')"
        " AS state FROM changes WHERE type = 'execute-dml' ORDER BY event_id) GROUP BY job_id",
    )
    assert ids == list(range(1, len(ids) + 1)), "event ids continue across the crash"
    assert {h for (h,) in histories} == {"pending running completed"}


async def test_a_crash_between_the_effect_and_the_journal_completes_the_job_once(
    start_plane: PlaneFactory, tmp_path: Path
) -> None:
    first = await start_plane(tmp_path / "d", workers=1)
    await first.client.run(
        "materialize-view", {"nql": "SELECT 0::INTEGER AS n WHERE false", "dataset_name": "ledger"}
    )
    done = await first.client.run(
        "execute-dml", {"nql": "INSERT INTO company_data.ledger VALUES (7)"}
    )
    await first.plane.aclose()
    # What a kill -9 after DuckDB committed the effect (and its proof), before the journal
    # recorded the completion, leaves: the journal still says `running`.
    [(running_event,)] = read_journal(
        tmp_path / "d",
        "SELECT max(event_id) FROM changes WHERE job_id = ? AND job ->> '$.state' = 'running'",
        params=[done["job_id"]],
    )
    read_journal(tmp_path / "d", "DELETE FROM changes WHERE event_id > ?", params=[running_event])
    read_journal(
        tmp_path / "d",
        "UPDATE jobs SET state = 'running', result = NULL, ended_at = NULL, last_event_id = ?"
        " WHERE job_id = ?",
        params=[running_event, done["job_id"]],
    )

    second = await start_plane(tmp_path / "d", workers=1)
    _, recovered = await second.client.request("GET", f"/jobs/{done['job_id']}")
    assert recovered["state"] == "completed"
    assert recovered["result"] == done["result"]
    # The proof's stamp: taken just before the effect's commit, the journal's just after.
    assert recovered["created_at"] < recovered["ended_at"] <= done["ended_at"]
    assert second.query("SELECT n FROM company_data.ledger") == [(7,)]  # not run again
    history = await _events(second, f"/jobs/events?last_event_id={running_event}", 1)
    assert [(e["data"]["job_id"], e["data"]["state"]) for e in history] == [
        (done["job_id"], "completed")
    ]
    assert second.query(PROVED) == []  # the journal has it now: the proof is forgotten


# The journal as earlier versions kept it, in the company's DuckDB file.
_DUCKDB_JOURNAL = """
CREATE SCHEMA _dataplane;
CREATE TABLE _dataplane.jobs (
    job_id VARCHAR PRIMARY KEY, type VARCHAR NOT NULL, state VARCHAR NOT NULL,
    input VARCHAR NOT NULL, result VARCHAR, failures VARCHAR NOT NULL,
    idempotency_key VARCHAR, digest VARCHAR NOT NULL, tags VARCHAR[] NOT NULL,
    metadata VARCHAR NOT NULL, workflow_run_id VARCHAR, created_at VARCHAR NOT NULL,
    updated_at VARCHAR NOT NULL, ended_at VARCHAR, last_event_id BIGINT NOT NULL,
    traceparent VARCHAR);
CREATE TABLE _dataplane.changes (
    event_id BIGINT NOT NULL, job_id VARCHAR NOT NULL, type VARCHAR NOT NULL,
    tags VARCHAR[] NOT NULL, workflow_run_id VARCHAR, job VARCHAR NOT NULL);
"""


async def test_a_journal_kept_in_duckdb_moves_to_its_own_file(
    start_plane: PlaneFactory, tmp_path: Path
) -> None:
    job = {
        "job_id": "0b5e2f7a-1c3d-4e5f-8a9b-0c1d2e3f4a5b", "type": "execute-dml",
        "state": "completed", "input": {"nql": "DELETE FROM company_data.x"},
        "result": {"rows_affected": 0}, "failures": [], "idempotency_key": "k1",
        "tags": ["workflow_enqueued"], "metadata": {"workflow_run_id": "r1"},
        "created_at": "2026-11-24T01:33:37.000001Z", "updated_at": "2026-11-24T01:33:37.000003Z",
        "ended_at": "2026-11-24T01:33:37.000003Z",
    }  # fmt: skip
    (tmp_path / "d").mkdir(mode=0o700)
    with duckdb.connect(str(tmp_path / "d" / "default.duckdb")) as con:
        con.execute(_DUCKDB_JOURNAL)
        con.execute(
            "INSERT INTO _dataplane.jobs VALUES (?, ?, ?, ?, ?, '[]', ?, 'digest', ?, ?, ?, ?, ?,"
            " ?, 3, NULL)",
            [
                job["job_id"], job["type"], job["state"], json.dumps(job["input"]),
                json.dumps(job["result"]), job["idempotency_key"], job["tags"],
                json.dumps(job["metadata"]), "r1", job["created_at"], job["updated_at"],
                job["ended_at"],
            ],
        )  # fmt: skip
        for event_id, state in enumerate(("pending", "running", "completed"), start=1):
            change = json.dumps({**job, "state": state})
            con.execute(
                "INSERT INTO _dataplane.changes VALUES (?, ?, ?, ?, 'r1', ?)",
                [event_id, job["job_id"], job["type"], job["tags"], change],
            )

    running = await start_plane(tmp_path / "d")
    _, moved = await running.client.request("GET", f"/jobs/{job['job_id']}")
    assert {key: moved[key] for key in job} == job
    for query in ("tag=workflow_enqueued", "workflow_run_id=r1"):
        _, listed = await running.client.request("GET", f"/jobs?{query}")
        assert [j["job_id"] for j in listed["records"]] == [job["job_id"]], query
    history = await _events(running, "/jobs/events?last_event_id=0", 3)
    assert [(int(e["id"]), e["data"]["state"]) for e in history] == [
        (1, "pending"), (2, "running"), (3, "completed"),
    ]  # fmt: skip
    assert (
        running.query(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = '_dataplane'"
            " AND table_name IN ('jobs', 'changes')"
        )
        == []
    )
    # The key finds the moved job (its stored digest is not this body's: a conflict).
    body = {"type": job["type"], "input": job["input"], "idempotency_key": "k1"}
    status, _ = await running.client.request("POST", "/jobs", json=body)
    assert status == 409
    # A new job's event ids follow the moved ones.
    new = await running.client.submit("materialize-view", {"nql": "SELECT 1", "dataset_name": "x"})
    history = await _events(running, "/jobs/events?last_event_id=3", 1)
    assert (int(history[0]["id"]), history[0]["data"]["job_id"]) == (4, new["job_id"])


async def test_a_damaged_journal_makes_its_company_unusable_saying_which_file(
    start_plane: PlaneFactory, tmp_path: Path
) -> None:
    first = await start_plane(tmp_path / "d")
    await first.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"})
    await first.plane.aclose()
    for stale in ("default.journal-wal", "default.journal-shm"):
        (tmp_path / "d" / stale).unlink(missing_ok=True)
    with (tmp_path / "d" / "default.journal").open("r+b") as file:  # its header overwritten
        file.write(b"\xff" * 100)

    second = await start_plane(tmp_path / "d")
    status, problem = await second.client.request("GET", "/jobs")
    assert status == 507
    assert problem["detail"] == (
        "company default's database cannot be opened (the job journal default.journal: file is"
        " not a database); its jobs and datasets are unavailable until an operator restores it"
    )
