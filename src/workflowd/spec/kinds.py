"""Each task kind's own fields: `call`, `set`, `switch`, `do`, `for`, `fork`, `try`, `raise`,
`wait`. `read_body` returns the kind's body when it is valid, and every diagnostic."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from workflowd.domain.definition import (
    CallBody,
    DoBody,
    ForBody,
    ForkBody,
    RaiseBody,
    SetBody,
    SwitchBody,
    SwitchCase,
    TaskBody,
    TaskKind,
    TryBody,
    WaitBody,
)
from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import Json
from workflowd.spec import uses
from workflowd.spec.fields import (
    check_flow_expression,
    check_template,
    closed,
    duration_seconds,
    expect_object,
    type_name,
)
from workflowd.spec.jqsyntax import is_expression
from workflowd.spec.names import check_name
from workflowd.spec.operations import OPERATIONS
from workflowd.spec.tasks import COMMON_KEYS, Context, check_flow, read_list

PROTOCOL_CALLS = ("http", "grpc", "openapi", "asyncapi", "a2a", "mcp")
_SUPPORTED = ", ".join(OPERATIONS)

Read = tuple[TaskBody | None, list[Diagnostic]]


def read_body(kind: TaskKind, body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    reader = _READERS[kind]
    own = _OWN_KEYS[kind]
    out = closed(body, pointer, (*own, *COMMON_KEYS))
    found, problems = reader(body, pointer, ctx)
    return (found if not out else None), out + problems


def _call(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    call, where = body["call"], pointer_join(pointer, "call")
    if not isinstance(call, str):
        return None, [Diagnostic(f"call must be an operation name, not {type_name(call)}", where)]
    if call in PROTOCOL_CALLS:
        message = (
            f"`call: {call}` is not supported: a workflow never makes workflowd reach the "
            f"network; workflowd calls {_SUPPORTED}"
        )
        return None, [Diagnostic(message, where)]
    operation = OPERATIONS.get(call)
    if operation is None:
        return None, [Diagnostic(f"unknown operation {call!r} (supported: {_SUPPORTED})", where)]
    if "with" not in body:
        return None, [Diagnostic(f"{call} requires `with` (its parameters)", pointer)]
    with_, with_pointer = body["with"], pointer_join(pointer, "with")
    if (problem := expect_object(with_, with_pointer, "with")) is not None:
        return None, [problem]
    assert isinstance(with_, dict)
    out = operation.check_params(with_, with_pointer)
    out += check_template(with_, with_pointer, ctx.names)
    return (None if out else CallBody(call, with_)), out


def _set(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    value, where = body["set"], pointer_join(pointer, "set")
    if isinstance(value, str) and not is_expression(value):
        message = "set must be an object, or one expression written `${ … }`"
        return None, [Diagnostic(message, where)]
    if not isinstance(value, dict | str):
        return None, [Diagnostic(f"set must be an object, not {type_name(value)}", where)]
    out = check_template(value, where, ctx.names)
    return (None if out else SetBody(value)), out


def _switch(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    value, where = body["switch"], pointer_join(pointer, "switch")
    if not isinstance(value, list) or not value:
        return None, [Diagnostic("switch must be a list of at least one case", where)]
    out: list[Diagnostic] = []
    cases: list[SwitchCase] = []
    for index, item in enumerate(value):
        at = pointer_join(where, index)
        if not isinstance(item, dict) or len(item) != 1:
            message = "each case is a mapping with one key, its name: `- caseName: {when, then}`"
            out.append(Diagnostic(message, at))
            continue
        ((name, case),) = item.items()
        out += check_name(name, pointer_join(at, name), "a case name")
        found, problems = _case(name, case, pointer_join(at, name), ctx)
        out += problems
        if found is not None:
            cases.append(found)
    if sum(1 for c in cases if c.when is None) > 1:
        out.append(Diagnostic("a switch has at most one default case (without `when`)", where))
    return (None if out else SwitchBody(tuple(cases))), out


def _case(
    name: str, case: Json, pointer: str, ctx: Context
) -> tuple[SwitchCase | None, list[Diagnostic]]:
    if (problem := expect_object(case, pointer, "a case")) is not None:
        return None, [problem]
    assert isinstance(case, dict)
    out = closed(case, pointer, ("when", "then"))
    if "then" not in case:
        out.append(Diagnostic("a case needs `then` (where the flow goes)", pointer))
    else:
        then_at = pointer_join(pointer, "then")
        out += check_flow(case["then"], list(ctx.siblings), then_at, ctx.in_branches)
    if "when" in case:
        out += _expression(case["when"], pointer_join(pointer, "when"), "when", ctx)
    if out:
        return None, out
    return SwitchCase(name, case.get("when"), str(case["then"])), out


def _do(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    tasks, out = read_list(body["do"], pointer_join(pointer, "do"), ctx.inner())
    return (None if tasks is None else DoBody(tasks)), out


def _for(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    spec, where = body["for"], pointer_join(pointer, "for")
    if (problem := expect_object(spec, where, "for")) is not None:
        return None, [problem]
    assert isinstance(spec, dict)
    out = closed(spec, where, ("each", "in", "at"))
    each = _variable(spec, "each", "item", where, out)
    at = _variable(spec, "at", "index", where, out)
    if each == at:
        out.append(Diagnostic(f"for.each and for.at name the same variable ${each}", where))
    if "in" not in spec:
        out.append(Diagnostic("for needs `in` (an expression giving the items)", where))
    else:
        out += _expression(spec["in"], pointer_join(where, "in"), "for.in", ctx)
    if "while" in body:
        out += _expression(body["while"], pointer_join(pointer, "while"), "while", ctx, {each, at})
    if "do" not in body:
        out.append(Diagnostic("for needs `do` (the tasks of each iteration)", pointer))
        return None, out
    tasks, found = read_list(
        body["do"], pointer_join(pointer, "do"), ctx.inner(frozenset({each, at}))
    )
    out += found
    if tasks is None or out:
        return None, out
    return ForBody(each, spec["in"], at, body.get("while"), tasks), out


def _fork(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    spec, where = body["fork"], pointer_join(pointer, "fork")
    if (problem := expect_object(spec, where, "fork")) is not None:
        return None, [problem]
    assert isinstance(spec, dict)
    out = closed(spec, where, ("branches", "compete"))
    compete = spec.get("compete", False)
    if not isinstance(compete, bool):
        out.append(Diagnostic("fork.compete must be true or false", pointer_join(where, "compete")))
    if "branches" not in spec:
        return None, [*out, Diagnostic("fork needs `branches` (the tasks to run at once)", where)]
    branches, at = spec["branches"], pointer_join(where, "branches")
    width = ctx.limits.max_fork_width
    if isinstance(branches, list) and len(branches) > width:
        message = f"fork has {len(branches)} branches; the limit is {width} (max_fork_width)"
        return None, [*out, Diagnostic(message, at)]
    tasks, found = read_list(branches, at, ctx.inner(), branches=True)
    out += found
    if tasks is None or out:
        return None, out
    return ForkBody(tasks, bool(compete)), out


def _try(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    tasks, out = read_list(body["try"], pointer_join(pointer, "try"), ctx.inner())
    if "catch" not in body:
        return None, [*out, Diagnostic("try needs `catch` (which errors it handles)", pointer)]
    catch, problems = uses.read_catch(body["catch"], pointer_join(pointer, "catch"), ctx)
    out += problems
    if tasks is None or catch is None or out:
        return None, out
    return TryBody(tasks, catch), out


def _raise(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    spec, where = body["raise"], pointer_join(pointer, "raise")
    if (problem := expect_object(spec, where, "raise")) is not None:
        return None, [problem]
    assert isinstance(spec, dict)
    out = closed(spec, where, ("error",))
    if "error" not in spec:
        return None, [*out, Diagnostic("raise needs `error`", where)]
    error, problems = uses.read_error(spec["error"], pointer_join(where, "error"), ctx)
    out += problems
    return (None if error is None or out else RaiseBody(error)), out


def _wait(body: Mapping[str, Json], pointer: str, ctx: Context) -> Read:
    value, where = body["wait"], pointer_join(pointer, "wait")
    if isinstance(value, str) and is_expression(value):
        out = check_template(value, where, ctx.names)
        return (None if out else WaitBody(None, value)), out
    seconds = duration_seconds(value)
    if seconds is None:
        message = (
            "wait must be a duration: {days, hours, minutes, seconds, milliseconds} (integers), "
            "ISO-8601 such as PT30S (no years or months), or an expression `${ … }`"
        )
        return None, [Diagnostic(message, where)]
    if seconds > ctx.limits.max_wait_s:
        message = f"wait is {seconds:g} s; the limit is {ctx.limits.max_wait_s:g} s (max_wait_s)"
        return None, [Diagnostic(message, where)]
    return WaitBody(seconds), []


def _expression(
    value: Json, pointer: str, name: str, ctx: Context, names: set[str] | None = None
) -> list[Diagnostic]:
    """A field that is an expression by definition: bare jq or `${ … }`."""
    if not isinstance(value, str):
        return [Diagnostic(f"{name} must be a jq expression (a string)", pointer)]
    scope = ctx.names | frozenset(names or ())
    return check_flow_expression(value, pointer, name, scope)


def _variable(
    spec: Mapping[str, Json], key: str, default: str, pointer: str, out: list[Diagnostic]
) -> str:
    value = spec.get(key, default)
    problem = uses.variable_problem(value)
    if problem is not None:
        out.append(Diagnostic(f"for.{key}: {problem}", pointer_join(pointer, key)))
        return default
    assert isinstance(value, str)
    return value


_READERS: dict[TaskKind, Callable[[Mapping[str, Json], str, Context], Read]] = {
    TaskKind.CALL: _call,
    TaskKind.SET: _set,
    TaskKind.SWITCH: _switch,
    TaskKind.DO: _do,
    TaskKind.FOR: _for,
    TaskKind.FORK: _fork,
    TaskKind.TRY: _try,
    TaskKind.RAISE: _raise,
    TaskKind.WAIT: _wait,
}
_OWN_KEYS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.CALL: ("call", "with"),
    TaskKind.SET: ("set",),
    TaskKind.SWITCH: ("switch",),
    TaskKind.DO: ("do",),
    TaskKind.FOR: ("for", "while", "do"),
    TaskKind.FORK: ("fork",),
    TaskKind.TRY: ("try", "catch"),
    TaskKind.RAISE: ("raise",),
    TaskKind.WAIT: ("wait",),
}
