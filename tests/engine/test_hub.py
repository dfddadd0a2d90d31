"""The event hub's slow-subscriber path, end to end: a watcher whose hub queue overflows is marked
lagging, and its stream is then served from the store, with every event exactly once, in order.

The daemon here is the real one with a hub of capacity 1, so overflow is certain: one commit's
events (a task's end, its job id and the next task's start) are published in one go, more than
the queue holds, while the clients hold their streams without reading them."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon, daemon_settings, eventually, stored_specifications
from tests.engine.support import TERMINAL, apply, events_until_end, trigger, workflow
from tests.spec.official_schema import assert_valid_under_official_schema
from workflowd.app import App
from workflowd.domain.run import RunEvent
from workflowd.engine.hub import EventHub, Subscription
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

TASKS = 16
RUNS = 4
MANY_QUICK_TASKS = workflow(
    "many-quick",
    "".join(
        f"  - t{i}:\n"
        f"      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT {i} AS n, datasetName: quick_{i}}}\n"
        for i in range(TASKS)
    ),
)


@pytest.fixture
async def small_hub_daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """The real daemon, built with a hub whose subscribers hold a single event (the production
    default is EventHub()'s); the hub is handed to the engine at `start`."""
    app = App(daemon_settings(tmp_path / "daemon"))
    app.hub = EventHub(capacity=1)
    await app.start()
    address = f"127.0.0.1:{app.grpc_port}"
    channel = grpc.aio.insecure_channel(address)
    daemon = Daemon(app, address, channel, pb_grpc.WorkflowServiceStub(channel), tmp_path)
    yield daemon
    stored = await stored_specifications(daemon)
    await channel.close()
    await app.drain()
    for text in stored:
        assert_valid_under_official_schema(text)


class LagSpy:
    """Counts, per subscription, the events offered to it and the times it turned lagging."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offered: collections.Counter[int] = collections.Counter()
        self.lagged: collections.Counter[int] = collections.Counter()
        original = Subscription.offer

        def offer(sub: Subscription, event: RunEvent) -> None:
            was_lagging = sub.lagging
            original(sub, event)
            self.offered[id(sub)] += 1
            if sub.lagging and not was_lagging:
                self.lagged[id(sub)] += 1

        monkeypatch.setattr(Subscription, "offer", offer)


def assert_contiguous_from_one(events: list[pb.RunEvent]) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert events[-1].run_status in TERMINAL


async def test_a_watcher_that_falls_behind_is_served_from_the_store_exactly_once_in_order(
    small_hub_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = small_hub_daemon
    spy = LagSpy(monkeypatch)
    wf = await apply(daemon, MANY_QUICK_TASKS)

    # Both streams are subscribed (their headers arrived) and then left unread.
    many = daemon.stub.WatchRuns(pb.WatchRunsRequest(workflow_id=wf.id))
    await many.wait_for_connection()
    first = await trigger(daemon, wf.id)
    one = daemon.stub.WatchRun(pb.WatchRunRequest(run_id=first.id))
    await one.wait_for_connection()
    runs = [first, *[await trigger(daemon, wf.id) for _ in range(RUNS - 1)]]

    async def all_ended() -> bool:
        for run in runs:
            got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))
            if got.run.status not in TERMINAL:
                return False
        return True

    await eventually(all_ended, timeout_s=60)
    # Two subscriptions, and each overflowed its queue (more than once) while unread.
    assert len(spy.offered) == 2
    assert set(spy.lagged) == set(spy.offered)

    # Now read: the per-run stream has the whole story, once, in order, and ends by itself.
    async with asyncio.timeout(30):
        watched_one = [response.event async for response in one]
    assert_contiguous_from_one(watched_one)
    assert len(watched_one) == 2 + 3 * TASKS + 1  # created, started, 3 per task, completed
    assert watched_one == await events_until_end(daemon, first.id)

    collected: list[pb.RunEvent] = []
    async with asyncio.timeout(30):
        async for response in many:
            collected.append(response.event)
            if sum(e.run_status in TERMINAL for e in collected) == RUNS:
                break
    many.cancel()
    global_seqs = [e.global_seq for e in collected]
    assert global_seqs == sorted(set(global_seqs)), "a repeat or a step back in WatchRuns"
    assert {e.run_id for e in collected} == {r.id for r in runs}
    for run in runs:
        per_run = [e for e in collected if e.run_id == run.id]
        assert_contiguous_from_one(per_run)
        assert per_run == await events_until_end(daemon, run.id)
