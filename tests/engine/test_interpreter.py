"""The interpreter alone, without a daemon: every task kind and every choice where the DSL is
silent, driven step by step with the cursor serialized between steps (tests/engine/
flow_driver.py). The DSL's conformance scenarios that need no network are here too."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from tests.engine.flow_driver import T0, definition, echo, fail, run
from workflowd.domain.definition import FlowLimits
from workflowd.domain.json import JsonBounds
from workflowd.domain.run import ErrorType, Problem, RunStatus, TaskStatus
from workflowd.engine.cursor import instance_key
from workflowd.engine.flow import CallStep, Ended, Faulted, Retrying, Sleep, Step, Waiting

CALL = "{call: RefreshMaterializedView, with: {datasetName: v}}"


def completed(body: str, run_input: object = None, **kwargs: object) -> object:
    trace = run(body, run_input, **kwargs)  # type: ignore[arg-type]
    assert trace.end is not None
    assert trace.end.status == RunStatus.COMPLETED, trace.end
    return trace.end.output


# --- the conformance kit's scenarios that need no network ------------------------------------


def test_set_replaces_the_data() -> None:
    body = """
do:
  - initialize:
      set:
        shape: circle
        size: '${ .configuration.size }'
        fill: '${ .configuration.fill }'
"""
    output = completed(
        body, {"configuration": {"size": {"width": 6, "height": 6}, "fill": {"red": 69}}}
    )
    assert output == {"shape": "circle", "size": {"width": 6, "height": 6}, "fill": {"red": 69}}


def test_do_runs_its_tasks_in_order() -> None:
    body = """
do:
  - compute:
      do:
        - setRed: {set: {colors: '${ .colors + ["red"] }'}}
        - setGreen: {set: {colors: '${ .colors + ["green"] }'}}
        - setBlue: {set: {colors: '${ .colors + ["blue"] }'}}
"""
    assert completed(body, {"colors": []}) == {"colors": ["red", "green", "blue"]}


def test_then_jumps_to_a_named_task_and_end_ends() -> None:
    body = """
do:
  - setRed: {set: {colors: '${ .colors + ["red"] }'}, then: setGreen}
  - setBlue: {set: {colors: '${ .colors + ["blue"] }'}, then: end}
  - setGreen: {set: {colors: '${ .colors + ["green"] }'}, then: setBlue}
"""
    trace = run(body, {"colors": []})
    assert trace.end is not None
    assert trace.end.output == {"colors": ["red", "green", "blue"]}
    assert [k.rsplit("/", 1)[1] for k in trace.started()] == ["setRed", "setGreen", "setBlue"]


def test_for_binds_item_and_index_and_chains_iterations() -> None:
    body = """
do:
  - loopColors:
      for: {each: color, in: .colors}
      do:
        - markProcessed:
            set:
              colors: '${ .colors }'
              processed: '${ {colors: (.processed.colors + [$color]), indexes: (.processed.indexes + [$index])} }'
"""
    output = completed(body, {"colors": ["red", "green", "blue"]})
    assert output == {
        "colors": ["red", "green", "blue"],
        "processed": {"colors": ["red", "green", "blue"], "indexes": [0, 1, 2]},
    }


@pytest.mark.parametrize(
    ("color", "expected", "last"),
    [("red", {"colors": ["red"]}, "setRed"), ("yellow", {"color": "yellow"}, "switchColor")],
)
def test_switch_matching_case_and_implicit_default(color: str, expected: object, last: str) -> None:
    body = """
do:
  - switchColor:
      switch:
        - red: {when: '.color == "red"', then: setRed}
        - green: {when: '.color == "green"', then: setGreen}
      then: end
  - setRed: {set: {colors: '${ .colors + ["red"] }'}, then: end}
  - setGreen: {set: {colors: '${ .colors + ["green"] }'}, then: end}
