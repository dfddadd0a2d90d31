"""A worker receives only the named arguments its programs use (issue 16, item 9): a run's
large input is neither encoded on the event loop nor decoded in a worker for an expression that
does not read it. The scan that finds them must never miss a variable jq would read."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import jq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflowd.domain.json import Json
from workflowd.spec import jqworkers
from workflowd.spec._jqworker import VARIABLES, sandboxed
from workflowd.spec.expressions import Evaluator
from workflowd.spec.jqsyntax import compile_error, used_variables

LARGE = {"rows": ["x" * 1000] * 600}  # about 600 KB encoded
ALL: dict[str, Json] = {
    "context": {"c": 1},
    "input": LARGE,
    "workflow": {"id": "w", "input": LARGE},
    "task": {"name": "t"},
    "runtime": {"name": "workflowd"},
    "output": {"o": 2},
}
_UNDEFINED = re.compile(r"\$(\w+) is not defined")


class Requests:
    """The lines the pool writes to its workers, decoded (the real workers answer them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[dict[str, object]] = []
        exchange = jqworkers.WorkerPool._exchange

        async def recording(pool: jqworkers.WorkerPool, *args: object) -> dict[str, object]:
            line = args[2]
            assert isinstance(line, bytes)
            self.seen.append(json.loads(line))
            return await exchange(pool, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(jqworkers.WorkerPool, "_exchange", recording)

    def programs(self) -> list[dict[str, object]]:
        return [r for r in self.seen if "programs" in r]


@pytest.fixture
async def evaluator() -> AsyncIterator[Evaluator]:
    async with Evaluator(timeout_s=5.0) as ev:
        yield ev


async def test_a_worker_receives_only_the_variables_its_programs_use(
    evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = Requests(monkeypatch)
    assert await evaluator.evaluate('${ "SELECT 1 AS x" }', None, ALL) == "SELECT 1 AS x"
    assert await evaluator.evaluate_field(". + 1", 1, ALL) == 2
    assert await evaluator.evaluate_field("[$context.c, $task.name]", None, ALL) == [1, "t"]
    template: Json = {"a": "${ $context.c }", "b": ['${ "\\($runtime.name)" }']}
    assert await evaluator.evaluate(template, None, ALL) == {"a": 1, "b": ["workflowd"]}
    sent = requests.programs()
    assert [r["names"] for r in sent] == [[], [], ["context", "task"], ["context", "runtime"]]
    assert [len(r["data"]) for r in sent] == [1, 1, 3, 3]  # type: ignore[arg-type]
    assert all(len(json.dumps(r)) < 1000 for r in sent)  # the large input stayed home


async def test_a_program_that_reads_the_input_still_gets_it(
    evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = Requests(monkeypatch)
    assert await evaluator.evaluate_field("$workflow.input.rows | length", None, ALL) == 600
    assert requests.programs()[0]["names"] == ["workflow"]


async def test_a_used_variable_the_caller_did_not_give_is_null(evaluator: Evaluator) -> None:
    assert await evaluator.evaluate_field("[$output, $context]", None, {"context": {}}) == [
        None,
        {},
    ]


async def test_a_variable_the_program_binds_itself_is_its_own(evaluator: Evaluator) -> None:
    assert await evaluator.evaluate_field("2 as $input | $input + .", 1, ALL) == 3
    assert await evaluator.evaluate_field('"\\(1 as $x | $x)\\($task.name)"', 0, ALL) == "1t"


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("$context", {"context"}),
        ("$ context", {"context"}),
        ("$ # a comment\n workflow", {"workflow"}),
        ('"\\($task.name) and \\("\\($runtime)")"', {"task", "runtime"}),
        ('"$context is text" | .', set()),
        ("# $context in a comment\n.", set()),
        ("# a comment \\\n $context still in it\n.", set()),
        ("def f($input): $input; f(1) + $output", {"input", "output"}),
        (". as [$a] ?// $a | $a", {"a"}),
        ("$__loc__", {"__loc__"}),
    ],
)
def test_the_scan_finds_what_jq_reads(source: str, names: set[str]) -> None:
    assert used_variables(source) == names
    assert read_by_jq(source) <= names


def read_by_jq(source: str) -> set[str]:
    """The named arguments jq itself resolves in `source`: each one, left unbound while every
    other is bound, makes the program fail to compile."""
    read = set()
    for name in VARIABLES:
        others = [n for n in VARIABLES if n != name]
        try:
            jq.compile(sandboxed(source, names=others))
        except ValueError as exc:
            if name in _UNDEFINED.findall(str(exc)):
                read.add(name)
    return read


_NAMES = st.sampled_from([*VARIABLES, "x"])
_ATOM = st.one_of(
    _NAMES.map(lambda n: f"${n}"),
    _NAMES.map(lambda n: f"$ {n}"),
    _NAMES.map(lambda n: f"$ # note\n{n}"),
    _NAMES.map(lambda n: f'"${n}"'),
    _NAMES.map(lambda n: f'"a\\(${n})b"'),
    _NAMES.map(lambda n: f'"\\("\\(${n})")"'),
    _NAMES.map(lambda n: f"(# ${n}\n.)"),
    _NAMES.map(lambda n: f"(# ${n} \\\n ${n}\n.)"),
    st.just("."),
    st.just("1"),
)


@st.composite
def programs(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(_ATOM, min_size=1, max_size=5))
    program = " , ".join(f"({atom})" for atom in atoms)
    if draw(st.booleans()):
        bound = draw(_NAMES)
        program = f". as ${bound} | ({program})"
    if draw(st.booleans()):
        param = draw(_NAMES)
        program = f"def f(${param}): [{program}]; f(1)"
    return f"[{program}]"


@settings(max_examples=300, deadline=None)
@given(programs())
def test_sending_only_the_used_variables_never_changes_a_result(source: str) -> None:
    if compile_error(source) is not None:
        return
    assert read_by_jq(source) <= used_variables(source)
    data = [{"s": 1}, *(ALL[n] if n != "input" else {"i": 1} for n in VARIABLES)]
    everything = jq.compile(sandboxed(source)).input_value(data).all()
    names = [n for n in VARIABLES if n in used_variables(source)]
    only = [data[0], *(data[1 + VARIABLES.index(n)] for n in names)]
    assert jq.compile(sandboxed(source, names=names)).input_value(only).all() == everything
