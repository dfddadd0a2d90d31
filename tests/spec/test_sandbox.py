"""The jq sandbox holds by construction: every refused builtin is shadowed in the compiled program,
whatever its spelling, at creation and in the worker; the workers run with an empty environment."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import jq
import pytest

from workflowd.domain.json import Json
from workflowd.spec import expressions
from workflowd.spec._jqworker import REFUSAL, SANDBOXED
from workflowd.spec.expressions import Evaluator, ExpressionError, check_expression

SECRET = "s3cr3t-jobs-token"
CALLS = sorted({name if arity == 0 else f"{name}(1)" for name, arity in SANDBOXED})


def spellings(call: str) -> list[str]:
    """Ways a program may reach `call`; every one must be refused."""
    return [
        call,
        f'"\\({call})"',
        f"# a comment\n{call}",
        f"# a comment \\\n ignored\n{call}",
        f"def f: {call}; f",
        f"def f(g): g; f({call})",
        f"[.[]?|{call}]",
        f'@json "\\({call})"',
        f"[paths({call})]",
        f'getpath(["nothing"]) // {call}',
        f"first({call})",
        f"{{({call}): 1}}",
        f"reduce ({call}) as $x (0; .)",
        f". as $env | {call}",
        f".) | {call} | (.",
    ]


CASES = [(call, source) for call in CALLS for source in spellings(call)]
ENV_SPELLINGS = [
    "$ENV",
    "$ENV.WORKFLOWD_JOBS_TOKEN",
    "$ ENV",
    "$ # comment\n ENV",
    '"\\($ENV)"',
    "{$ENV}",
    "[.[]? | $ENV]",
    "def f: $ENV; f",
]


def bare(call: str) -> str:
    return call.partition("(")[0]


@pytest.fixture
async def evaluator() -> AsyncIterator[Evaluator]:
    async with Evaluator(timeout_s=5.0) as ev:
        yield ev


@pytest.fixture
def without_creation_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator re-checks programs for friendlier messages; skip that, so what is tested
    is the worker's own sandbox, as for a program that never passed the creation check."""
    monkeypatch.setattr(expressions, "compile_error", lambda source, names=frozenset(): None)


def test_the_table_shadows_every_arity_jq_defines() -> None:
    builtins = set(jq.compile("builtins").input_value(None).first())
    names = {name for name, _ in SANDBOXED}
    defined = {b for b in builtins if b.partition("/")[0] in names}
    assert defined == {f"{name}/{arity}" for name, arity in SANDBOXED}


@pytest.mark.parametrize(("call", "source"), CASES)
def test_creation_refuses_every_spelling(call: str, source: str) -> None:
    diagnostic = check_expression(source, "/p")
    assert diagnostic is not None
    assert diagnostic.pointer == "/p"
    if not source.startswith(".)"):  # that one is refused for its stray `)` first
        assert f"`{bare(call)}`" in diagnostic.message
        assert "may not read the environment" in diagnostic.message


@pytest.mark.parametrize(("call", "source"), CASES)
@pytest.mark.usefixtures("without_creation_check")
async def test_the_worker_refuses_every_spelling(
    evaluator: Evaluator, call: str, source: str
) -> None:
    with pytest.raises(ExpressionError, match=f"`{bare(call)}` is not available"):
        await evaluator.evaluate_field(source, {"a": [1, 2]}, {})


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.usefixtures("without_creation_check")
async def test_a_caught_refusal_shows_only_the_refusal(evaluator: Evaluator, call: str) -> None:
    caught = await evaluator.evaluate_field(f"try {call} catch .", None, {})
    assert caught == f"`{bare(call)}` is not available: {REFUSAL}"


@pytest.mark.parametrize("source", ENV_SPELLINGS)
def test_creation_refuses_env_variable_spellings(source: str) -> None:
    diagnostic = check_expression(source, "/p")
    assert diagnostic is not None
    assert "`$ENV`" in diagnostic.message


@pytest.mark.parametrize("source", ['import "x" as x; .', 'include "x"; .'])
@pytest.mark.usefixtures("without_creation_check")
async def test_modules_cannot_be_loaded(evaluator: Evaluator, source: str) -> None:
    assert check_expression(source, "/p") is not None
    with pytest.raises(ExpressionError, match=r"syntax error, unexpected (import|include)"):
        await evaluator.evaluate_field(source, None, {})


@pytest.mark.parametrize(
    "source",
    [".env", '"env"', "{input: 1}", "{import: 1, include: 2}", "{env}", "def f: env; 1"],
)
def test_names_that_call_nothing_are_fine(source: str) -> None:
    assert check_expression(source, "/p") is None


@pytest.mark.usefixtures("without_creation_check")
async def test_no_expression_reads_the_daemon_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLOWD_JOBS_TOKEN", SECRET)
    async with Evaluator(timeout_s=5.0) as ev:
        assert await ev.evaluate_field("$ENV", None, {}) == {}
        seen: list[str] = []
        for source in [*ENV_SPELLINGS, *(s for call in CALLS for s in spellings(call))]:
            try:
                value: Json = await ev.evaluate_field(source, None, {})
            except ExpressionError as exc:
                seen.append(str(exc))
            else:
                seen.append(json.dumps(value))
        assert all(SECRET not in text for text in seen)
        environments = worker_environments()
    assert environments  # the workers were found, and each started with nothing
    assert all(environ == b"" for environ in environments)


def worker_environments() -> list[bytes]:
    """The initial environment of every expression worker this process started."""
    found = []
    for process in Path("/proc").iterdir():
        try:
            status = (process / "status").read_text()
            command = (process / "cmdline").read_bytes()
            environ = (process / "environ").read_bytes()
        except (OSError, ValueError):  # not a process, or gone meanwhile
            continue
        if f"\nPPid:\t{os.getpid()}\n" in status and b"_jqworker.py" in command:
            found.append(environ)
    return found


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (".a |", "ends too early"),
        ("(.a", "ends too early"),
        (". # \\", "ends too early"),
        (".) | (.", "closes no `(`"),
        ("1 +\n  ]", "(line 2, column 3)"),
    ],
)
def test_syntax_errors_point_into_the_users_program(source: str, message: str) -> None:
    diagnostic = check_expression(source, "/p")
    assert diagnostic is not None
    assert message in diagnostic.message