"""
    trace = run(body, {"color": color})
    assert trace.end is not None
    assert trace.end.output == expected
    assert trace.started()[-1].rsplit("/", 1)[1] == last


def test_switch_explicit_default_case() -> None:
    body = """
do:
  - switchColor:
      switch:
        - red: {when: '.color == "red"', then: setRed}
        - fallback: {then: setCustomColor}
  - setRed: {set: {colors: [red]}, then: end}
  - setCustomColor: {set: {colors: '${ [$input.color] }'}, then: end}
"""
    assert completed(body, {"color": "yellow"}) == {"colors": ["yellow"]}


def test_raise_faults_with_the_error_and_its_instance() -> None:
    body = """
do:
  - raiseError:
      raise:
        error:
          type: https://serverlessworkflow.io/errors/types/compliance
          status: 400
          title: Compliance Error
"""
    trace = run(body)
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert trace.end.problem == Problem(
        "https://serverlessworkflow.io/errors/types/compliance",
        400,
        "Compliance Error",
        "",
        "/do/0/raiseError",
    )


def test_fork_compete_outputs_the_first_branch_and_cancels_the_others() -> None:
    body = """
do:
  - callNurse:
      fork:
        compete: true
        branches:
          - callNurse: {set: {colors: '${ .colors + ["red"] }'}}
          - callDoctor: {set: {colors: '${ .colors + ["green"] }'}}
          - callPatient: {set: {colors: '${ .colors + ["blue"] }'}}
"""
    trace = run(body, {"colors": []}, order=lambda steps: len(steps) - 1)
    assert trace.end is not None
    assert trace.end.output == {"colors": ["blue"]}
    ended = trace.ended()
    assert sorted(ended.values()) == ["cancelled", "cancelled", "completed", "completed"]


def test_input_from_filters_the_task_input() -> None:
    body = """
do:
  - setPlayer:
      input: {from: .user.claims.subject}
      set: {playerId: '${ . }'}
"""
    output = completed(body, {"user": {"claims": {"subject": "6AsnRgGEB0q2O7ux9JXFAw"}}})
    assert output == {"playerId": "6AsnRgGEB0q2O7ux9JXFAw"}


# --- choices where the DSL is silent ----------------------------------------------------------


def test_a_false_if_skips_the_task_and_passes_its_input_on() -> None:
    body = """
do:
  - maybe: {if: .go, set: {went: true}, then: end}
  - after: {set: {after: '${ . }'}}
"""
    trace = run(body, {"go": False})
    assert trace.end is not None
    assert trace.end.output == {"after": {"go": False}}
    assert trace.ended()["/do/0/maybe"] == "skipped"
    assert completed(body, {"go": True}) == {"went": True}


def test_if_follows_jq_truthiness() -> None:
    body = "do:\n  - t: {if: .x, set: {ran: true}}\n"
    assert completed(body, {"x": 0}) == {"ran": True}
    assert completed(body, {"x": None}) == {"x": None}


def test_exit_ends_the_iteration_and_the_loop_goes_on() -> None:
    body = """
do:
  - each:
      for: {in: '[1, 2, 3]'}
      do:
        - first: {set: {seen: '${ .seen + [$item] }'}, then: exit}
        - never: {set: {never: true}}
"""
    assert completed(body, {"seen": []}) == {"seen": [1, 2, 3]}


def test_for_checks_while_before_each_iteration() -> None:
    body = """
do:
  - each:
      for: {in: '[1, 2, 3, 4]', each: n, at: i}
      while: '.sum < 3'
      do:
        - add: {set: {sum: '${ .sum + $n }'}}
