"""Every task kind through the real daemon and the real data plane: instances as GetRun and the
events show them, one job per call instance (counted in the data plane), and the choices where
the DSL is silent (docs/workflow-language.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from google.protobuf import json_format, struct_pb2

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import T0
from tests.engine.support import (
    SLOW_NQL,
    Plane,
    apply,
    events_until_end,
    finished,
    trigger,
    wait_for_event,
    workflow,
)
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

QUICK = "{call: CreateMaterializedViewIfNotExists, with: {nql: SELECT 1 AS one, datasetName: VIEW}}"
SLOWER = SLOW_NQL.replace("300000", "15000")


def quick(view: str) -> str:
    return QUICK.replace("VIEW", view)


def value(data: object) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


async def jobs_by_key(plane: Plane, run_id: str) -> dict[str, dict[str, object]]:
    jobs = await plane.jobs_for_run(run_id)
    keys = [str(j["idempotency_key"]).split(":", 1)[1] for j in jobs]
    assert len(keys) == len(set(keys)), "an instance had two jobs"
    return dict(zip(keys, jobs, strict=True))


def instances(run: pb.Run) -> list[tuple[str, str]]:
    return [(t.key, pb.TaskStatus.Name(t.status).removeprefix("TASK_STATUS_")) for t in run.tasks]


async def test_a_loop_over_datasets_makes_one_job_per_iteration(
    daemon: Daemon, plane: Plane
) -> None:
    text = workflow(
        "loop",
        """\
  - each:
      for: {each: name, in: .names}
      do:
        - build:
            call: CreateMaterializedViewIfNotExists
            with: {nql: SELECT 1 AS one, datasetName: '${ $name }'}
            output: {as: '{built: ($index), id: .datasetId}'}
""",
    )
    run = await trigger(
        daemon, (await apply(daemon, text)).id, input=value({"names": ["a", "b", "c"]})
    )
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert instances(done) == [
        ("/do/0/each", "COMPLETED"),
        ("/do/0/each/do/0/build@i0", "COMPLETED"),
        ("/do/0/each/do/0/build@i1", "COMPLETED"),
        ("/do/0/each/do/0/build@i2", "COMPLETED"),
    ]
    assert [list(t.iteration) for t in done.tasks[1:]] == [[0], [1], [2]]
    assert {t.parent for t in done.tasks[1:]} == {"/do/0/each"}
    assert json_format.MessageToDict(done.output)["built"] == 2
    jobs = await jobs_by_key(plane, run.id)
    assert sorted(jobs) == [f"/do/0/each/do/0/build@i{i}" for i in range(3)]
    assert [jobs[key]["input"]["dataset_name"] for key in sorted(jobs)] == ["a", "b", "c"]


async def test_fork_branches_have_their_jobs_in_flight_at_once(
    daemon: Daemon, plane: Plane
) -> None:
    text = workflow(
        "fork",
        f"""\
  - both:
      fork:
        branches:
          - left:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: "{SLOWER}", datasetName: left_view}}
          - right:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: "{SLOWER}", datasetName: right_view}}
""",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    events = await events_until_end(daemon, run.id)
    kinds = [(e.type, e.task_name) for e in events]
    submitted = [i for i, (k, _) in enumerate(kinds) if k == pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED]
    first_end = next(i for i, (k, n) in enumerate(kinds) if k == pb.RUN_EVENT_TYPE_TASK_COMPLETED)
    assert len(submitted) == 2
    assert max(submitted) < first_end  # both jobs were submitted before either ended
    done = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    output = json_format.MessageToDict(done.output)
    assert [o["datasetName"] for o in output] == ["left_view", "right_view"]


async def test_compete_cancels_the_losing_branch_and_its_job(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "race",
        f"""\
  - race:
      fork:
        compete: true
        branches:
          - slow:
              call: CreateMaterializedViewIfNotExists
              with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
          - fast: {quick("fast_view")}
""",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert json_format.MessageToDict(done.output)["datasetName"] == "fast_view"
    by_key = {t.key: t for t in done.tasks}
    loser = by_key["/do/0/race/fork/branches/0/slow"]
    assert loser.status == pb.TASK_STATUS_CANCELLED
    assert "branch fast completed first" in loser.reason
    assert f"its job {loser.job_id} was cancelled" in loser.reason

    async def cancelled() -> bool:
        return (await plane.job(loser.job_id))["state"] == "cancelled"

    await eventually(cancelled)


async def test_a_retried_task_succeeds_once_its_table_exists(daemon: Daemon) -> None:
    """A transient failure, as a nightly pipeline meets one: the table is missing at the first
    attempt and loaded during the backoff; the second attempt is a new job and succeeds."""
    plane = Plane.of(daemon)
    text = workflow(
        "nightly",
        """\
  - guarded:
      try:
        - load:
            call: CreateMaterializedViewIfNotExists
            with: {nql: SELECT COUNT(1) AS n FROM company_data.late_table, datasetName: counted}
      catch:
        retry: {delay: {seconds: 1}, limit: {attempt: {count: 3}}}
