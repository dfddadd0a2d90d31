"""Expression detection and the bounded evaluator (real worker processes)."""

from __future__ import annotations

import asyncio
import contextvars
import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest

from workflowd.domain.fairness import acting_for
from workflowd.domain.json import Json
from workflowd.spec.expressions import (
    Evaluator,
    ExpressionError,
    check_expression,
    expression_source,
    find_expressions,
    is_expression,
)

VARIABLES: dict[str, Json] = {
    "context": {"activeId": 42},
    "input": {"day": "2026-01-01"},
    "workflow": {"id": "w", "runId": "r", "definition": {"name": "n"}},
    "task": {"name": "t", "reference": "/do/0/t"},
    "runtime": {"name": "workflowd", "version": "0.1.0"},
}


@pytest.fixture
async def evaluator() -> AsyncIterator[Evaluator]:
    async with Evaluator(timeout_s=1.0) as ev:
        yield ev


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${ .a }", True),
        ("  ${.a}\n", True),
        ("${\n .a\n | .b\n}", True),
        ("x ${ .a }", False),
        ("$.a", False),
        (".a", False),
        ("${ .a } tail", False),
    ],
)
def test_is_expression(text: str, expected: bool) -> None:
    assert is_expression(text) is expected


def test_expression_source_strips_wrapper_and_whitespace() -> None:
    assert expression_source("  ${ .a + 1 }  ") == ".a + 1"
    assert expression_source(".bare") == ".bare"


def test_find_expressions_walks_templates() -> None:
    template: Json = {"a": "${ .x }", "b": ["lit", "${ $context }"], "c": {"d": 1}}
    assert find_expressions(template) == [(("a",), ".x"), (("b", 1), "$context")]


@pytest.mark.parametrize(
    "source", [".environment", '"env"', "{input: 1}", ".a.input", "# env\n.", "$context.env"]
)
def test_sandbox_allows_harmless_lookalikes(source: str) -> None:
    assert check_expression(source, "/p") is None


@pytest.mark.parametrize(
    "source", ["env", "$ENV", '"\\(env)"', "[inputs]", "{a: input}", "debug(1)", "halt_error(1)"]
)
def test_sandbox_refuses(source: str) -> None:
    diagnostic = check_expression(source, "/p")
    assert diagnostic is not None
    assert diagnostic.pointer == "/p"
    assert "not read the environment" in diagnostic.message


def test_unknown_variable_and_bound_variables() -> None:
    unknown = check_expression("$secret", "/p")
    assert unknown is not None
    assert "unknown variable $secret" in unknown.message
    assert check_expression(". as $x | def f($y): $y; f($x) + $output", "/p") is None


async def test_template_keeps_types_and_literals(evaluator: Evaluator) -> None:
    template: Json = {
        "n": "${ $context.activeId }",
        "s": '${ "id \\($context.activeId)" }',
        "obj": "${ {a: .x} }",
        "list": ["${ .x }", "plain", "not ${ .x } whole", 3, None, True],
        "nested": {"flt": "${ .x / 2 }", "missing": "${ .nope }"},
    }
    result = await evaluator.evaluate(template, {"x": 3}, VARIABLES)
    assert result == {
        "n": 42,
        "s": "id 42",
        "obj": {"a": 3},
        "list": [3, "plain", "not ${ .x } whole", 3, None, True],
        "nested": {"flt": 1.5, "missing": None},
    }
    assert isinstance(template, dict)
    assert template["n"] == "${ $context.activeId }"  # the template itself is untouched


async def test_all_variables_are_bound(evaluator: Evaluator) -> None:
    source = (
        "[$context.activeId, $input.day, $workflow.runId, $task.reference, $runtime.name, $output]"
    )
    result = await evaluator.evaluate_field(source, None, {**VARIABLES, "output": {"o": 1}})
    assert result == [42, "2026-01-01", "r", "/do/0/t", "workflowd", {"o": 1}]


async def test_evaluate_field_accepts_bare_jq_wrapped_jq_and_templates(
    evaluator: Evaluator,
) -> None:
    subject: Json = {"datasetId": 9}
    assert await evaluator.evaluate_field("$context + {b: .datasetId}", subject, VARIABLES) == {
        "activeId": 42,
        "b": 9,
    }
    assert await evaluator.evaluate_field("${ .datasetId }", subject, VARIABLES) == 9
    assert await evaluator.evaluate_field({"id": "${ .datasetId }"}, subject, VARIABLES) == {
        "id": 9
    }


async def test_values_without_expressions_never_start_a_worker() -> None:
    evaluator = Evaluator()
    value: Json = {"a": ["x", 1, {"b": "not $ { expression }"}]}
    assert await evaluator.evaluate(value, None, {}) == value
    assert evaluator._pool._idle is None  # the pool was never even created
    await evaluator.aclose()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("empty", None),
        ("range(3)", "more than one value"),
        ('error("boom")', "boom"),
        (".a.b", "Cannot index number"),
        ("env", "`env`"),
        (".a |", "syntax error"),
        ("$nope", "unknown variable"),
    ],
)
async def test_results_and_errors(evaluator: Evaluator, source: str, message: str | None) -> None:
    if message is None:
        assert await evaluator.evaluate_field(source, 5, {}) is None
        return
    with pytest.raises(ExpressionError, match=message):
        await evaluator.evaluate_field(source, 5, {})


