"""A run's cursor: where the interpretation of its definition stands, as plain data.

The cursor is a tree that mirrors the definition's: the run's `do` list is a `ListFrame` whose
current task is a `TaskFrame`; a `do`, `for` or `try` task holds the `ListFrame` it is running,
a `fork` holds one `TaskFrame` per live branch. Each frame says which phase of its task's data
flow it is in (`if`, `input.from`, the body, `output.as`, `export.as`) and what it waits for.
The cursor is committed with every step's end (`to_json`), and a run resumes from it after a
restart: mid-loop, mid-branch, mid-backoff, mid-wait.

A task instance is one execution of a task: its reference plus the path of the enclosing loop
iterations (`i3`), retry attempts (`a2`) and backward `then` jumps (`g1`) that make it unique
within the run (`instance_key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from workflowd.domain.json import Json, JsonObject

Path = tuple[str, ...]


class Phase(StrEnum):
    IF = "if"
    INPUT = "input"
    BODY = "body"
    OUTPUT = "output"
    EXPORT = "export"


class RunPhase(StrEnum):
    INPUT = "input"
    BODY = "body"
    OUTPUT = "output"
    DONE = "done"


# A scope's segment when it is at its first: a `try`'s first attempt, a list's first run.
_FIRST = frozenset({"a1", "g0"})


def instance_key(reference: str, path: Path) -> str:
    """`/do/0/each/do/0/build@i2`: a task instance's identity within its run.

    The path has a segment per enclosing scope: `i` for each `for` iteration, `a` for each
    `try`'s attempt, `g` for each run of a task list (a `then` jumped back). A first `a` or `g`
    is left out of the key unless a later segment of its kind is not a first, so that keys
    stay short (and as they were before paths held first segments) while saying which scope
    is where: the outer `try`'s second attempt is `a2`, the inner one's `a1.a2`."""
    kept: list[str] = []
    needed: set[str] = set()
    for part in reversed(path):
        if part in _FIRST and part[0] not in needed:
            continue
        kept.append(part)
        if part not in _FIRST:
            needed.add(part[0])
    return f"{reference}@{'.'.join(reversed(kept))}" if kept else reference


def iterations(path: Path) -> tuple[int, ...]:
    """The indexes of the enclosing `for` iterations, outermost first."""
    return tuple(int(part[1:]) for part in path if part[0] == "i")


def attempt(path: Path) -> int:
    """The attempt of the innermost enclosing `try` that retries (1 when none did)."""
    for part in reversed(path):
        if part[0] == "a":
            return int(part[1:])
    return 1


@dataclass(slots=True)
class ListFrame:
    """A task list being run: its current task, and the data flowing into it."""

    reference: str
    index: int
    data: Json
    path: Path
    scope: dict[str, Json] = field(default_factory=dict)
    """Variables its tasks' expressions see: loop variables, a caught error."""
    generation: int = 0
    """How many times a task of this list ran again (a `then` jumped back): part of its
    instances' paths, so that each run of a task is its own instance."""
    seen: list[int] = field(default_factory=list)
    """The tasks that ran in this generation."""
    task: TaskFrame | None = None

    def instance_path(self) -> Path:
        return (*self.path, f"g{self.generation}")


@dataclass(slots=True)
class TaskFrame:
    """One task instance in progress. The fields after `deadline` belong to some kinds only."""

    key: str
    reference: str
    path: Path
    order: int
    phase: Phase
    raw: Json
    started_at: str
    scope: dict[str, Json] = field(default_factory=dict)
    input: Json = None
    output: Json = None
    deadline: str = ""
    pending: str = ""
    """The step this frame waits for ("" while it waits for its children)."""
    flow: str = ""
    """The flow directive a `switch` chose, applied when the task ends."""
    body: ListFrame | None = None
    """`do`, `for` (the current iteration), `try` (the attempt, or `catch.do`)."""
    branches: list[TaskFrame | None] | None = None
    """`fork`: each branch's frame while it runs."""
    results: list[Json] | None = None
    ended: list[str] | None = None
    """`fork`: how each branch ended ("" running, "done", "failed")."""
    items: list[Json] | None = None
    item: int = 0
    case: int = 0
    attempt: int = 1
    in_catch: bool = False
    error: JsonObject | None = None
    failures: list[JsonObject] | None = None
    """`fork` with `compete`: the errors of the branches that failed while others ran."""
    wake_at: str = ""
    attempt_deadline: str = ""


@dataclass(slots=True)
class Cursor:
    phase: RunPhase
    data: Json
    """The run's input after `input.from`; in the OUTPUT phase, the last task's output."""
    context: JsonObject
    root: ListFrame | None = None
    order: int = 0
    """How many task instances the run has started."""
    pending: str = ""
    deadline: str = ""
    output: Json = None


# --- JSON ------------------------------------------------------------------------------------


def to_json(cursor: Cursor) -> JsonObject:
    out: JsonObject = {
        "phase": cursor.phase.value,
        "data": cursor.data,
        "context": cursor.context,
        "order": cursor.order,
    }
    _put(out, "pending", cursor.pending, "")
    _put(out, "deadline", cursor.deadline, "")
    _put(out, "output", cursor.output, None)
    if cursor.root is not None:
        out["root"] = _list_json(cursor.root)
    return out


