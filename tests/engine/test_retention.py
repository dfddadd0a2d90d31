"""Retention on a real daemon (gRPC, the local data plane; SQLite and PostgreSQL), its clock
moved by hand: policies per workflow and namespace over the daemon's default; a pass deletes
the ended runs past their limits, never an active run nor one an active run needs; the daemon
runs it in the background; SQLite gives the space back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.conftest import Daemon, eventually
from tests.engine.backends import each_store, stored
from tests.engine.schedule_support import T0
from tests.engine.support import finished, jv, wait_for_event, workflow
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

__all__ = ["each_store"]  # the fixture, used by name

DAY = 86400
MAYBE_FAIL = (
    "  - maybe:\n      if: '${ .fail == true }'\n"
    "      raise: {error: {type: https://example.com/broken, status: 500, title: broken}}\n"
)
PAUSE = "  - pause: {wait: PT1H}\n"
# No background pass during a test that applies retention itself (at most a week apart).
QUIET = {"retention_interval_s": 7 * DAY}


def days(n: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(n * DAY))


async def create(daemon: Daemon, name: str, tasks: str, namespace: str = "analytics") -> str:
    text = workflow(name, tasks).replace("namespace: analytics", f"namespace: {namespace}")
    response = await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    return response.workflow.id


async def run(daemon: Daemon, workflow_id: str, **given: Any) -> pb.Run:
    response = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=workflow_id, input=jv(given))
    )
    return await finished(daemon, response.run.id)


async def waiting(daemon: Daemon, workflow_id: str) -> str:
    response = await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=workflow_id))
    await wait_for_event(daemon, response.run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    return response.run.id


def left(daemon: Daemon, workflow_id: str) -> set[str]:
    return {r for (r,) in stored(daemon, "SELECT id FROM runs WHERE workflow_id = ?", workflow_id)}


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_policies_of_workflows_and_namespaces_over_the_default(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(retention_keep_days=30, retention_keep_failed_days=90, **QUIET)
    wf = await create(daemon, "kept", MAYBE_FAIL)
    default = await daemon.stub.GetRetentionPolicy(pb.GetRetentionPolicyRequest())
    assert default.source == pb.RETENTION_SOURCE_DEFAULT
    assert default.policy.keep_for == days(30)
    assert default.policy.keep_failed_for == days(90)

    got = await daemon.stub.GetRetentionPolicy(pb.GetRetentionPolicyRequest(workflow_id=wf))
    assert (got.HasField("policy"), got.source) == (False, pb.RETENTION_SOURCE_DEFAULT)
    shared = pb.RetentionPolicy(keep_for=days(7))
    response = await daemon.stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(namespace="analytics", policy=shared)
    )
    assert (response.policy, response.source) == (shared, pb.RETENTION_SOURCE_NAMESPACE)
    got = await daemon.stub.GetRetentionPolicy(
        pb.GetRetentionPolicyRequest(namespace="analytics", name="kept")
    )
    assert (got.effective, got.source) == (shared, pb.RETENTION_SOURCE_NAMESPACE)
    own = pb.RetentionPolicy(keep_last=3)
    await daemon.stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(workflow_id=wf, policy=own))
    got = await daemon.stub.GetRetentionPolicy(pb.GetRetentionPolicyRequest(workflow_id=wf))
    assert (got.policy, got.effective, got.source) == (own, own, pb.RETENTION_SOURCE_WORKFLOW)
    # Without a policy, the request removes the workflow's own: the namespace's applies again.
    cleared = await daemon.stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(workflow_id=wf))
    assert not cleared.HasField("policy")
    assert (cleared.effective, cleared.source) == (shared, pb.RETENTION_SOURCE_NAMESPACE)

    for request, field, says in (
        (
            pb.SetRetentionPolicyRequest(policy=shared),
            "namespace",
            "is required: name a workflow, or a namespace",
        ),
        (
            pb.SetRetentionPolicyRequest(
                workflow_id=wf,
                policy=pb.RetentionPolicy(keep_for=days(10), keep_failed_for=days(5)),
            ),
            "policy.keep_failed_for",
            "must be at least keep_for",
        ),
        (
            pb.SetRetentionPolicyRequest(
                namespace="analytics", policy=pb.RetentionPolicy(keep_for=days(-1))
            ),
            "policy.keep_for",
            "must be between 1 second and 100 years",
        ),
        (
            pb.SetRetentionPolicyRequest(namespace="bad name!", policy=shared),
            "namespace",
            "",
        ),
    ):
        error = await refused(daemon.stub.SetRetentionPolicy(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(f"{field}: {says}"), error.details()


async def test_age_limits_let_failed_runs_stay_longer(
    each_store: Callable[..., Awaitable[Daemon]],
) -> None:
    clock = ManualClock(T0)
    daemon = await each_store(clock=clock, **QUIET)
    wf = await create(daemon, "aged", MAYBE_FAIL)
    other = await create(daemon, "elsewhere", MAYBE_FAIL, namespace="other")
    completed = {(await run(daemon, wf)).id for _ in range(3)}
    failed = await run(daemon, wf, fail=True)
    assert failed.status == pb.RUN_STATUS_FAILED
    untouched = (await run(daemon, other)).id
    policy = pb.RetentionPolicy(keep_for=days(1), keep_failed_for=days(3))
    await daemon.stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(namespace="analytics", policy=policy)
    )
    # Nothing is old enough yet.
    done = await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest())
    assert (done.deleted_runs, done.workflows) == (0, 1)

    clock.advance(timedelta(days=2))
    dry = await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest(dry_run=True))
    assert (dry.deleted_runs, dry.protected_runs, dry.dry_run) == (3, 0, True)
    assert left(daemon, wf) == completed | {failed.id}
    done = await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest(namespace="analytics"))
    assert (done.deleted_runs, done.dry_run) == (3, False)
    assert left(daemon, wf) == {failed.id}
    clock.advance(timedelta(days=2))
    done = await daemon.stub.ApplyRetention(
        pb.ApplyRetentionRequest(namespace="analytics", name="aged")
    )
    assert done.deleted_runs == 1
    assert left(daemon, wf) == set()
    assert left(daemon, other) == {untouched}  # another namespace, no policy
    error = await refused(daemon.stub.GetRun(pb.GetRunRequest(run_id=failed.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # A watcher resuming from before what went is told.
    error = await refused(_first(daemon.stub.WatchRuns(pb.WatchRunsRequest(after_global_seq=1))))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "the oldest kept sequence is" in (error.details() or "")
    if not daemon.app.settings.store:
        # A store created by this workflowd gives deleted runs' pages back to the file system.
        assert stored(daemon, "PRAGMA auto_vacuum") == [(2,)]
        assert stored(daemon, "PRAGMA freelist_count") == [(0,)]


async def _first(stream: Any) -> Any:
    async for response in stream:
        stream.cancel()
        return response
    return None


async def test_retention_never_deletes_an_active_run_nor_one_an_active_run_needs(
    each_store: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await each_store(**QUIET)
    wf = await create(daemon, "guarded", PAUSE + MAYBE_FAIL)
    original = await waiting(daemon, wf)
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=original))
    await finished(daemon, original)
    ended = []
    for _ in range(4):
        run_id = await waiting(daemon, wf)
        await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
        ended.append((await finished(daemon, run_id)).id)
    active = await waiting(daemon, wf)
    rerun = await daemon.stub.RerunRun(pb.RerunRunRequest(run_id=original, start="start"))
    await wait_for_event(daemon, rerun.run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)

    # The newest ended run stays; of the older ended ones, the re-run's original stays too.
    policy = pb.RetentionPolicy(keep_last=1)
    await daemon.stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(workflow_id=wf, policy=policy)
    )
    dry = await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest(workflow_id=wf, dry_run=True))
    assert (dry.deleted_runs, dry.protected_runs) == (3, 1)
    done = await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest(workflow_id=wf))
    assert (done.deleted_runs, done.protected_runs) == (3, 1)
    assert left(daemon, wf) == {original, ended[-1], active, rerun.run.id}
    # Once the re-run has ended, its original may go; the active run never.
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=rerun.run.id))
    await finished(daemon, rerun.run.id)
    done = await daemon.stub.ApplyRetention(pb.ApplyRetentionRequest(workflow_id=wf))
    assert (done.deleted_runs, done.protected_runs) == (2, 0)
    assert left(daemon, wf) == {active, rerun.run.id}


async def test_the_daemon_applies_its_default_in_the_background(
    each_store: Callable[..., Awaitable[Daemon]],
) -> None:
    clock = ManualClock(T0)
    daemon = await each_store(clock=clock, retention_keep_days=1, retention_interval_s=3600)
    wf = await create(daemon, "background", MAYBE_FAIL)
    runs = {(await run(daemon, wf)).id for _ in range(3)}
    assert left(daemon, wf) == runs
    clock.advance(timedelta(hours=25))

    async def gone() -> bool:
        return left(daemon, wf) == set()

    await eventually(gone)