"""
    assert completed(body, {"sum": 0}) == {"sum": 3}


def test_a_for_without_items_outputs_its_input() -> None:
    body = "do:\n  - each:\n      for: {in: '[]'}\n      do:\n        - a: {set: {x: 1}}\n"
    assert completed(body, {"kept": True}) == {"kept": True}


def test_for_in_must_yield_an_array() -> None:
    trace = run(
        "do:\n  - each:\n      for: {in: .n}\n      do:\n        - a: {set: {}}\n", {"n": 3}
    )
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert trace.end.problem is not None
    assert "must yield an array" in trace.end.problem.title


def test_iterations_are_bounded() -> None:
    body = "do:\n  - each:\n      for: {in: '[range(50)]'}\n      do:\n        - a: {set: {}}\n"
    trace = run(body, limits=FlowLimits(max_iterations=10))
    assert trace.end is not None
    assert trace.end.problem is not None
    assert trace.end.problem.instance == "/do/0/each/for/in"
    assert "50 items; the limit is 10" in trace.end.problem.title


def test_instances_are_bounded_even_in_an_endless_loop() -> None:
    body = "do:\n  - again: {set: {n: '${ .n + 1 }'}, then: again}\n"
    trace = run(body, {"n": 0}, limits=FlowLimits(max_instances=25))
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert trace.end.problem is not None
    assert "max_instances" in trace.end.problem.title
    assert len(trace.started()) == 25
    assert len(set(trace.started())) == 25  # every jump back is a new instance


def test_a_fork_fed_its_own_output_stops_at_the_value_bounds() -> None:
    # Each round's output holds its input once per branch: fed back by `then`, the encoded size
    # grows as a power of the rounds (found by the property test, when a round took minutes).
    body = """
do:
  - again:
      fork:
        branches:
          - a: {wait: {seconds: 1}}
          - b: {wait: {seconds: 1}}
          - c: {wait: {seconds: 1}}
      then: again
"""
    limits = FlowLimits(values=JsonBounds(max_bytes=100_000))
    trace = run(body, {"rows": list(range(10))}, limits=limits)
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert trace.end.problem is not None
    assert trace.end.problem.title == "the output of fork again cannot be kept"
    assert trace.end.problem.instance == "/do/0/again"
    assert "more than 100000 bytes" in trace.end.problem.detail
    assert len(trace.started()) < 50  # a few rounds, long before max_instances


def test_fork_outputs_branches_in_declaration_order() -> None:
    body = """
do:
  - both:
      fork:
        branches:
          - left: {set: {side: left}}
          - right: {set: {side: right}}
"""
    trace = run(body, order=lambda steps: len(steps) - 1)  # the right branch ends first
    assert trace.end is not None
    assert trace.end.output == [{"side": "left"}, {"side": "right"}]


def test_a_failing_branch_cancels_the_others_and_fails_the_fork() -> None:
    body = f"""
