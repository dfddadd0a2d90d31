"""Jobs API faults between a real daemon and the real data plane (through `FaultProxy`).

503 bursts, connection resets, stalls, malformed answers, dropped event streams, a job that
vanishes, and an outage past the retry deadline: each run must end in the right state, with
exactly one job per task in the data plane, and the daemon must keep serving.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Daemon, eventually
from tests.engine.conftest import Rig
from tests.engine.fault_proxy import FaultProxy
from tests.engine.support import (
    SLOW_NQL,
    Plane,
    apply,
    finished,
    occupy_workers,
    trigger,
    wait_for_event,
    workflow,
)
from workflowd.v1 import workflow_service_pb2 as pb

COMPLETED_TASK = pb.TASK_STATUS_COMPLETED
WORKERS = 2  # the data plane's worker threads


def trivial(name: str, count: int = 3) -> str:
    """A workflow of `count` quick, independent tasks."""
    dataset = name.replace("-", "_")
    tasks = "".join(
        f"  - t{i}:\n"
        f"      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT {i} AS one, datasetName: {dataset}_v{i}}}\n"
        for i in range(count)
    )
    return workflow(name, tasks)


def slow_then_two(name: str) -> str:
    """A first task whose job runs until cancelled, then two that must be skipped."""
    return workflow(
        name,
        f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: {name}_slow}}
  - after:
      call: RefreshMaterializedView
      with: {{datasetName: {name}_slow}}
  - last:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: SELECT 1 AS one, datasetName: {name}_last}}
""",
    )


async def run_to_end(daemon: Daemon, text: str) -> pb.Run:
    wf = await apply(daemon, text)
    return await finished(daemon, (await trigger(daemon, wf.id)).id)


async def assert_completed_once(plane: Plane, run: pb.Run) -> None:
    """COMPLETED, every task COMPLETED, and exactly one completed job per task."""
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert [t.status for t in run.tasks] == [COMPLETED_TASK] * len(run.tasks)
    jobs = await plane.jobs_for_run(run.id)
    assert sorted(j["metadata"]["task_name"] for j in jobs) == sorted(t.name for t in run.tasks)
    assert {j["job_id"] for j in jobs} == {t.job_id for t in run.tasks}
    assert {j["state"] for j in jobs} == {"completed"}