async def test_error_names_the_template_leaf(evaluator: Evaluator) -> None:
    with pytest.raises(ExpressionError, match="at /with/1: boom"):
        await evaluator.evaluate({"with": ["${ 1 }", '${ error("boom") }']}, None, {})


class LoopWatch:
    """Measures the worst event-loop lag while a slow evaluation runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0

    async def run(self, until: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        while not until.done():
            before = loop.time()
            await asyncio.sleep(0.01)  # ok: the lag probe measures this sleep
            self.worst = max(self.worst, loop.time() - before - 0.01)
            self.ticks += 1


@pytest.mark.parametrize(
    "source", ["[range(1e12)]", "def f: f; f", "[repeat(1)]", "last(range(1e12))"]
)
async def test_runaway_programs_are_bounded_and_the_loop_stays_responsive(
    evaluator: Evaluator, source: str
) -> None:
    await evaluator.evaluate_field(".", 0, {})  # start the worker outside the measurement
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    evaluation = asyncio.ensure_future(evaluator.evaluate_field(source, None, {}))
    watch = LoopWatch()
    await watch.run(evaluation)
    with pytest.raises(ExpressionError, match=r"longer than 1 s|memory"):
        await evaluation
    # The loop kept turning while the worker ran away (its own speed is a bench's business).
    assert watch.ticks > 10
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before
    assert grown_kib < 50 * 1024
    assert await evaluator.evaluate_field(". + 1", 1, {}) == 2  # a fresh worker took over


async def test_memory_is_bounded_by_the_worker_limit() -> None:
    async with Evaluator(timeout_s=20.0, max_memory_bytes=200 * 1024 * 1024, workers=1) as ev:
        with pytest.raises(ExpressionError, match="memory"):
            await ev.evaluate_field("[range(1e12)]", None, {})
        assert await ev.evaluate_field("1", None, {}) == 1


async def test_output_size_is_bounded() -> None:
    async with Evaluator(max_output_bytes=1000) as ev:
        with pytest.raises(ExpressionError, match="exceeds 1000 bytes"):
            await ev.evaluate_field('"x" * 2000', None, {})
        assert await ev.evaluate_field('"x" * 10', None, {}) == "x" * 10


async def test_concurrent_evaluations_share_a_small_pool() -> None:
    async with Evaluator(workers=2) as ev:
        results = await asyncio.gather(*(ev.evaluate("${ . * 2 }", i, {}) for i in range(50)))
        assert results == [i * 2 for i in range(50)]


async def test_a_runaway_does_not_disturb_concurrent_evaluations() -> None:
    async with Evaluator(workers=2, timeout_s=1.0) as ev:
        runaway = asyncio.ensure_future(ev.evaluate_field("last(range(1e12))", None, {}))
        quick = [await ev.evaluate_field(". + 1", i, {}) for i in range(20)]
        assert quick == list(range(1, 21))
        with pytest.raises(ExpressionError):
            await runaway


async def test_cancelled_evaluation_leaves_the_pool_usable() -> None:
    async with Evaluator(workers=1, timeout_s=5.0) as ev:
        assert await ev.evaluate_field(".", 1, {}) == 1  # the worker is up
        task = asyncio.ensure_future(ev.evaluate_field("last(range(1e12))", None, {}))
        for _ in range(5):  # let the request reach the worker: it is now mid-exchange
            await asyncio.sleep(0)  # ok: yields the loop, no timing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await ev.evaluate_field(". * 3", 2, {}) == 6


async def test_aclose_is_idempotent_and_final() -> None:
    ev = Evaluator()
    assert await ev.evaluate_field(".", 1, {}) == 1
    await ev.aclose()
    await ev.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await ev.evaluate_field(".", 1, {})


async def test_companies_take_turns_for_the_workers() -> None:
    """One company's backlog of evaluations delays another's by one turn (issue 16, item 10)."""
    async with Evaluator(workers=1) as ev:
        assert await ev.evaluate_field(".", 0, {}) == 0  # the worker is up
        finished: list[str] = []

        async def evaluate(label: str) -> None:
            await ev.evaluate_field(". + 1", 1, {})
            finished.append(label)

        def start(company: str, label: str) -> asyncio.Task[None]:
            context = contextvars.copy_context()
            context.run(acting_for.set, company)
            return asyncio.create_task(evaluate(label), context=context)

        backlog = [start("noisy", f"n{i}") for i in range(10)]
        for _ in range(3):  # every backlog task is now waiting for the worker
            await asyncio.sleep(0)  # ok: yields the loop, no timing
        other = start("quiet", "q")
        await asyncio.gather(*backlog, other)
        # n0 holds the worker, n1 waits first in line; then the quiet company's turn.
        assert finished.index("q") <= 2
        assert [label for label in finished if label != "q"] == [f"n{i}" for i in range(10)]
