"""The catch-up's time maths: the last n fires of a range and how many a range holds, for crons
in several zones and for intervals, agree with walking the range fire by fire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tests.scheduler.test_cron import AFTERS, PROPERTY, ZONES, crons, schedule_of
from workflowd.scheduler import (
    FireSchedule,
    IntervalSchedule,
    count_fires,
    fires_between,
    latest_fires,
)

_TICK = timedelta(microseconds=1)
_ALL = 10**6

intervals = st.builds(
    IntervalSchedule,
    every=st.integers(1, 7200).map(lambda s: timedelta(seconds=s)),
    anchor=AFTERS,
)


def check(schedule: FireSchedule, start: datetime, length: timedelta, n: int, cap: int) -> None:
    end = start + length
    walked = fires_between(schedule, start, end + _TICK, _ALL)
    assert latest_fires(schedule, start, end, n) == (walked[-n:] if n else [])
    before_end = [t for t in walked if t < end]
    assert count_fires(schedule, start, end, cap) == min(len(before_end), cap + 1)


@PROPERTY
@given(
    cron=crons(),
    zone=st.sampled_from(ZONES),
    start=AFTERS,
    hours=st.integers(0, 72),
    n=st.integers(0, 40),
    cap=st.integers(0, 60),
)
def test_cron_latest_and_count_agree_with_the_walk(
    cron: str, zone: str, start: datetime, hours: int, n: int, cap: int
) -> None:
    check(schedule_of(cron, zone), start, timedelta(hours=hours), n, cap)


@PROPERTY
@given(
    schedule=intervals,
    start=AFTERS,
    seconds=st.integers(0, 86400),
    n=st.integers(0, 40),
    cap=st.integers(0, 60),
)
def test_interval_latest_and_count_agree_with_the_walk(
    schedule: IntervalSchedule, start: datetime, seconds: int, n: int, cap: int
) -> None:
    check(schedule, start, timedelta(seconds=seconds), n, cap)


def test_a_sparse_cron_over_years_is_found_without_walking_every_minute() -> None:
    yearly = schedule_of("0 0 1 1 *", "UTC")
    start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    assert latest_fires(yearly, start, end, 2) == [
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    ]
    assert count_fires(yearly, start, end, 100) == 27
