"""The spec's `schedule` block as fire instants, through the scheduler's pure time maths."""

from __future__ import annotations

import functools
from datetime import datetime

from workflowd.domain.definition import Schedule
from workflowd.scheduler import (
    CronSchedule,
    FireSchedule,
    count_fires,
    fires_between,
    latest_fires,
    next_fires,
    parse_every,
)
from workflowd.scheduler import next_fire as _next_fire


def fire_schedule(spec: Schedule, anchor: datetime) -> FireSchedule:
    if spec.every_s is not None:
        return parse_every(spec.every_s, anchor)
    return _cron(spec.cron, spec.timezone)


@functools.lru_cache(maxsize=4096)
def _cron(expression: str, timezone: str) -> CronSchedule:
    # Validated when the version was stored; parsing again on every fire is wasted work.
    return CronSchedule(expression, timezone)


def next_fire(spec: Schedule, anchor: datetime, after: datetime) -> datetime | None:
    return _next_fire(fire_schedule(spec, anchor), after)


def upcoming(spec: Schedule, anchor: datetime, after: datetime, n: int) -> list[datetime]:
    return next_fires(fire_schedule(spec, anchor), after, n)


def between(
    spec: Schedule, anchor: datetime, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    """Instants in [start, end), at most `limit`."""
    return fires_between(fire_schedule(spec, anchor), start, end, limit)


def latest(
    spec: Schedule, anchor: datetime, start: datetime, end: datetime, n: int
) -> list[datetime]:
    """The last `n` instants in [start, end] (`end` included), ascending."""
    return latest_fires(fire_schedule(spec, anchor), start, end, n)


def count(spec: Schedule, anchor: datetime, start: datetime, end: datetime, cap: int) -> int:
    """Instants in [start, end), counted up to `cap` + 1."""
    return count_fires(fire_schedule(spec, anchor), start, end, cap)
