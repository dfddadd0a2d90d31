"""Properties of the interpreter over random task trees, random outcomes, random interleavings
of concurrent branches and random restarts: a run always ends within its bounds, an instance
starts once and ends once, nothing of an ended instance runs again, and each call instance (each
attempt) asks for one job."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.flow_driver import definition, run
from workflowd.domain.definition import FlowLimits
from workflowd.domain.run import ErrorType, Problem
from workflowd.engine.flow import (
    CallCompleted,
    CallStep,
    Ended,
    Evaluate,
    Evaluated,
    Faulted,
    Outcome,
    Purpose,
    Started,
    Step,
)

LIMITS = FlowLimits(max_iterations=3, max_instances=80, max_attempts=3, max_fork_width=3)
_LEAVES = ("call", "set", "raise", "wait")
_NESTED = ("do", "for", "fork", "try", "switch")


def _task(kind: str, children: list[dict[str, Any]], flags: list[bool]) -> dict[str, Any]:
    if kind == "call":
        return {"call": "RefreshMaterializedView", "with": {"datasetName": "v"}}
    if kind == "set":
        return {"set": {"n": "${ .n }"}}
    if kind == "raise":
        return {"raise": {"error": {"type": "https://example.com/e", "status": 500}}}
    if kind == "wait":
        return {"wait": {"seconds": 1}}
    tasks = [{f"t{i}": child} for i, child in enumerate(children)] or [{"t0": {"set": {}}}]
    if kind == "do":
        return {"do": tasks}
    if kind == "for":
        return {"for": {"in": ".items"}, "while": ".go", "do": tasks}
    if kind == "fork":
        return {"fork": {"branches": tasks, "compete": flags[0]}}
    if kind == "switch":
        return {"switch": [{"a": {"when": ".go", "then": "continue"}}, {"b": {"then": "exit"}}]}
    catch: dict[str, Any] = {"when": ".go"}
    if flags[0]:
        catch["retry"] = {"delay": {"seconds": 1}, "limit": {"attempt": {"count": 2}}}
    if flags[1]:
        catch["do"] = [{"fallback": {"set": {"caught": True}}}]
    return {"try": tasks, "catch": catch}


def tasks() -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.sampled_from(_LEAVES).map(lambda kind: _task(kind, [], [False, False]))
    return st.recursive(
        leaf,
        lambda inner: st.builds(
            _task,
            st.sampled_from(_NESTED),
            st.lists(inner, min_size=1, max_size=3),
            st.lists(st.booleans(), min_size=2, max_size=2),
        ),
        max_leaves=10,
    )


@st.composite
def workflows(draw: st.DrawFn) -> str:
    """A valid document: random tasks, each with a random `if` and `then`."""
    bodies = draw(st.lists(tasks(), min_size=1, max_size=4))
    names = [f"s{i}" for i in range(len(bodies))]
    items = []
    for name, body in zip(names, bodies, strict=True):
        if draw(st.booleans()):
            body = {**body, "if": ".go"}
        body = {**body, "then": draw(st.sampled_from(["continue", "exit", "end", *names]))}
        items.append({name: body})
    return "do: " + json.dumps(items)


def answers(data: st.DataObject) -> Any:
    def answer(step: Step) -> Outcome | None:
        if isinstance(step, CallStep):
            if data.draw(st.booleans(), label="call completes"):
                return CallCompleted(step.key, {"n": 1, "items": [1, 2], "go": True})
            problem = Problem.of(ErrorType.RUNTIME, "failed", "", step.task.reference)
            return Faulted(step.key, problem)
        if isinstance(step, Evaluate):
            return Evaluated(step.key, step.purpose, _value(step.purpose, data))
        return None

    return answer


def _value(purpose: Purpose, data: st.DataObject) -> Any:
    if purpose == Purpose.IN:
        return data.draw(st.lists(st.integers(0, 9), max_size=3), label="items")
    if purpose == Purpose.EXPORT:
        return {"exported": True}
    if purpose in (Purpose.SET, Purpose.INPUT, Purpose.OUTPUT, Purpose.RUN_OUTPUT):
        return {"n": 1, "items": [1], "go": data.draw(st.booleans(), label="go")}
    if purpose == Purpose.RAISE:
        return {"title": "raised"}
    return data.draw(st.booleans(), label=str(purpose))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(), st.data())
def test_every_run_ends_and_no_instance_runs_twice(text: str, data: st.DataObject) -> None:
    found = definition(text)
    resume_every = data.draw(st.sampled_from([0, 1, 3]), label="resume every")
    trace = run(
        found,
        {"go": True, "items": [1, 2], "n": 0},
        answer=answers(data),
        limits=LIMITS,
        resume_every=resume_every,
        max_outcomes=5_000,
        order=lambda steps: data.draw(st.integers(0, len(steps) - 1), label="next"),
    )
    assert trace.end is not None, "the run did not end"
    started = [r.key for r in trace.records if isinstance(r, Started)]
    ended = [r.key for r in trace.records if isinstance(r, Ended)]
    assert len(started) == len(set(started)), "an instance started twice"
    assert len(started) <= LIMITS.max_instances
    assert sorted(ended) == sorted(started), "an instance ended twice, or never"
    calls = [s.key for s in trace.steps if isinstance(s, CallStep)]
    assert len(calls) == len(set(calls)), "an instance asked for two jobs"
    over: set[str] = set()
    for what, key in trace.log:
        assert what == "ended" or key not in over, f"{key} has a step after it ended"
        if what == "ended":
            over.add(key)
