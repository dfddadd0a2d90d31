"""When schedules fire. Pure: no clock reads and no I/O — `after` and the anchor are passed in.

Instants going in must be timezone-aware; instants coming out are UTC. `next_fire` is strictly
after `after`; `fires_between` lists fires in [start, end), ascending, without duplicates.

Cron in a zone: each LOCAL wall-clock time the cron matches fires at most once.

* Gap (spring forward: the local time does not exist). It fires at the first instant after the
  gap, the moment the clocks jump. `30 2 * * *` in America/New_York on 2025-03-09 fires at
  03:00 EDT (07:00Z); in Australia/Lord_Howe, whose clocks jump 02:00 → 02:30, `15 2 * * *`
  fires at 02:30. Several matched times in one gap (`*/15 2 * * *`) and a matched time at the
  gap's end (03:00) all land on that one instant, which fires once.
* Overlap (fall back: the local time happens twice). It fires once, at its FIRST occurrence,
  before the clocks go back. `30 1 * * *` in America/New_York fires at 01:30 EDT and not again
  at 01:30 EST; `@hourly` fires at 01:00 EDT and then 02:00 EST, so the repeated real hour gets
  no fire of its own. The same rule in both directions means "once per local time": a daily
  job runs exactly once every local day, and an hourly one once per local hour.
* Otherwise the local time is one instant.

The mapping never moves a later local time to an earlier instant, so walking the matched local
times in order yields fires in order; only gap duplicates need dropping.

Intervals (`schedule.every`) count real elapsed time from their anchor, blind to zones and DST:
every 1 h across a fall-back night is still every 3600 s.

Both kinds stop (`next_fire` returns None) only at the end of the calendar, year 9999: a valid
cron fires again within 8 years, so the search always ends, and ends soon.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from typing import TypeAlias
from zoneinfo import ZoneInfo

from workflowd.scheduler.cron import CronSchedule, ScheduleSyntaxError

MIN_EVERY = timedelta(seconds=1)
MAX_EVERY = timedelta(days=366)
_TICK = timedelta(microseconds=1)  # datetime's resolution
_CRON_GRAIN = timedelta(minutes=1)
_UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """`schedule.every`: fires at anchor + k·every for k = 0, 1, 2, … — the anchor (when the
    schedule was activated) is the phase. Constructing one validates it."""

    every: timedelta
    anchor: datetime

    def __post_init__(self) -> None:
        if not MIN_EVERY <= self.every <= MAX_EVERY:
            raise _every_error(f"{self.every.total_seconds():g} seconds")
        _utc(self.anchor, "anchor")  # refuses a naive anchor now rather than at the first fire


FireSchedule: TypeAlias = CronSchedule | IntervalSchedule


def parse_every(seconds: float, anchor: datetime) -> IntervalSchedule:
    """`schedule.every` (a duration the caller has turned into seconds), anchored at the
    activation instant `anchor`.

    Bounds: at least 1 s, since a finer period would have the scheduler doing nothing but firing
    and no run could finish before the next; at most 366 days, since durations have no months or
    years and a longer gap is almost surely a typo (a yearly cron exists for that)."""
    # timedelta() cannot even hold NaN, infinities or 1e300, so the float is checked first.
    if not MIN_EVERY.total_seconds() <= seconds <= MAX_EVERY.total_seconds():
        raise _every_error(f"{seconds:g} seconds")
    return IntervalSchedule(timedelta(seconds=seconds), anchor)


def next_fire(schedule: FireSchedule, after: datetime) -> datetime | None:
    """The first fire strictly after `after`, in UTC; None only past the end of year 9999."""
    return next(_fires(schedule, after), None)


def next_fires(schedule: FireSchedule, after: datetime, n: int) -> list[datetime]:
    """The first `n` fires strictly after `after`, ascending, in UTC."""
    return list(islice(_fires(schedule, after), n))


def fires_between(
    schedule: FireSchedule, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    """Fires in [start, end), ascending, in UTC, at most `limit` of them."""
    stop = _utc(end, "end")
    # Searching from just before `start` makes a fire at `start` itself count.
    fires = _fires(schedule, _utc(start, "start") - _TICK)
    return list(islice(takewhile(lambda instant: instant < stop, fires), limit))


def latest_fires(schedule: FireSchedule, start: datetime, end: datetime, n: int) -> list[datetime]:
    """The last `n` fires in [start, end] (`end` included), ascending, in UTC. Intervals are
    arithmetic; a cron is walked forward over spans that grow back from `end` until they hold
    `n` fires, so the cost follows the fires wanted, not the length of [start, end]."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if n <= 0 or end < start:
        return []
    if isinstance(schedule, IntervalSchedule):
        anchor, every = schedule.anchor.astimezone(UTC), schedule.every
        first = max(0, -((anchor - start) // every))  # the first k with anchor + k·every ≥ start
        last = (end - anchor) // every
        return [anchor + k * every for k in range(max(first, last - n + 1), last + 1)]
    span = _CRON_GRAIN * n  # a cron fires at most once a minute
    while True:
        low = max(start, end - span)
        found = fires_between(schedule, low, end + _TICK, _UNLIMITED)
        if len(found) >= n or low == start:
            return found[-n:]
        span *= 4


def count_fires(schedule: FireSchedule, start: datetime, end: datetime, cap: int) -> int:
    """How many fires [start, end) holds, counting at most `cap` + 1 (more than `cap`: a cron
    is counted by walking it, and a year of a minute cron is half a million steps)."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        return 0
    if isinstance(schedule, IntervalSchedule):
        anchor, every = schedule.anchor.astimezone(UTC), schedule.every
        first = max(0, -((anchor - start) // every))
        after_last = max(0, -((anchor - end) // every))  # the first k at or past `end`
        return min(max(0, after_last - first), cap + 1)
    return len(fires_between(schedule, start, end, cap + 1))


def _fires(schedule: FireSchedule, after: datetime) -> Iterator[datetime]:
    # Not a generator itself, so a naive `after` is refused at the call, not at first use.
    after = _utc(after, "after")
    if isinstance(schedule, CronSchedule):
        return _cron_fires(schedule, after)
    return _interval_fires(schedule, after)


def _cron_fires(schedule: CronSchedule, after: datetime) -> Iterator[datetime]:
    zone = schedule.zone
    previous = after
    try:
        # Local times before after's own never map past `after` (the mapping is monotonic).
        for wall in schedule.fields.wall_times(after.astimezone(zone).replace(tzinfo=None)):
            instant = _instant(wall, zone)
            # Not later than the previous fire: before `after`, or a second time in one gap.
            if instant > previous:
                previous = instant
                yield instant
    except OverflowError:  # the zone's offset carries the instant past year 9999
        return


def _interval_fires(schedule: IntervalSchedule, after: datetime) -> Iterator[datetime]:
    # In UTC: adding to a zoned datetime would add wall-clock time, not elapsed time.
    anchor = schedule.anchor.astimezone(UTC)
    k = max(0, (after - anchor) // schedule.every + 1)
    while True:
        try:
            instant = anchor + k * schedule.every
        except OverflowError:  # past year 9999
            return
        yield instant
        k += 1


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a matched local time fires at (the rules are in the module docstring)."""
    # fold=0 is the first occurrence of an ambiguous time, which is the one that fires.
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clocks jumped over the nonexistent local time `wall`."""
    # Read with the offsets from either side of the jump, `wall` gives one instant before the
    # jump and one after it; bisect between them on whole seconds, the grain of tzdata.
    readings = [wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    before, after = min(readings), max(readings)
    offset_before = before.astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        moment = before + timedelta(seconds=middle)
        if moment.astimezone(zone).utcoffset() == offset_before:
            low = middle
        else:
            high = middle
    return before + timedelta(seconds=high)


def _utc(value: datetime, name: str) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _every_error(amount: str) -> ScheduleSyntaxError:
    return ScheduleSyntaxError(
        f"schedule.every must be between 1 second and 366 days, not {amount}"
    )
