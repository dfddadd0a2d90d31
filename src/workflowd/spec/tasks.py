"""The `do` list: one-key task items, unique names, and the supported `call` task."""

from __future__ import annotations

from collections.abc import Mapping

from workflowd.domain.definition import TaskDefinition
from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import Json
from workflowd.spec.fields import (
    check_flow_expression,
    check_template,
    check_timeout,
    closed,
    expect_object,
    type_name,
)
from workflowd.spec.names import check_name
from workflowd.spec.operations import OPERATIONS

# The DSL's other task kinds, by their distinguishing key; `do` last because `for` has one too.
UNSUPPORTED_KINDS = (
    "switch",
    "for",
    "fork",
    "try",
    "set",
    "raise",
    "wait",
    "listen",
    "emit",
    "run",
    "do",
)
PROTOCOL_CALLS = ("http", "grpc", "openapi", "asyncapi", "a2a", "mcp")
_SUPPORTED = ", ".join(OPERATIONS)
_TASK_KEYS = ("call", "with", "input", "output", "export", "timeout", "metadata")
_TASK_REFUSED = {
    "if": "`if` (conditional tasks) is not supported yet: every task runs",
    "then": "`then` (flow directives) is not supported yet: tasks run in order",
}
_SCHEMA_REFUSED = "schema validation of {0} is not supported yet"


def check_do(do: Json, max_tasks: int) -> list[Diagnostic]:
    if not isinstance(do, list):
        return [Diagnostic(f"do must be a list of tasks, not {type_name(do)}", "/do")]
    if not do:
        return [Diagnostic("do must list at least one task", "/do")]
    if len(do) > max_tasks:
        return [Diagnostic(f"do has {len(do)} tasks; the limit is {max_tasks}", "/do")]
    out: list[Diagnostic] = []
    seen: set[str] = set()
    for index, item in enumerate(do):
        where = pointer_join("/do", index)
        if not isinstance(item, dict) or len(item) != 1:
            out.append(
                Diagnostic(
                    "each item of do must be a mapping with exactly one key, the task's name: "
                    "`- taskName: {call: …}`",
                    where,
                )
            )
            continue
        ((name, body),) = item.items()
        if name in seen:
            out.append(Diagnostic(f"duplicate task name {name!r}", pointer_join(where, name)))
        seen.add(name)
        if not name.strip():
            out.append(Diagnostic("task names must not be empty", pointer_join(where, name)))
        out += check_name(name, pointer_join(where, name))
        out += check_task(body, pointer_join(where, name))
    return out


def check_task(body: Json, pointer: str) -> list[Diagnostic]:
    if (problem := expect_object(body, pointer, "a task")) is not None:
        return [problem]
    assert isinstance(body, dict)
    for kind in UNSUPPORTED_KINDS:
        if kind in body:
            message = (
                f"`{kind}` tasks are not supported yet; workflowd runs `call` tasks of {_SUPPORTED}"
            )
            return [Diagnostic(message, pointer_join(pointer, kind))]
    out = closed(body, pointer, _TASK_KEYS, _TASK_REFUSED)
    if "call" not in body:
        return [*out, Diagnostic(f"a task needs `call` (one of {_SUPPORTED})", pointer)]
    out += _check_call(body, pointer)
    out += _check_data_flow(body, pointer)
    if "timeout" in body:
        out += check_timeout(body["timeout"], pointer_join(pointer, "timeout"))[1]
    if "metadata" in body:
        where = pointer_join(pointer, "metadata")
        if (problem := expect_object(body["metadata"], where, "metadata")) is not None:
            out.append(problem)
    return out


def _check_call(body: Mapping[str, Json], pointer: str) -> list[Diagnostic]:
    call, where = body["call"], pointer_join(pointer, "call")
    if not isinstance(call, str):
        return [Diagnostic(f"call must be an operation name, not {type_name(call)}", where)]
    if call in PROTOCOL_CALLS:
        return [Diagnostic(f"`call: {call}` is not supported; workflowd calls {_SUPPORTED}", where)]
    operation = OPERATIONS.get(call)
    if operation is None:
        return [Diagnostic(f"unknown operation {call!r} (supported: {_SUPPORTED})", where)]
    with_pointer = pointer_join(pointer, "with")
    if "with" not in body:
        return [Diagnostic(f"{call} requires `with` (its parameters)", pointer)]
    with_ = body["with"]
    if (problem := expect_object(with_, with_pointer, "with")) is not None:
        return [problem]
    assert isinstance(with_, dict)
    return operation.check_params(with_, with_pointer) + check_template(with_, with_pointer)


def _check_data_flow(body: Mapping[str, Json], pointer: str) -> list[Diagnostic]:
    """`input.from`, `output.as`, `export.as`; their `schema` siblings are refused."""
    out: list[Diagnostic] = []
    for section, field in (("input", "from"), ("output", "as"), ("export", "as")):
        if section not in body:
            continue
        where = pointer_join(pointer, section)
        value = body[section]
        if (problem := expect_object(value, where, section)) is not None:
            out.append(problem)
            continue
        assert isinstance(value, dict)
        out += closed(value, where, (field,), {"schema": _SCHEMA_REFUSED.format(section)})
        if field in value:
            out += check_flow_expression(
                value[field], pointer_join(where, field), f"{section}.{field}"
            )
    return out


def build_tasks(do: list[Json]) -> tuple[TaskDefinition, ...]:
    """The tasks of a `do` list that `check_do` accepted."""
    tasks = []
    for index, item in enumerate(do):
        assert isinstance(item, dict)
        ((name, body),) = item.items()
        assert isinstance(body, dict)
        tasks.append(
            TaskDefinition(
                index=index,
                name=name,
                call=str(body["call"]),
                with_=_object(body.get("with")),
                reference=pointer_join("/do", index, name),
                input_from=_object(body.get("input")).get("from"),
                output_as=_object(body.get("output")).get("as"),
                export_as=_object(body.get("export")).get("as"),
                timeout_s=check_timeout(body["timeout"], "")[0] if "timeout" in body else None,
                metadata=_object(body.get("metadata")),
            )
        )
    return tuple(tasks)


def _object(value: Json) -> dict[str, Json]:
    return value if isinstance(value, dict) else {}
