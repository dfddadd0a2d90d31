"""Every task kind through the real daemon and the real data plane: instances as GetRun and the
events show them, one job per call instance (counted in the data plane), and the choices where
the DSL is silent (docs/workflow-language.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from google.protobuf import json_format, struct_pb2

from tests.api.test_naming import refused
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

QUICK_SET = "  - one: {set: {ok: true}}\n"
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
    # Each of the three failures is caught by the try, the last one handed to `catch.do`.
    caught = [e for e in events if e.type == pb.RUN_EVENT_TYPE_TASK_ERROR_CAUGHT]
    assert [e.task_reference for e in caught] == ["/do/0/guarded"] * 3
    assert {e.error.instance for e in caught} == {"/do/0/guarded/try/0/load"}
    assert {e.error.status for e in caught} == {400}
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


async def test_a_then_loop_of_set_tasks_ends_at_max_instances(
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


async def test_do_runs_its_tasks_in_order_as_one_instance(daemon: Daemon, plane: Plane) -> None:
    text = workflow(
        "nested",
        f"""\
  - both:
      do:
        - first: {quick("first_view")}
        - second: {quick("second_view")}
      output: {{as: '{{last: .datasetName}}'}}
  - after: {{set: {{seen: '${{ .last }}'}}}}
""",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert instances(done) == [
        ("/do/0/both", "COMPLETED"),
        ("/do/0/both/do/0/first", "COMPLETED"),
        ("/do/0/both/do/1/second", "COMPLETED"),
        ("/do/1/after", "COMPLETED"),
    ]
    assert {t.parent for t in done.tasks[1:3]} == {"/do/0/both"}
    assert json_format.MessageToDict(done.output) == {"seen": "second_view"}
    jobs = await jobs_by_key(plane, run.id)
    assert sorted(jobs) == ["/do/0/both/do/0/first", "/do/0/both/do/1/second"]
    first, second = (jobs[key] for key in sorted(jobs))
    assert str(first["ended_at"]) <= str(second["created_at"])  # one after the other


async def test_a_for_over_a_million_items_ends_at_max_iterations(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(max_iterations=40)
    text = workflow(
        "million",
        "  - each:\n"
        "      for: {in: '[range(1000000)]'}\n"
        "      do:\n"
        "        - count: {set: {n: '${ $item }'}}\n",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_FAILED
    # The list itself is past the bound on an expression's output, so no iteration starts.
    assert done.error.title == "cannot evaluate /do/0/each/for/in", done.error
    assert done.error.detail == "expression output exceeds 1048576 bytes"
    assert done.error.instance == "/do/0/each"
    assert len(done.tasks) == 1
    after = await trigger(daemon, (await apply(daemon, workflow("after", QUICK_SET))).id)
    assert (await finished(daemon, after.id)).status == pb.RUN_STATUS_COMPLETED


async def test_a_for_over_more_items_than_max_iterations_is_refused_before_it_starts(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(max_iterations=25)
    text = workflow(
        "forever",
        "  - spin:\n"
        "      for: {in: '[range(100)]'}\n"
        "      while: 'true'\n"
        "      do:\n"
        "        - tick: {set: {i: '${ $index }'}}\n",
    )
    run = await trigger(daemon, (await apply(daemon, text)).id)
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_FAILED
    assert done.error.title == "task spin's for.in yielded 100 items; the limit is 25"
    assert done.error.detail == "the limit is the setting max_iterations"
    assert done.error.instance == "/do/0/spin/for/in"
    assert len(done.tasks) == 1


async def test_fork_width_and_nesting_depth_are_refused_at_create_with_their_pointer(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(max_fork_width=2, max_depth=3)
    wide = workflow(
        "wide",
        "  - all:\n      fork:\n        branches:\n"
        + "".join(f"          - b{i}: {{set: {{n: {i}}}}}\n" for i in range(3)),
    )
    message, violations = await refused(
        daemon, "CreateWorkflow", pb.CreateWorkflowRequest(specification=wide)
    )
    assert violations == [
        (
            "specification/do/0/all/fork/branches",
            "line 5, column 9: fork has 3 branches; the limit is 2 (max_fork_width)",
        )
    ], message
    deep = workflow(
        "deep",
        "  - l1:\n      do:\n"
        "        - l2:\n            do:\n"
        "              - l3:\n                  do:\n"
        "                    - l4:\n                        do:\n"
        "                          - l5: {set: {n: 1}}\n",
    )
    _, violations = await refused(
        daemon, "CreateWorkflow", pb.CreateWorkflowRequest(specification=deep)
    )
    assert [field for field, _ in violations] == [
        "specification/do/0/l1/do/0/l2/do/0/l3/do/0/l4/do"
    ]
    assert violations[0][1].endswith("task lists are nested more than 3 deep (max_depth)")