async def assert_still_serves(rig: Rig, daemon: Daemon, name: str) -> None:
    health = health_pb2_grpc.HealthStub(daemon.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    listed = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert listed.workflows
    await assert_completed_once(rig.plane, await run_to_end(daemon, trivial(name, 2)))


async def client_has_read(proxy: FaultProxy, job_id: str) -> bool:
    """The daemon's first look at a job it awaits (`GET /jobs?ids=…`) went through."""
    return any(job_id in s.query and s.outcome == "forwarded" for s in proxy.seen("GET", "/jobs"))


async def cancel_directly(plane: Plane, job_id: str) -> None:
    async with plane.session.post(f"/jobs/{job_id}/cancel") as resp:
        assert resp.status in (200, 409), await resp.text()


# --- 1. 503 bursts -------------------------------------------------------------------------


async def test_503_bursts_on_submit_and_reads_are_retried(rig: Rig) -> None:
    daemon = await rig.start()
    rig.proxy.fail_next(3, 503, method="POST", path="/jobs")
    # Every read (list, job, and the event stream) answers 503 until 4 have been refused.
    rig.proxy.fail_next(4, 503, method="GET", path_prefix="/jobs")

    run = await run_to_end(daemon, trivial("burst"))

    await assert_completed_once(rig.plane, run)
    assert rig.proxy.injected["fail"] == 7
    refused_posts = [s for s in rig.proxy.seen("POST", "/jobs") if s.outcome == "fail"]
    assert len(refused_posts) == 3


# --- 2. connection resets ------------------------------------------------------------------


async def test_resets_after_the_job_was_created_keep_one_job_per_task(rig: Rig) -> None:
    daemon = await rig.start()
    # The data plane creates the job, then the answer is lost to a TCP reset: the retry with
    # the same idempotency key must get the same job back, not a second one.
    rig.proxy.reset_next(2, method="POST", path="/jobs")
    rig.proxy.reset_next(1, method="POST", path="/jobs", forward=False)

    run = await run_to_end(daemon, trivial("resets"))

    await assert_completed_once(rig.plane, run)
    assert rig.proxy.injected["reset"] == 3
    forwarded = [s.status for s in rig.proxy.seen("POST", "/jobs") if s.outcome == "forwarded"]
    assert 200 in forwarded  # an idempotent replay answered with the existing job


# --- 3. stalls -----------------------------------------------------------------------------


async def test_stall_longer_than_the_request_timeout_is_retried(rig: Rig) -> None:
    daemon = await rig.start(jobs_request_timeout_s=0.5)
    assert daemon.app.jobs is not None
    rig.proxy.stall_next(2, 2.0, method="POST", path="/jobs")

    run = await run_to_end(daemon, trivial("stalls"))

    await assert_completed_once(rig.plane, run)
    assert rig.proxy.injected["stall"] == 2
    assert daemon.app.jobs.stats["api_errors"] >= 2


# --- 4. a job that vanishes ----------------------------------------------------------------


async def test_job_vanishing_while_awaited_fails_the_run(rig: Rig) -> None:
    daemon = await rig.start()
    wf = await apply(daemon, slow_then_two("vanish"))
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    await eventually(lambda: client_has_read(rig.proxy, submitted.job_id))
    # The jobs system loses the job and, with it, the client's place in the event stream.
    rig.proxy.vanish(submitted.job_id)
    rig.proxy.drop_streams(reset=True)

    run = await finished(daemon, run.id)

    assert run.status == pb.RUN_STATUS_FAILED
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_FAILED]  # later tasks never start
    assert run.error.instance == "/do/0/slow"
    assert "slow" in run.error.title
    assert "vanished" in run.error.title
    assert submitted.job_id in run.error.title
    assert run.error.type.endswith("/errors/runtime")
    assert run.tasks[0].error.title == run.error.title
    assert rig.proxy.injected["vanish"] >= 1
    await cancel_directly(rig.plane, submitted.job_id)
    await assert_still_serves(rig, daemon, "after-vanish")


async def test_job_vanishing_right_after_creation_fails_its_task(rig: Rig) -> None:
    daemon = await rig.start()
    rig.proxy.vanish_next_created(1)

    run = await run_to_end(daemon, trivial("gone"))

    assert run.status == pb.RUN_STATUS_FAILED
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_FAILED]  # later tasks never start
    assert run.error.instance == "/do/0/t0"
    assert "t0" in run.error.title
    assert "vanished" in run.error.title
    jobs = await rig.plane.jobs_for_run(run.id)
    assert [j["metadata"]["task_name"] for j in jobs] == ["t0"]  # no job for skipped tasks
    await assert_still_serves(rig, daemon, "after-gone")


# --- 5. malformed answers ------------------------------------------------------------------


async def test_malformed_answers_are_retried_as_transport_faults(rig: Rig) -> None:
    daemon = await rig.start()
    rig.proxy.malformed_next(3, method="POST", path="/jobs")
    rig.proxy.malformed_next(2, method="GET", path="/jobs")

    run = await run_to_end(daemon, trivial("garbled"))

    await assert_completed_once(rig.plane, run)
    garbled_posts = [s for s in rig.proxy.seen("POST", "/jobs") if s.outcome == "malformed"]
    assert len(garbled_posts) == 3


# --- 6. unreachable past the retry deadline ------------------------------------------------


