"""Trace spans as values. The engine and the jobs client describe the spans of a run (a task
instance's, a jobs API call's) with their ids and times; the composition root hands them a
`SpanSink` that builds and exports them away from the event loop (`workflowd.telemetry`), so
what tracing costs a run's path is a tuple and a queue put.

`CURRENT` holds the (trace id, span id) of the task instance whose work runs in this context,
the parent of the jobs API calls made for it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

Attributes = Mapping[str, str | int | bool]


class SpanKind(StrEnum):
    INTERNAL = "internal"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class SpanRecord:
    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    """None for a trace's root span."""
    start_ns: int
    end_ns: int
    attributes: Attributes
    kind: SpanKind = SpanKind.INTERNAL
    error: str = ""
    """Why it failed (the span's status is then ERROR)."""


class SpanSink(Protocol):
    def record(self, span: SpanRecord) -> None: ...


CURRENT: ContextVar[tuple[int, int] | None] = ContextVar("workflowd_current_span", default=None)


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def traceparent(trace_id: int, span_id: int) -> str:
    """The W3C `traceparent` header of a sampled span."""
    return f"00-{trace_id:032x}-{span_id:016x}-01"
