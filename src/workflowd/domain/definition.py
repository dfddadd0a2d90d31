"""A validated workflow definition: what `spec/` produces and `engine/` executes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from workflowd.domain.json import Json


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """One `call` task. `with_`, `input_from`, `output_as`, `export_as` are kept as written
    (strings that are wholly `${ … }` are expressions); the evaluator resolves them at run time."""

    index: int
    name: str
    call: str
    with_: Mapping[str, Json]
    reference: str
    input_from: Json = None
    output_as: Json = None
    export_as: Json = None
    timeout_s: float | None = None
    metadata: Mapping[str, Json] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Schedule:
    """`schedule.cron` split into the cron text and its IANA zone (UTC unless `CRON_TZ=`)."""

    cron: str
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    dsl: str
    namespace: str
    name: str
    version: str
    tasks: tuple[TaskDefinition, ...]
    title: str | None = None
    summary: str | None = None
    input_schema: Json = None
    input_from: Json = None
    output_as: Json = None
    timeout_s: float | None = None
    schedule: Schedule | None = None