async def test_outage_past_the_deadline_on_submit_is_a_communication_error(rig: Rig) -> None:
    daemon = await rig.start(jobs_retry_deadline_s=1.0)
    rig.proxy.fail_next(None, 503, path_prefix="/")

    run = await run_to_end(daemon, trivial("down"))

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.error.type.endswith("/errors/communication")
    assert run.error.instance == "/do/0/t0"
    assert "t0" in run.error.title
    assert "503" in run.error.detail
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_FAILED]  # later tasks never start
    assert rig.proxy.injected["fail"] >= 2
    assert await rig.plane.jobs_for_run(run.id) == []
    rig.proxy.heal()
    await assert_still_serves(rig, daemon, "after-outage")


async def test_outage_past_the_deadline_while_awaiting_is_a_communication_error(
    rig: Rig,
) -> None:
    daemon = await rig.start(jobs_retry_deadline_s=1.0)
    wf = await apply(daemon, slow_then_two("blackout"))
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    rig.proxy.fail_next(None, 503, path_prefix="/")
    rig.proxy.drop_streams()

    run = await finished(daemon, run.id)

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.error.type.endswith("/errors/communication")
    assert run.error.instance == "/do/0/slow"
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_FAILED]  # later tasks never start
    rig.proxy.heal()
    await cancel_directly(rig.plane, submitted.job_id)
    await assert_still_serves(rig, daemon, "after-blackout")


# --- 7. dropped event streams --------------------------------------------------------------


async def test_dropped_event_streams_resume_and_the_run_completes(rig: Rig) -> None:
    daemon = await rig.start()
    # Cut each of the next three stream connections right after it forwarded one event.
    rig.proxy.cut_streams_after(1, times=3)
    wf = await apply(daemon, trivial("drops", 5))
    run = await trigger(daemon, wf.id)
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_STARTED, 2)
    rig.proxy.drop_streams()  # and one more, whenever task 2 starts

    run = await finished(daemon, run.id)

    await assert_completed_once(rig.plane, run)
    assert rig.proxy.injected["drop"] >= 1
    streams = rig.proxy.seen("GET", "/jobs/events")
    assert len(streams) >= 2
    assert any(s.last_event_id for s in streams[1:]), "reconnections must resume"
    assert rig.proxy.injected["reset_event"] == 0


# --- beyond the list: garbled events, definite refusals of reads --------------------------


async def test_garbled_terminal_event_does_not_strand_the_run(rig: Rig) -> None:
    daemon = await rig.start()
    blockers = await occupy_workers(rig.plane, WORKERS)
    wf = await apply(daemon, trivial("garbled-event", 1))
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)

    await eventually(lambda: client_has_read(rig.proxy, submitted.job_id))  # still pending
    # The job's one terminal event reaches the client garbled (a truncated line).
    rig.proxy.garble_events(1, state="completed")
    for job_id in blockers:
        await cancel_directly(rig.plane, job_id)

    async def job_completed() -> bool:
        job = await rig.plane.job(submitted.job_id)
        return bool(job["state"] == "completed")

    await eventually(job_completed)
    await eventually(lambda: garbled(rig.proxy))
    try:
        async with asyncio.timeout(5):
            run = await finished(daemon, run.id)
    except TimeoutError:
        now = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
        raise AssertionError(
            f"run still {pb.RunStatus.Name(now.status)} 5 s after its only job completed: the "
            "jobs client dropped the garbled event (advancing Last-Event-ID past it) and never "
            "re-read the job"
        ) from None
    await assert_completed_once(rig.plane, run)


async def garbled(proxy: FaultProxy) -> bool:
    return proxy.injected["garbled_event"] == 1


async def test_refused_status_reads_fail_the_task_not_the_engine(rig: Rig) -> None:
    daemon = await rig.start()
    # Submissions pass; every read of job state is refused outright (say, a revoked token).
    rig.proxy.fail_next(None, 401, method="GET", path_prefix="/jobs")

    run = await run_to_end(daemon, trivial("refused", 2))

    assert run.status == pb.RUN_STATUS_FAILED
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_FAILED]
    assert "internal error" not in run.error.title, run.error
    assert run.error.instance == "/do/0/t0", run.error
    assert "t0" in run.error.title, run.error
    rig.proxy.heal()
    await assert_still_serves(rig, daemon, "after-refused")
