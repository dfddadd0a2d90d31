"""The scheduler's time maths: parse `schedule.cron` / `schedule.every` and compute fire instants.
Pure (no I/O, no clock reads); the DST rules are in `fires.py`."""

from workflowd.scheduler.cron import (
    MAX_CRON_LENGTH,
    CronSchedule,
    ScheduleSyntaxError,
    parse_schedule_cron,
)
from workflowd.scheduler.fires import (
    MAX_EVERY,
    MIN_EVERY,
    FireSchedule,
    IntervalSchedule,
    count_fires,
    fires_between,
    latest_fires,
    next_fire,
    next_fires,
    parse_every,
)

__all__ = [
    "MAX_CRON_LENGTH",
    "MAX_EVERY",
    "MIN_EVERY",
    "CronSchedule",
    "FireSchedule",
    "IntervalSchedule",
    "ScheduleSyntaxError",
    "count_fires",
    "fires_between",
    "latest_fires",
    "next_fire",
    "next_fires",
    "parse_every",
    "parse_schedule_cron",
]