def from_json(data: JsonObject) -> Cursor:
    root = data.get("root")
    context = data.get("context")
    return Cursor(
        phase=RunPhase(str(data["phase"])),
        data=data.get("data"),
        context=context if isinstance(context, dict) else {},
        root=_list_from(root) if isinstance(root, dict) else None,
        order=_int(data.get("order")),
        pending=str(data.get("pending", "")),
        deadline=str(data.get("deadline", "")),
        output=data.get("output"),
    )


def _put(out: JsonObject, key: str, value: Any, default: Any) -> None:
    if value != default:
        out[key] = value


def _int(value: Json) -> int:
    return value if isinstance(value, int) else 0


def _list_json(frame: ListFrame) -> JsonObject:
    out: JsonObject = {
        "ref": frame.reference,
        "index": frame.index,
        "data": frame.data,
        "path": list(frame.path),
    }
    _put(out, "scope", frame.scope, {})
    _put(out, "gen", frame.generation, 0)
    _put(out, "seen", frame.seen, [])
    if frame.task is not None:
        out["task"] = _task_json(frame.task)
    return out


def _list_from(data: JsonObject) -> ListFrame:
    task, scope, path, seen = (
        data.get("task"),
        data.get("scope"),
        data.get("path"),
        data.get("seen"),
    )
    return ListFrame(
        reference=str(data["ref"]),
        index=_int(data.get("index")),
        data=data.get("data"),
        path=tuple(str(p) for p in path) if isinstance(path, list) else (),
        scope=scope if isinstance(scope, dict) else {},
        generation=_int(data.get("gen")),
        seen=[i for i in seen if isinstance(i, int)] if isinstance(seen, list) else [],
        task=_task_from(task) if isinstance(task, dict) else None,
    )


_TASK_SCALARS: tuple[tuple[str, Any], ...] = (
    ("input", None),
    ("output", None),
    ("deadline", ""),
    ("pending", ""),
    ("flow", ""),
    ("results", None),
    ("ended", None),
    ("items", None),
    ("item", 0),
    ("case", 0),
    ("attempt", 1),
    ("in_catch", False),
    ("error", None),
    ("failures", None),
    ("wake_at", ""),
    ("attempt_deadline", ""),
)


def _task_json(frame: TaskFrame) -> JsonObject:
    out: JsonObject = {
        "key": frame.key,
        "ref": frame.reference,
        "path": list(frame.path),
        "order": frame.order,
        "phase": frame.phase.value,
        "raw": frame.raw,
        "started_at": frame.started_at,
    }
    _put(out, "scope", frame.scope, {})
    for name, default in _TASK_SCALARS:
        _put(out, name, getattr(frame, name), default)
    if frame.body is not None:
        out["body"] = _list_json(frame.body)
    if frame.branches is not None:
        out["branches"] = [None if b is None else _task_json(b) for b in frame.branches]
    return out


def _task_from(data: JsonObject) -> TaskFrame:
    path, scope, body, branches = (
        data.get("path"),
        data.get("scope"),
        data.get("body"),
        data.get("branches"),
    )
    frame = TaskFrame(
        key=str(data["key"]),
        reference=str(data["ref"]),
        path=tuple(str(p) for p in path) if isinstance(path, list) else (),
        order=_int(data.get("order")),
        phase=Phase(str(data["phase"])),
        raw=data.get("raw"),
        started_at=str(data.get("started_at", "")),
        scope=scope if isinstance(scope, dict) else {},
        body=_list_from(body) if isinstance(body, dict) else None,
        branches=(
            [_task_from(b) if isinstance(b, dict) else None for b in branches]
            if isinstance(branches, list)
            else None
        ),
    )
    for name, default in _TASK_SCALARS:
        setattr(frame, name, data.get(name, default))
    return frame


def clone(cursor: Cursor) -> Cursor:
    """A copy whose frames can change without touching `cursor` (values are shared: they are
    never changed in place)."""
    return Cursor(
        phase=cursor.phase,
        data=cursor.data,
        context=cursor.context,
        root=None if cursor.root is None else _clone_list(cursor.root),
        order=cursor.order,
        pending=cursor.pending,
        deadline=cursor.deadline,
        output=cursor.output,
    )


def _clone_list(frame: ListFrame) -> ListFrame:
    return ListFrame(
        reference=frame.reference,
        index=frame.index,
        data=frame.data,
        path=frame.path,
        scope=frame.scope,
        generation=frame.generation,
        seen=list(frame.seen),
        task=None if frame.task is None else _clone_task(frame.task),
    )


def _clone_task(frame: TaskFrame) -> TaskFrame:
    copy = TaskFrame(
        key=frame.key,
        reference=frame.reference,
        path=frame.path,
        order=frame.order,
        phase=frame.phase,
        raw=frame.raw,
        started_at=frame.started_at,
        scope=frame.scope,
        body=None if frame.body is None else _clone_list(frame.body),
        branches=(
            None
            if frame.branches is None
            else [None if b is None else _clone_task(b) for b in frame.branches]
        ),
    )
    for name, _ in _TASK_SCALARS:
        value = getattr(frame, name)
        # `items` is never changed in place; the fork's lists are, branch by branch.
        setattr(copy, name, list(value) if isinstance(value, list) and name != "items" else value)
    return copy
