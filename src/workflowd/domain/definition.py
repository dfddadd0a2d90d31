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
    """The spec's `schedule` block: `cron` split into the cron text and its IANA zone (UTC
    unless `CRON_TZ=`), or `every` as seconds (`cron` is then empty)."""

    cron: str = ""
    timezone: str = "UTC"
    every_s: float | None = None

    def describe(self) -> str:
        if self.every_s is not None:
            return f"every {self.every_s:g} s"
        zone = "" if self.timezone == "UTC" else f"CRON_TZ={self.timezone} "
        return f"cron {zone}{self.cron}"


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
