"""Unscheduling takes effect at once (issue 16, item 10): the unschedule is one write that goes
ahead of the company's backlog of writes (its runs' and fires' changes), so it commits in the
next batch instead of after the backlog it is meant to stop (so does a cancel request); once
it has answered, no fire creates a run, even one whose read of the schedule came before it."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import QUICK_TASK, T0, activate, create, runs_of, scheduled
from tests.engine.support import trigger, workflow
from tests.scheduler.manual_clock import ManualClock
from workflowd.domain.fairness import acting_for
from workflowd.domain.run import NewRun, RunTrigger
from workflowd.domain.schedule import FireRequest
from workflowd.store.sql import Conn
from workflowd.store.writer import MAX_BATCH
from workflowd.v1 import workflow_service_pb2 as pb

T = TypeVar("T")


def nothing(conn: Conn) -> None:
    conn.execute("SELECT 1")


class Blocker:
    """A write that holds the writer thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: Conn) -> None:
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the writer")


async def during_a_backlog(daemon: Daemon, stop: Awaitable[T], probe: str) -> tuple[T, set[str]]:
    """`stop`'s answer, called while the company has twice a batch of writes queued behind a
    busy writer; and what each of those writes saw of `probe` (a query of one value) when it
    ran. A stop that goes ahead of the backlog is seen by all of them, one that waits its turn
    by none."""
    writer = daemon.app.store.db.writer
    blocker = Blocker()
    held = writer.submit(blocker)
    assert await asyncio.to_thread(blocker.entered.wait, 30)
    seen: list[str] = []

    def look(conn: Conn) -> None:
        seen.append(str(conn.execute(probe).fetchone()[0]))

    context = contextvars.copy_context()
    context.run(acting_for.set, "local")  # the company the daemon serves without tokens
    backlog = [context.run(functools.partial(writer.submit, look)) for _ in range(2 * MAX_BATCH)]
    answer = asyncio.ensure_future(stop)

    async def queued() -> bool:
        return writer.queued == len(backlog) + 1

    await eventually(queued)
    blocker.release.set()
    await held
    await asyncio.gather(*backlog)
    assert len(seen) == len(backlog)
    return await answer, set(seen)


async def test_an_unschedule_commits_ahead_of_its_companys_backlog(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon()
    workflow_id = (await create(daemon, scheduled("daily", "{cron: '@daily'}"))).id
    await activate(daemon, workflow_id)
    reply, seen = await during_a_backlog(
        daemon,
        daemon.stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=workflow_id)),
        f"SELECT active FROM schedules WHERE workflow_id = '{workflow_id}'",
    )
    assert seen == {"0"}  # every queued write ran after the unschedule
    assert not reply.schedule.active
    assert reply.schedule.recent_decisions[0].outcome == pb.FIRE_OUTCOME_STOPPED


async def test_a_cancel_request_commits_ahead_of_its_companys_backlog(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    # No jobs system answers: the run's task stays RUNNING, its executor writing nothing.
    daemon = await start_daemon(jobs_url="http://127.0.0.1:9", jobs_retry_deadline_s=60.0)
    workflow_id = (await create(daemon, workflow("waiting", QUICK_TASK))).id
    run_id = (await trigger(daemon, workflow_id)).id

    async def started() -> bool:
        run = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
        return bool(run.tasks) and run.tasks[0].status == pb.TASK_STATUS_RUNNING

    await eventually(started)
    reply, seen = await during_a_backlog(
        daemon,
        daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run_id, reason="stop")),
        f"SELECT status FROM runs WHERE id = '{run_id}'",
    )
    assert seen == {"cancelling"}  # every queued write ran after the cancel request
    assert reply.run.status in (pb.RUN_STATUS_CANCELLING, pb.RUN_STATUS_CANCELLED)


async def test_a_fire_read_before_the_unschedule_creates_no_run_after_it(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    """A fire whose read of the schedule came before the unschedule, and whose transaction
    comes after it, finds the schedule stopped in that transaction and creates nothing."""
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock)
    workflow_id = (await create(daemon, scheduled("minutely", "{cron: '* * * * *'}"))).id
    await activate(daemon, workflow_id, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL)
    store = daemon.app.store
    stale = await store.schedule_of(workflow_id)  # the fire's read: still active
    assert stale is not None
    assert stale.active
    assert stale.next_fire_at is not None
    await daemon.stub.UnscheduleWorkflow(pb.UnscheduleWorkflowRequest(workflow_id=workflow_id))
    instant = stale.next_fire_at
    run = NewRun(
        id=str(uuid.uuid4()),
        company=stale.company,
        workflow_id=workflow_id,
        namespace=stale.namespace,
        name=stale.name,
        version=stale.version,
        trigger=RunTrigger.SCHEDULE,
        input={},
        created_at=instant,
        scheduled_at=instant,
    )
    request = FireRequest(workflow_id, instant, stale.version, False, run, instant)
    result, created_run = await store.fire(request, instant + timedelta(minutes=1))
    assert result.decision is None
    assert created_run is None
    assert await runs_of(daemon, workflow_id) == []