""",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    retrying = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_RETRYING)
    assert retrying.attempt == 2
    assert "late_table" in retrying.error.detail
    await plane.load_csv("late_table", "x\n1\n")
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    jobs = await jobs_by_key(plane, run.id)
    assert sorted(jobs) == ["/do/0/guarded/try/0/load", "/do/0/guarded/try/0/load@a2"]
    assert [jobs[key]["state"] for key in sorted(jobs)] == ["failed", "completed"]
    assert instances(done) == [
        ("/do/0/guarded", "COMPLETED"),
        ("/do/0/guarded/try/0/load", "FAILED"),
        ("/do/0/guarded/try/0/load@a2", "COMPLETED"),
    ]
    await plane.aclose()


async def test_retries_exhausted_run_catch_do_with_the_error(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "fallback",
        """\
  - guarded:
      try:
        - load:
            call: ExecuteDml
            with: {nql: "INSERT INTO company_data.missing VALUES (1)"}
      catch:
        as: failure
        retry: {delay: {milliseconds: 100}, backoff: {exponential: {}}, limit: {attempt: {count: 2}}}
        do:
          - note: {set: {gaveUp: '${ $failure.instance }', status: '${ $failure.status }'}}
""",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    events = await events_until_end(daemon, run.id)
    done = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert json_format.MessageToDict(done.output) == {
        "gaveUp": "/do/0/guarded/try/0/load",
        "status": 400,
    }
    retries = [e for e in events if e.type == pb.RUN_EVENT_TYPE_TASK_RETRYING]
    assert [e.attempt for e in retries] == [2, 3]
    assert sorted(await jobs_by_key(plane, run.id)) == [
        "/do/0/guarded/try/0/load",
        "/do/0/guarded/try/0/load@a2",
        "/do/0/guarded/try/0/load@a3",
    ]


async def test_a_query_error_is_the_users_and_says_so(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "typo",
        '  - load:\n      call: ExecuteDml\n      with: {nql: "INSERT INTO company_data.nope VALUES (1)"}\n',
    )
    done = await finished(daemon, (await trigger(daemon, (await apply(daemon, text)).id)).id)
    assert done.status == pb.RUN_STATUS_FAILED
    assert done.error.type.endswith("/errors/runtime")
    assert done.error.status == 400
    assert "query" in done.error.title
    assert "nope" in done.error.detail


async def test_switch_if_then_set_and_raise(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "branchy",
        f"""\
  - size:
      switch:
        - big: {{when: '.n > 10', then: bigPath}}
        - none: {{when: '.n == 0', then: nothing}}
  - small: {quick("small_view")}
  - done: {{set: {{path: small}}, then: end}}
  - bigPath:
      if: '.n < 1000'
      set: {{path: big}}
      then: end
  - nothing:
      if: '.n == 0'
      raise:
        error:
          type: https://serverlessworkflow.io/spec/1.0.0/errors/validation
          status: 400
          title: '${{ "nothing to do for n=\\(.n)" }}'
""",
    )
    workflow_id = (await apply(daemon, text)).id
    small = await finished(daemon, (await trigger(daemon, workflow_id, input=value({"n": 3}))).id)
    assert json_format.MessageToDict(small.output) == {"path": "small"}
    assert [t.name for t in small.tasks] == ["size", "small", "done"]
    big = await finished(daemon, (await trigger(daemon, workflow_id, input=value({"n": 50}))).id)
    assert json_format.MessageToDict(big.output) == {"path": "big"}
    huge = await finished(daemon, (await trigger(daemon, workflow_id, input=value({"n": 5000}))).id)
    assert json_format.MessageToDict(huge.output) == {"n": 5000}  # bigPath skipped, then end
    assert instances(huge)[-2:] == [("/do/3/bigPath", "SKIPPED"), ("/do/4/nothing", "SKIPPED")]
    none = await finished(daemon, (await trigger(daemon, workflow_id, input=value({"n": 0}))).id)
    assert none.status == pb.RUN_STATUS_FAILED
    assert none.error.title == "nothing to do for n=0"
    assert none.error.instance == "/do/4/nothing"
    assert none.error.status == 400
    assert len(await plane.jobs_for_run(small.id)) == 1
    assert await plane.jobs_for_run(big.id) == []


async def test_a_wait_sleeps_until_its_stored_instant(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock)
    text = workflow("pause", "  - pause: {wait: PT1H}\n  - after: {set: {woke: true}}\n")
    run = await trigger(daemon, (await apply(daemon, text)).id)
    waiting = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    assert waiting.until.ToDatetime() == (T0 + timedelta(hours=1)).replace(tzinfo=None)
    stored = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert stored.tasks[0].wake_at == waiting.until
    clock.advance(timedelta(hours=1))
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert json_format.MessageToDict(done.output) == {"woke": True}


async def test_a_cancel_during_a_wait_ends_the_run_at_once(daemon: Daemon) -> None:
    text = workflow("long-pause", "  - pause: {wait: P1D}\n")
    run = await trigger(daemon, (await apply(daemon, text)).id)
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert instances(done) == [("/do/0/pause", "CANCELLED")]


async def test_a_for_of_set_tasks_ends_at_its_bound(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(max_instances=30)
    text = workflow("endless", "  - again: {set: {n: '${ .n + 1 }'}, then: again}\n")
    run = await trigger(daemon, (await apply(daemon, text)).id, input=value({"n": 0}))
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_FAILED
    assert "max_instances" in done.error.title
    assert len(done.tasks) == 30


async def test_straight_line_events_keep_their_positions(daemon: Daemon, plane: Plane) -> None:
    text = workflow("straight", f"  - a: {quick('a_view')}\n  - b: {quick('b_view')}\n")
    run = await trigger(daemon, (await apply(daemon, text)).id)
    events = await events_until_end(daemon, run.id)
    tasks = [(e.task_index, e.task_name) for e in events if e.task_name]
    assert {index for index, name in tasks if name == "a"} == {0}
    assert {index for index, name in tasks if name == "b"} == {1}