do:
  - both:
      fork:
        branches:
          - slow: {CALL}
          - broken: {{raise: {{error: {{type: https://example.com/e, status: 500, title: no}}}}}}
"""
    trace = run(body, order=lambda steps: len(steps) - 1)
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    ended = trace.ended()
    assert ended["/do/0/both/fork/branches/0/slow"] == "cancelled"
    assert ended["/do/0/both/fork/branches/1/broken"] == "failed"
    assert ended["/do/0/both"] == "failed"


def test_in_a_compete_fork_a_failed_branch_is_out_of_the_race() -> None:
    body = f"""
do:
  - race:
      fork:
        compete: true
        branches:
          - slow: {CALL}
          - broken: {{raise: {{error: {{type: https://example.com/e, status: 500, title: no}}}}}}
"""
    trace = run(body, {"won": "slow"}, order=lambda steps: len(steps) - 1)
    assert trace.end is not None
    assert trace.end.status == RunStatus.COMPLETED
    assert trace.end.output == {"won": "slow"}


def test_every_branch_failing_fails_a_compete_fork_with_the_first_error() -> None:
    body = """
do:
  - race:
      fork:
        compete: true
        branches:
          - a: {raise: {error: {type: https://example.com/a, status: 500, title: first}}}
          - b: {raise: {error: {type: https://example.com/b, status: 500, title: second}}}
"""
    trace = run(body)
    assert trace.end is not None
    assert trace.end.problem is not None
    assert trace.end.problem.title == "first"


# --- try, catch, retry ----------------------------------------------------------------------------

TRY = f"""
do:
  - guard:
      try:
        - job: {CALL}
      catch:
"""


def test_retry_counts_retries_and_backs_off() -> None:
    body = (
        TRY
        + """        retry:
          delay: {seconds: 2}
          backoff: {exponential: {}}
          limit: {attempt: {count: 3}}
"""
    )
    trace = run(body, calls=fail())
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert trace.calls() == [
        "/do/0/guard/try/0/job",
        "/do/0/guard/try/0/job@a2",
        "/do/0/guard/try/0/job@a3",
        "/do/0/guard/try/0/job@a4",
    ]
    retries = [r for r in trace.records if isinstance(r, Retrying)]
    assert [r.attempt for r in retries] == [2, 3, 4]
    sleeps = [s.until for s in trace.steps if isinstance(s, Sleep)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sleeps)]
    assert sleeps[0] - T0 >= timedelta(seconds=2)
    assert [round(g.total_seconds()) for g in gaps] == [4, 8]


def test_a_retry_without_a_count_stops_at_max_attempts_and_says_so() -> None:
    body = TRY + "        retry: {delay: {seconds: 1}}\n"
    trace = run(body, calls=fail(), limits=FlowLimits(max_attempts=3))
    assert trace.calls() == [
        "/do/0/guard/try/0/job",
        "/do/0/guard/try/0/job@a2",
        "/do/0/guard/try/0/job@a3",
    ]
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert trace.end.problem is not None
    assert trace.end.problem.instance == "/do/0/guard/try/0/job"
    assert "/do/0/guard reached max_attempts (3 attempts)" in trace.end.problem.detail


def test_nested_retries_give_each_attempt_a_key_of_its_own() -> None:
    # The outer try's second attempt of the inner call's first, and the outer's first of the
    # inner's second, are different instances: each its own job (its own idempotency key).
    body = f"""
do:
  - outer:
      try:
        - inner:
            try:
              - job: {CALL}
            catch:
              retry: {{delay: {{seconds: 1}}, limit: {{attempt: {{count: 1}}}}}}
      catch:
        retry: {{delay: {{seconds: 1}}, limit: {{attempt: {{count: 1}}}}}}
"""
    trace = run(body, calls=fail())
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    job = "/do/0/outer/try/0/inner/try/0/job"
    assert trace.calls() == [job, f"{job}@a1.a2", f"{job}@a2", f"{job}@a2.a2"]


def test_instance_keys_leave_out_first_segments_only_where_that_is_unambiguous() -> None:
    assert instance_key("/r", ("g0", "a1")) == "/r"
    assert instance_key("/r", ("g0", "i3", "a1")) == "/r@i3"
    assert instance_key("/r", ("g0", "a2")) == "/r@a2"  # as keys were before
    assert instance_key("/r", ("a2", "g0", "a1")) == "/r@a2"
    assert instance_key("/r", ("a1", "g0", "a2")) == "/r@a1.a2"
    assert instance_key("/r", ("g1", "a1", "g0")) == "/r@g1"
    assert instance_key("/r", ("g0", "a1", "g1")) == "/r@g0.g1"
    assert instance_key("/r", ("a2",)) == "/r@a2"  # a path stored before it held first segments


@pytest.mark.parametrize(("backoff", "delays"), [("constant", [3, 3, 3]), ("linear", [3, 6, 9])])
def test_constant_and_linear_backoff(backoff: str, delays: list[int]) -> None:
    body = (
        TRY
        + f"""        retry:
          delay: {{seconds: 3}}
          backoff: {{{backoff}: {{}}}}
          limit: {{attempt: {{count: 3}}}}
"""
    )
    trace = run(body, calls=fail())
    retries = [r for r in trace.records if isinstance(r, Retrying)]
    starts = [s for s in trace.steps if isinstance(s, CallStep)]
    assert len(starts) == 4
    assert len(retries) == 3
    failures = [r for r in trace.records if isinstance(r, Ended) and r.status == TaskStatus.FAILED]
    waited = [
        round((retry.until - failure.at).total_seconds())
        for retry, failure in zip(retries, failures[:3], strict=True)
    ]
    assert waited == delays


def test_a_retry_that_succeeds_completes_the_try() -> None:
    body = TRY + "        retry: {delay: {seconds: 1}, limit: {attempt: {count: 5}}}\n"
    attempts: list[str] = []

    def flaky(step: CallStep) -> object:
        attempts.append(step.key)
        return echo(step) if len(attempts) == 3 else fail()(step)

    assert completed(body, {"x": 1}, calls=flaky) == {"x": 1}
    assert len(attempts) == 3


def test_catch_do_runs_after_the_retries_with_the_error() -> None:
    body = (
        TRY
        + """        as: err
        retry: {delay: {seconds: 1}, limit: {attempt: {count: 1}}}
        do:
          - fallback: {set: {recovered: '${ $err.title }', attempt: '${ $err.instance }'}}
"""
    )
    output = completed(body, calls=fail("boom"))
    assert output == {"recovered": "boom", "attempt": "/do/0/guard/try/0/job"}


def test_a_catch_without_retry_or_do_completes_with_its_input() -> None:
    assert completed(TRY + "        errors: {with: {status: 500}}\n", {"in": 1}, calls=fail()) == {
        "in": 1
    }


@pytest.mark.parametrize(
    ("errors", "caught"),
    [
        ("{with: {type: https://serverlessworkflow.io/spec/1.0.0/errors/runtime}}", True),
        ("{with: {type: https://serverlessworkflow.io/dsl/errors/types/runtime}}", True),
        ("{with: {type: https://serverlessworkflow.io/spec/1.0.0/errors/timeout}}", False),
        ("{with: {status: 500, instance: /do/0/guard/try/0/job}}", True),
        ("{with: {status: 404}}", False),
    ],
)
def test_errors_with_filters_what_is_caught(errors: str, caught: bool) -> None:
    trace = run(TRY + f"        errors: {errors}\n", calls=fail())
    assert trace.end is not None
    assert trace.end.status == (RunStatus.COMPLETED if caught else RunStatus.FAILED)


@pytest.mark.parametrize(
    ("checks", "caught"),
    [
        ("when: '$error.status == 500'", True),
        ("when: '.status == 404'", False),
        ("exceptWhen: '.title == \"the job failed\"'", False),
        ("as: e\n        when: '$e.title | startswith(\"the\")'", True),
    ],
)
def test_when_and_except_when_see_the_error(checks: str, caught: bool) -> None:
    trace = run(TRY + f"        {checks}\n", calls=fail())
    assert trace.end is not None
    assert trace.end.status == (RunStatus.COMPLETED if caught else RunStatus.FAILED)


def test_retry_when_decides_which_errors_are_retried() -> None:
    body = (
        TRY
        + "        retry: {delay: {seconds: 1}, when: '.status == 503', limit: {attempt: {count: 5}}}\n"
    )
    trace = run(body, calls=fail())
    assert trace.end is not None
    assert trace.end.status == RunStatus.FAILED
    assert len(trace.calls()) == 1


def test_limit_duration_stops_retrying() -> None:
    body = TRY + "        retry: {delay: {seconds: 10}, limit: {duration: {seconds: 25}}}\n"
    trace = run(body, calls=fail())
    assert len(trace.calls()) == 3  # retries at +10 s and +20 s; +30 s is past 25 s


def test_an_attempt_that_overruns_its_duration_is_retried() -> None:
    from workflowd.engine.flow import TimedOut

    body = (
        TRY + "        retry: {delay: {seconds: 1}, limit: {attempt: {count: 1, duration: PT5S}}}\n"
    )
    answered: list[str] = []

    def answer(step: Step) -> object:
        if isinstance(step, CallStep) and not answered:
            answered.append(step.key)
            return TimedOut("/do/0/guard", attempt=True)
        return None

    trace = run(body, {"ok": 1}, answer=answer)  # type: ignore[arg-type]
    assert trace.end is not None
    assert trace.end.output == {"ok": 1}
    assert trace.ended()["/do/0/guard/try/0/job"] == "cancelled"
    assert trace.calls() == ["/do/0/guard/try/0/job", "/do/0/guard/try/0/job@a2"]


def test_named_errors_and_retries() -> None:
    body = """
use:
  errors:
    late: {type: https://example.com/late, status: 408, title: '${ "late by \\(.by)" }'}
  retries:
    twice: {delay: {seconds: 1}, limit: {attempt: {count: 2}}}
do:
  - guard:
      try:
        - complain: {raise: {error: late}}
      catch:
        retry: twice
"""
    trace = run(body, {"by": 3})
    assert trace.end is not None
    assert trace.end.problem == Problem(
        "https://example.com/late", 408, "late by 3", "", "/do/0/guard/try/0/complain"
    )
    assert len(trace.started()) == 4  # the try, then three attempts of the raise


# --- wait, timeouts -------------------------------------------------------------------------------


def test_wait_sleeps_until_its_instant_and_passes_its_input_on() -> None:
    body = "do:\n  - pause: {wait: PT1H}\n"
    trace = run(body, {"kept": 1})
    assert trace.end is not None
    assert trace.end.output == {"kept": 1}
    [waiting] = [r for r in trace.records if isinstance(r, Waiting)]
    assert waiting.until - T0 >= timedelta(hours=1)


def test_a_wait_expression_gives_its_duration() -> None:
    trace = run("do:\n  - pause: {wait: '${ {seconds: .s} }'}\n", {"s": 90})
    [sleep] = [s for s in trace.steps if isinstance(s, Sleep)]
    assert timedelta(seconds=90) <= sleep.until - T0 < timedelta(seconds=91)


def test_a_task_timeout_is_an_error_a_try_catches() -> None:
    from workflowd.engine.flow import TimedOut

    body = """
do:
  - guard:
      try:
        - slow: {call: RefreshMaterializedView, with: {datasetName: v}, timeout: {after: PT1S}}
      catch:
        errors: {with: {type: https://serverlessworkflow.io/spec/1.0.0/errors/timeout}}
"""

    def answer(step: Step) -> object:
        return TimedOut(step.key) if isinstance(step, CallStep) else None

    trace = run(body, {"kept": True}, answer=answer)  # type: ignore[arg-type]
    assert trace.end is not None
    assert trace.end.output == {"kept": True}
    assert trace.ended()["/do/0/guard/try/0/slow"] == "failed"


# --- what the executor relies on --------------------------------------------------------------


def test_a_resumed_cursor_awaits_exactly_the_steps_in_flight() -> None:
    body = f"""
do:
  - each:
      for: {{in: '[1, 2, 3]'}}
      do:
        - job: {CALL}
  - both:
      fork:
        branches:
          - a: {CALL}
          - b: {{wait: PT1M}}
"""
    straight = run(body)
    resumed = run(body, resume_every=1)
    assert straight.end is not None
    assert resumed.end is not None
    assert resumed.end.output == straight.end.output
    assert resumed.calls() == straight.calls() or set(resumed.calls()) == set(straight.calls())
    assert len(set(straight.started())) == len(straight.started())


def test_a_stale_outcome_changes_nothing() -> None:
    interpreter = definition("do:\n  - a: {set: {x: 1}, if: .go}\n")
    from workflowd.engine.interpreter import Interpreter

    machine = Interpreter(interpreter)
    first = machine.start({"go": True}, T0)
    problem = Problem.of(ErrorType.RUNTIME, "late", "", "/do/0/a")
    later = machine.advance(first.cursor, Faulted("/do/9/nothing", problem), T0)
    assert later.steps == []
    assert later.records == []
    assert later.end is None
