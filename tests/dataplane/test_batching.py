"""Batched commits: submissions that arrive together commit together, a worker starts and
completes several jobs per transaction, and a slow or failing job in a batch neither holds back
nor undoes the others. DuckDB commits are counted by wrapping `Journal.commit`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dataplane.journal import Journal
from tests.dataplane.dp_support import Client, PlaneFactory, Running, eventually, sse_events

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
LEDGER = {"nql": "SELECT 0::INTEGER AS n WHERE false", "dataset_name": "ledger"}


@dataclass
class Commits:
    """Every commit of job changes: (kind, number of jobs). `hold`, while set up, keeps the
    first submission commit waiting until it is set."""

    made: list[tuple[str, int]] = field(default_factory=list)
    hold: threading.Event | None = None
    held: bool = False

    def sizes(self, kind: str) -> list[int]:
        return [size for made, size in self.made if made == kind]


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Commits]:
    record = Commits()
    original = Journal.commit

    def counted(self: Journal, jobs: Any, **options: Any) -> Any:
        if jobs:
            kind = "submit" if options.get("digests") is not None else "change"
            record.made.append(("effect" if options.get("proved") else kind, len(jobs)))
            if kind == "submit" and record.hold is not None and not record.held:
                record.held = True
                assert record.hold.wait(30), "the test never let the first submission commit"
        return original(self, jobs, **options)

    monkeypatch.setattr(Journal, "commit", counted)
    yield record
    if record.hold is not None:
        record.hold.set()


def _insert(n: int) -> dict[str, str]:
    return {"nql": f"INSERT INTO company_data.ledger VALUES ({n})"}


async def _metric(client: Client, name: str) -> float:
    async with client.session.get(client.url + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def _state(client: Client, job_id: str, state: str) -> None:
    async def reached() -> bool:
        _, job = await client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == state)

    await eventually(reached)


async def _blocked(start_plane: PlaneFactory, **options: Any) -> tuple[Running, str]:
    """A one-worker plane with a ledger, its worker busy with a slow job: what is submitted
    now queues up, and the worker takes it as one batch once the slow job is cancelled."""
    dp = await start_plane(workers=1, **options)
    await dp.client.run("materialize-view", LEDGER)
    blocker = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    await _state(dp.client, blocker["job_id"], "running")
    return dp, blocker["job_id"]


async def _history(dp: Running) -> dict[str, list[str]]:
    """Each job's states in event order, from the whole change log; its ids must run 1..N."""
    [(last,)] = dp.journal("SELECT max(event_id) FROM changes")
    async with dp.client.session.get(dp.client.url + "/jobs/events?last_event_id=0") as response:
        events = [e async for e in sse_events(response, limit=last)]
    assert [int(e["id"]) for e in events] == list(range(1, last + 1))
    history: dict[str, list[str]] = {}
    for event in events:
        history.setdefault(event["data"]["job_id"], []).append(event["data"]["state"])
    return history


async def test_submissions_that_arrive_together_commit_together(
    dp: Running, commits: Commits
) -> None:
    hold = commits.hold = threading.Event()
    jobs = 30
    posts = [
        asyncio.create_task(dp.client.submit("execute-dml", _insert(n), idempotency_key=f"k{n}"))
        for n in range(jobs)
    ]

    async def all_arrived() -> bool:
        # Those that came before the writer began are in the held commit; the rest wait.
        held = commits.sizes("submit")
        waiting = await _metric(dp.client, 'dataplane_submissions_waiting{company="default"}')
        return bool(held) and held[0] + waiting == jobs

    await eventually(all_arrived)
    hold.set()
    submitted = await asyncio.gather(*posts)
    first = commits.sizes("submit")[0]
    assert commits.sizes("submit") == [first, jobs - first]
    assert len({job["job_id"] for job in submitted}) == jobs
    assert [job["idempotency_key"] for job in submitted] == [f"k{n}" for n in range(jobs)]
    # The same key twice in one batch is one job.
    again = await asyncio.gather(
        *(dp.client.submit("execute-dml", _insert(0), idempotency_key="k0") for _ in range(3))
    )
    assert {job["job_id"] for job in again} == {submitted[0]["job_id"]}


