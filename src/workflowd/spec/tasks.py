"""Task lists and what every task has: one-key items with unique names, the task's kind, and
the fields common to all kinds (`if`, `then`, `input.from`, `output.as`, `export.as`,
`timeout`, `metadata`). Each kind's own body is read by `spec/kinds.py`.

Reading returns what it could build and every diagnostic: a task list is built only when none
of its tasks has an error, so a definition exists exactly when the document is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from workflowd.domain.definition import (
    ErrorDefinition,
    Flow,
    FlowLimits,
    Task,
    TaskBody,
    TaskKind,
    TaskList,
)
from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import Json
from workflowd.domain.retry import RetryPolicy
from workflowd.spec.fields import (
    check_flow_expression,
    check_timeout,
    closed,
    expect_object,
    type_name,
)
from workflowd.spec.names import check_name

KINDS = ("call", "set", "switch", "do", "for", "fork", "try", "raise", "wait")
REFUSED_KINDS = {
    "listen": "`listen` tasks are not supported: workflowd does not consume events",
    "emit": "`emit` tasks are not supported: workflowd does not publish events",
    "run": "`run` tasks are not supported: workflowd runs no containers, scripts, shells or "
    "sub-workflows; a task is a job of the jobs system (`call`)",
}
COMMON_KEYS = ("if", "then", "input", "output", "export", "timeout", "metadata")
_SCHEMA_REFUSED = "schema validation of {0} is not supported yet"


@dataclass
class Context:
    """What reading a task needs beyond its own text."""

    limits: FlowLimits
    max_tasks: int
    errors: Mapping[str, ErrorDefinition] = field(default_factory=dict)
    retries: Mapping[str, RetryPolicy] = field(default_factory=dict)
    names: frozenset[str] = frozenset()
    """Expression variables in scope besides the standard ones (loop variables, a caught
    error)."""
    depth: int = 0
    siblings: tuple[str, ...] = ()
    """The names of the tasks in the list being read (a `switch` case's `then` targets)."""
    in_branches: bool = False
    counted: list[int] = field(default_factory=lambda: [0])
    """Tasks read so far in the whole document (shared by nested contexts)."""

    def inner(self, names: frozenset[str] = frozenset()) -> Context:
        return replace(self, names=self.names | names, depth=self.depth + 1)


Built = tuple[TaskList | None, list[Diagnostic]]


def read_list(value: Json, pointer: str, ctx: Context, *, branches: bool = False) -> Built:
    """A list of one-key task items at `pointer` (`branches`: a fork's, whose tasks run side
    by side, so a `then` may not name another)."""
    if not isinstance(value, list):
        return None, [Diagnostic(f"a task list must be a list, not {type_name(value)}", pointer)]
    if not value:
        return None, [Diagnostic("a task list needs at least one task", pointer)]
    if ctx.depth > ctx.limits.max_depth:
        message = f"task lists are nested more than {ctx.limits.max_depth} deep (max_depth)"
        return None, [Diagnostic(message, pointer)]
    ctx.counted[0] += len(value)
    if ctx.counted[0] > ctx.max_tasks:
        message = f"the workflow has more than {ctx.max_tasks} tasks, its limit (max_tasks)"
        return None, [Diagnostic(message, pointer)]
    out: list[Diagnostic] = []
    tasks: list[Task] = []
    items = _items(value, pointer, out)
    names = [name for _, name, _ in items]
    here = replace(ctx, siblings=tuple(names), in_branches=branches)
    for position, name, body in items:
        where = pointer_join(pointer, position, name)
        task, found = read_task(name, body, where, position, here)
        out += found
        out += _check_then(task, body, names, where, branches)
        if task is not None:
            tasks.append(task)
    if out or len(tasks) != len(value):
        return None, out
    return TaskList(pointer, tuple(tasks)), out


def _items(value: list[Json], pointer: str, out: list[Diagnostic]) -> list[tuple[int, str, Json]]:
    """(position, name, body) of each well-formed item."""
    items: list[tuple[int, str, Json]] = []
    seen: set[str] = set()
    for position, item in enumerate(value):
        where = pointer_join(pointer, position)
        if not isinstance(item, dict) or len(item) != 1:
            out.append(
                Diagnostic(
                    "each item of a task list must be a mapping with exactly one key, the "
                    "task's name: `- taskName: {call: …}`",
                    where,
                )
            )
            continue
        ((name, body),) = item.items()
        named = pointer_join(where, name)
        if name in seen:
            out.append(Diagnostic(f"duplicate task name {name!r}", named))
        seen.add(name)
        if not name.strip():
            out.append(Diagnostic("task names must not be empty", named))
        out += check_name(name, named)
        items.append((position, name, body))
    return items


def _check_then(
    task: Task | None, body: Json, names: list[str], pointer: str, branches: bool
) -> list[Diagnostic]:
    if not isinstance(body, dict) or "then" not in body:
        return []
    return check_flow(body["then"], names, pointer_join(pointer, "then"), branches)


def check_flow(value: Json, names: list[str], pointer: str, branches: bool) -> list[Diagnostic]:
    """A flow directive: `continue`, `exit`, `end`, or a task of the same list."""
    if not isinstance(value, str):
        return [Diagnostic(f"then must be a string, not {type_name(value)}", pointer)]
    if value in (Flow.CONTINUE, Flow.EXIT, Flow.END):
        return []
    if branches:
        message = (
            f"then: {value!r}: a fork's branches run side by side, so a branch may only "
            "`continue`, `exit` or `end`"
        )
        return [Diagnostic(message, pointer)]
    if value not in names:
        known = ", ".join(repr(n) for n in names)
        message = (
            f"then: {value!r} names no task of this list: use continue, exit, end or one of {known}"
        )
        return [Diagnostic(message, pointer)]
    return []


def read_task(
    name: str, body: Json, pointer: str, position: int, ctx: Context
) -> tuple[Task | None, list[Diagnostic]]:
    from workflowd.spec import kinds  # the kinds read their nested lists with `read_list`

    if (problem := expect_object(body, pointer, "a task")) is not None:
        return None, [problem]
    assert isinstance(body, dict)
    for key, reason in REFUSED_KINDS.items():
        if key in body:
            return None, [Diagnostic(reason, pointer_join(pointer, key))]
    found = [kind for kind in KINDS if kind in body]
    if "for" in found and "do" in found:
        found.remove("do")  # a `for` task's body is its `do`
    if len(found) != 1:
        message = (
            f"a task needs exactly one of {', '.join(KINDS)}"
            if not found
            else f"a task has one kind, not {' and '.join(found)}"
        )
        if not found and "with" in body:
            message = "a task with `with` needs `call` (the operation it calls)"
        return None, [Diagnostic(message, pointer)]
    kind = TaskKind(found[0])
    task_body, out = kinds.read_body(kind, body, pointer, ctx)
    out += _check_common(body, pointer, ctx)
    if task_body is None or out:
        return None, out
    return _task(name, pointer, position, kind, task_body, body), out


def _task(
    name: str,
    pointer: str,
    position: int,
    kind: TaskKind,
    task_body: TaskBody,
    body: dict[str, Json],
) -> Task:
    return Task(
        name=name,
        reference=pointer,
        position=position,
        kind=kind,
        body=task_body,
        if_=body.get("if"),
        then=str(body.get("then", Flow.CONTINUE)),
        input_from=_object(body.get("input")).get("from"),
        output_as=_object(body.get("output")).get("as"),
        export_as=_object(body.get("export")).get("as"),
        timeout_s=check_timeout(body["timeout"], "")[0] if "timeout" in body else None,
        metadata=_object(body.get("metadata")),
    )


def _check_common(body: Mapping[str, Json], pointer: str, ctx: Context) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    if "if" in body:
        out += check_flow_expression(body["if"], pointer_join(pointer, "if"), "if", ctx.names)
        if not isinstance(body["if"], str):
            out = [Diagnostic("if must be a jq expression (a string)", pointer_join(pointer, "if"))]
    for section, name in (("input", "from"), ("output", "as"), ("export", "as")):
        if section in body:
            out += _check_data_flow(
                body[section], pointer_join(pointer, section), section, name, ctx
            )
    if "timeout" in body:
        out += check_timeout(body["timeout"], pointer_join(pointer, "timeout"))[1]
    if "metadata" in body:
        where = pointer_join(pointer, "metadata")
        if (problem := expect_object(body["metadata"], where, "metadata")) is not None:
            out.append(problem)
    return out


def _check_data_flow(
    value: Json, pointer: str, section: str, field_name: str, ctx: Context
) -> list[Diagnostic]:
    """`input.from`, `output.as`, `export.as`; their `schema` siblings are refused."""
    if (problem := expect_object(value, pointer, section)) is not None:
        return [problem]
    assert isinstance(value, dict)
    out = closed(value, pointer, (field_name,), {"schema": _SCHEMA_REFUSED.format(section)})
    if field_name in value:
        where = pointer_join(pointer, field_name)
        out += check_flow_expression(value[field_name], where, f"{section}.{field_name}", ctx.names)
    return out


def _object(value: Json) -> dict[str, Json]:
    return value if isinstance(value, dict) else {}
