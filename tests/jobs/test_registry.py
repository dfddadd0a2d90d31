"""The registry's bounds on the ends it keeps for waiters to come: what it lets go is read."""

from __future__ import annotations

import pytest

from workflowd.domain.jobs import JobInfo, JobState
from workflowd.jobs import registry as registry_module
from workflowd.jobs.parse import job_info_from_json
from workflowd.jobs.registry import WaiterRegistry


def _end(job_id: str) -> dict[str, object]:
    return {
        "job_id": job_id,
        "type": "execute-dml",
        "state": "completed",
        "input": {"nql": "SELECT 1"},
        "result": {"rows_affected": 1},
        "failures": [],
        "idempotency_key": None,
        "tags": [],
        "metadata": {},
        "created_at": "2026-12-06T06:00:00.000000Z",
        "updated_at": "2026-12-06T06:00:00.000000Z",
        "ended_at": "2026-12-06T06:00:00.000000Z",
    }


def _info(job_id: str, state: str) -> JobInfo:
    data = _end(job_id) | {"state": state}
    if state == "pending":
        data |= {"result": None, "ended_at": None}
    return job_info_from_json(data)


async def test_a_kept_end_answers_its_waiter_and_one_let_go_for_room_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "MAX_KEPT_ENDS", 3)
    registry = WaiterRegistry()
    live_since = 0.0  # the stream has been live since before every POST here
    registry.sending()  # job-1's POST is on its way; the stream tells of its end first
    registry.keep_end("job-1", _end("job-1"), 100, now=2.0)
    registry.sent(1.0, _info("job-1", "pending"))
    kept = registry.add("job-1", now=3.0, live_since=live_since)
    assert kept.result().state is JobState.COMPLETED
    assert registry.take_fresh() == []
    # job-2's end comes while its POST is out, then three more: job-2's is let go for room.
    registry.sending()
    for i, job_id in enumerate(("job-2", "job-3", "job-4", "job-5")):
        registry.keep_end(job_id, _end(job_id), 100, now=4.0 + i)
    registry.sent(3.5, _info("job-2", "pending"))
    waiting = registry.add("job-2", now=9.0, live_since=live_since)
    assert not waiting.done()
    assert registry.take_fresh() == ["job-2"]  # read, since its end may be the one let go
    # A job sent after that loss trusts the stream: no read, its end will come.
    registry.sending()
    registry.sent(10.0, _info("job-6", "pending"))
    later = registry.add("job-6", now=11.0, live_since=live_since)
    assert not later.done()
    assert registry.take_fresh() == []
    registry.observe(_info("job-6", "completed"))
    assert later.result().state is JobState.COMPLETED


async def test_ends_are_kept_only_while_a_waiter_may_come() -> None:
    registry = WaiterRegistry()
    registry.keep_end("job-1", _end("job-1"), 100, now=1.0)  # no POST out, none sent
    assert not registry.listening
    waiting = registry.add("job-1", now=2.0, live_since=0.0)
    assert not waiting.done()
    assert registry.take_fresh() == ["job-1"]