async def test_a_burst_of_jobs_costs_far_fewer_than_three_commits_each(
    start_plane: PlaneFactory, commits: Commits
) -> None:
    dp, blocker = await _blocked(start_plane, batch_window_s=10.0)
    jobs = 40
    submitted = await asyncio.gather(
        *(dp.client.submit("execute-dml", _insert(n)) for n in range(jobs))
    )
    commits.made.clear()
    await dp.client.request("POST", f"/jobs/{blocker}/cancel")
    done = [await dp.client.wait(job["job_id"]) for job in submitted]
    assert {job["state"] for job in done} == {"completed"}
    # The worker takes at most 32 jobs at once: two batches, each started in one commit and
    # completed, effects included, in another.
    assert commits.sizes("effect") == [32, 8]
    assert sorted(commits.sizes("change")) == [1, 1, 8, 32]  # and the blocker's cancel
    assert len(commits.made) < 3 * jobs
    assert dp.query("SELECT n, count(*) FROM company_data.ledger GROUP BY n ORDER BY n") == [
        (n, 1) for n in range(jobs)
    ]
    history = await _history(dp)
    for job in submitted:
        assert history[job["job_id"]] == ["pending", "running", "completed"]


async def test_a_slow_job_does_not_hold_back_the_quick_job_batched_before_it(
    start_plane: PlaneFactory,
) -> None:
    dp, blocker = await _blocked(start_plane, batch_window_s=1.0)
    quick = await dp.client.submit("execute-dml", _insert(1))
    slow = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow2"})
    behind = await dp.client.submit("execute-dml", _insert(2))
    await dp.client.request("POST", f"/jobs/{blocker}/cancel")
    # The slow job ran speculatively after the quick one, in its transaction; once past the
    # window it was interrupted, the quick one committed alone and the slow one started over.
    assert (await dp.client.wait(quick["job_id"]))["state"] == "completed"
    _, still = await dp.client.request("GET", f"/jobs/{slow['job_id']}")
    assert still["state"] == "running"
    status, cancelling = await dp.client.request("POST", f"/jobs/{slow['job_id']}/cancel")
    assert status == 200
    # Its query interrupted (or, on a busy machine, not yet begun again: then it is cancelled
    # at once, as docs/jobs-api.md says).
    assert cancelling["state"] in ("pending_cancellation", "cancelled")
    assert (await dp.client.wait(slow["job_id"]))["state"] == "cancelled"
    assert (await dp.client.wait(behind["job_id"]))["state"] == "completed"
    assert dp.query("SELECT n FROM company_data.ledger ORDER BY n") == [(1,), (2,)]
    history = await _history(dp)
    interrupted = ["pending_cancellation"] if cancelling["state"] == "pending_cancellation" else []
    assert history[slow["job_id"]] == ["pending", "running", *interrupted, "cancelled"]
    assert history[quick["job_id"]] == ["pending", "running", "completed"]


async def test_a_failing_job_fails_alone_and_the_others_take_effect_once(
    start_plane: PlaneFactory, commits: Commits
) -> None:
    dp, blocker = await _blocked(start_plane, batch_window_s=10.0)
    first = await dp.client.submit("execute-dml", _insert(1))
    failing = await dp.client.submit("execute-dml", {"nql": "DELETE FROM company_data.nowhere"})
    last = await dp.client.submit("execute-dml", _insert(3))
    commits.made.clear()
    await dp.client.request("POST", f"/jobs/{blocker}/cancel")
    states = [(await dp.client.wait(j["job_id"]))["state"] for j in (first, failing, last)]
    assert states == ["completed", "failed", "completed"]
    _, failed = await dp.client.request("GET", f"/jobs/{failing['job_id']}")
    assert [f["message"] for f in failed["failures"]] == ["no dataset 'nowhere' in company_data"]
    assert dp.query("SELECT n FROM company_data.ledger ORDER BY n") == [(1,), (3,)]
    # The failure rolled back the first job's effect, which committed again on its own; the
    # failing job then ran first in a transaction, where its failure is its own.
    assert commits.sizes("effect") == [1, 1]


async def test_a_job_waiting_in_its_batch_is_cancelled_at_once(
    start_plane: PlaneFactory,
) -> None:
    dp, blocker = await _blocked(start_plane, batch_window_s=10.0)
    slow = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow2"})
    waiting = await dp.client.submit("execute-dml", _insert(1))
    await dp.client.request("POST", f"/jobs/{blocker}/cancel")
    await _state(dp.client, waiting["job_id"], "running")  # taken with the slow one
    status, cancelled = await dp.client.request("POST", f"/jobs/{waiting['job_id']}/cancel")
    assert (status, cancelled["state"]) == (200, "cancelled")
    await dp.client.request("POST", f"/jobs/{slow['job_id']}/cancel")
    assert (await dp.client.wait(slow["job_id"]))["state"] == "cancelled"
    after = await dp.client.run("execute-dml", _insert(2))
    assert after["state"] == "completed"
    assert dp.query("SELECT n FROM company_data.ledger") == [(2,)]
