"""The scheduler's time maths: cron parsing, next fires across DST in several zones, intervals.

Expected instants are UTC; the comment beside each gives the local wall-clock time."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workflowd.domain.definition import Schedule
from workflowd.scheduler import (
    CronSchedule,
    IntervalSchedule,
    ScheduleSyntaxError,
    fires_between,
    next_fire,
    next_fires,
    parse_every,
    parse_schedule_cron,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


NY = "CRON_TZ=America/New_York "
LONDON = "CRON_TZ=Europe/London "
SYDNEY = "CRON_TZ=Australia/Sydney "
LORD_HOWE = "CRON_TZ=Australia/Lord_Howe "  # +10:30 in winter, +11 in summer: a 30-minute shift

# (cron, after, the next fires). 2025 transitions: New York 03-09 02:00→03:00 and 11-02
# 02:00→01:00; London 03-30 01:00→02:00 and 10-26 02:00→01:00; Sydney 04-06 03:00→02:00 and
# 10-05 02:00→03:00; Lord Howe 04-06 02:00→01:30 and 10-05 02:00→02:30.
CRON_CASES = {
    "ny spring: 02:30 does not exist, fires once at 03:00": (
        NY + "30 2 * * *",
        "2025-03-08T12:00:00Z",
        ["2025-03-09T07:00:00Z", "2025-03-10T06:30:00Z"],  # 03:00 EDT, then 02:30 EDT
    ),
    "ny spring: four times in the gap fire once": (
        NY + "*/15 2 * * *",
        "2025-03-09T05:00:00Z",
        ["2025-03-09T07:00:00Z", "2025-03-10T06:00:00Z"],  # 03:00 EDT, then 02:00 EDT
    ),
    "ny spring: a gap time and the gap's end are one fire": (
        NY + "0,30 2,3 * * *",
        "2025-03-09T05:00:00Z",
        # 03:00 EDT (02:00, 02:30, 03:00 together), 03:30 EDT, next day 02:00 EDT
        ["2025-03-09T07:00:00Z", "2025-03-09T07:30:00Z", "2025-03-10T06:00:00Z"],
    ),
    "ny spring: hourly keeps one fire per real hour": (
        NY + "0 * * * *",
        "2025-03-09T05:30:00Z",
        # 01:00 EST, 03:00 EDT (02:00 skipped forward), 04:00 EDT
        ["2025-03-09T06:00:00Z", "2025-03-09T07:00:00Z", "2025-03-09T08:00:00Z"],
    ),
    "ny fall: 01:30 happens twice, fires at the first": (
        NY + "30 1 * * *",
        "2025-11-01T12:00:00Z",
        ["2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"],  # 01:30 EDT, then 01:30 EST
    ),
    "ny fall: hourly fires once per local hour, not in the repeated one": (
        NY + "@hourly",
        "2025-11-02T04:30:00Z",
        # 01:00 EDT, 02:00 EST (01:00 EST is a repeat: no fire), 03:00 EST
        ["2025-11-02T05:00:00Z", "2025-11-02T07:00:00Z", "2025-11-02T08:00:00Z"],
    ),
    "ny fall: after inside the repeated hour, today's 01:45 has already fired": (
        NY + "45 1 * * *",
        "2025-11-02T06:15:00Z",  # 01:15 EST, the second pass
        ["2025-11-03T06:45:00Z"],  # 01:45 EST the next day
    ),
    "london spring: 01:30 does not exist": (
        LONDON + "30 1 * * *",
        "2025-03-29T12:00:00Z",
        ["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"],  # 02:00 BST, then 01:30 BST
    ),
    "london fall: 01:30 fires at its first occurrence": (
        LONDON + "30 1 * * *",
        "2025-10-25T12:00:00Z",
        ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"],  # 01:30 BST, then 01:30 GMT
    ),
    "sydney april: DST ends, 02:30 fires once": (
        SYDNEY + "30 2 * * *",
        "2025-04-05T00:00:00Z",
        ["2025-04-05T15:30:00Z", "2025-04-06T16:30:00Z"],  # 02:30 AEDT, then 02:30 AEST
    ),
    "sydney october: DST starts, 02:30 does not exist": (
        SYDNEY + "30 2 * * *",
        "2025-10-04T00:00:00Z",
        ["2025-10-04T16:00:00Z", "2025-10-05T15:30:00Z"],  # 03:00 AEDT, then 02:30 AEDT
    ),
    "lord howe october: the 30-minute gap sends 02:15 to 02:30": (
        LORD_HOWE + "15 2 * * *",
        "2025-10-04T00:00:00Z",
        ["2025-10-04T15:30:00Z", "2025-10-05T15:15:00Z"],  # 02:30 +11, then 02:15 +11
    ),
    "lord howe april: 01:45 happens twice, fires at the first": (
        LORD_HOWE + "45 1 * * *",
        "2025-04-05T00:00:00Z",
        ["2025-04-05T14:45:00Z", "2025-04-06T15:15:00Z"],  # 01:45 +11, then 01:45 +10:30
    ),
    "kolkata: half-hour offset, weekdays only": (
        "CRON_TZ=Asia/Kolkata 0 9 * * MON-FRI",
        "2025-01-03T00:00:00Z",  # a Friday
        ["2025-01-03T03:30:00Z", "2025-01-06T03:30:00Z"],  # Fri 09:00 IST, Mon 09:00 IST
    ),
    "utc: strictly after, a fire at `after` is not repeated": (
        "15 10 * * *",
        "2025-06-01T10:15:00Z",
        ["2025-06-02T10:15:00Z", "2025-06-03T10:15:00Z"],
    ),
    "@hourly": (
        "@hourly",
        "2025-06-01T10:00:00.000001Z",
        ["2025-06-01T11:00:00Z", "2025-06-01T12:00:00Z"],
    ),
    "@daily across new year": (
        "@daily",
        "2025-12-31T23:59:00Z",
        ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
    ),
    "@weekly fires on sundays": (
        "@weekly",
        "2025-01-01T00:00:00Z",
        ["2025-01-05T00:00:00Z", "2025-01-12T00:00:00Z"],
    ),
    "@monthly": (
        "@monthly",
        "2025-01-15T00:00:00Z",
        ["2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"],
    ),
    "@yearly": (
        "@yearly",
        "2025-01-01T00:00:00Z",
        ["2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"],
    ),
    "@annually in new york": (
        NY + "@annually",
        "2025-06-01T00:00:00Z",
        ["2026-01-01T05:00:00Z"],  # 2026-01-01 00:00 EST
    ),
    "the 31st skips 30-day months": (
        "0 0 31 * *",
        "2025-03-31T00:00:00Z",
        ["2025-05-31T00:00:00Z", "2025-07-31T00:00:00Z", "2025-08-31T00:00:00Z"],
    ),
    "feb 29 in leap years only": (
        "0 12 29 2 *",
        "2024-03-01T00:00:00Z",
        ["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"],
    ),
    "feb 29: 2100 is not a leap year": (
        "0 12 29 FEB *",
        "2096-03-01T00:00:00Z",
        ["2104-02-29T12:00:00Z"],
    ),
    "both day fields restricted: either matches": (
        "0 0 13 * FRI",
        "2025-06-01T00:00:00Z",
        # Fri 6th, Fri 13th (both), Fri 20th
        ["2025-06-06T00:00:00Z", "2025-06-13T00:00:00Z", "2025-06-20T00:00:00Z"],
    ),
    "a day field that allows every day does not widen the other": (
        "0 0 */2 * 0-6",
        "2025-01-01T00:00:00Z",
        ["2025-01-03T00:00:00Z", "2025-01-05T00:00:00Z"],  # odd days only, not every day
    ),
    "day-of-week 7 is sunday": (
        "0 0 * * 7",
        "2025-01-01T00:00:00Z",
        ["2025-01-05T00:00:00Z"],
    ),
    "steps over ranges and names": (
        "*/20 9-17/4 1 jan,Jul *",
        "2025-01-01T12:30:00Z",
        ["2025-01-01T13:00:00Z", "2025-01-01T13:20:00Z", "2025-01-01T13:40:00Z"],
    ),
    "after in another zone is the same instant": (
        "0 12 * * *",
        "2025-06-01T08:00:00-04:00",  # 12:00Z: fired already
        ["2025-06-02T12:00:00Z"],
    ),
}


@pytest.mark.parametrize(("cron", "after", "expected"), CRON_CASES.values(), ids=CRON_CASES)
def test_cron_next_fires(cron: str, after: str, expected: list[str]) -> None:
    schedule = parse_schedule_cron(cron)
    assert next_fires(schedule, utc(after), len(expected)) == [utc(e) for e in expected]
    assert next_fire(schedule, utc(after)) == utc(expected[0])


# (every seconds, anchor, after, the next fires): real elapsed time, whatever the zone.
EVERY_CASES = {
    "hourly across new york's fall back": (
        3600,
        "2025-11-02T00:00:00-04:00",
        "2025-11-02T04:30:00Z",
        # 01:00 EDT, 01:00 EST, 02:00 EST: every real hour, the repeated one included
        ["2025-11-02T05:00:00Z", "2025-11-02T06:00:00Z", "2025-11-02T07:00:00Z"],
    ),
    "daily across new york's spring forward is 24 real hours": (
        86400,
        "2025-03-08T12:00:00-05:00",  # noon EST
        "2025-03-08T17:00:00Z",
        ["2025-03-09T17:00:00Z", "2025-03-10T17:00:00Z"],  # 13:00 EDT: elapsed, not wall time
    ),
    "before the anchor, the anchor is first": (
        90,
        "2025-01-01T00:00:00Z",
        "2024-12-31T00:00:00Z",
        ["2025-01-01T00:00:00Z", "2025-01-01T00:01:30Z"],
    ),
    "on a fire, the next one": (
        1.5,
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:03Z",
        ["2025-01-01T00:00:04.500000Z", "2025-01-01T00:00:06Z"],
    ),
}


@pytest.mark.parametrize(
    ("seconds", "anchor", "after", "expected"), EVERY_CASES.values(), ids=EVERY_CASES
)
def test_every_next_fires(seconds: float, anchor: str, after: str, expected: list[str]) -> None:
    schedule = parse_every(seconds, datetime.fromisoformat(anchor))
    assert next_fires(schedule, utc(after), len(expected)) == [utc(e) for e in expected]


INVALID_CRONS = {
    "*/100 * * * *": "cron field 'minute' step 100 is larger than its range 0-59",
    "*/0 * * * *": "cron field 'minute' step must be at least 1, not 0",
    "0 */25 * * *": "cron field 'hour' step 25 is larger than its range 0-23",
    "0 0 1-10/11 * *": "cron field 'day-of-month' step 11 is larger than its range 1-10",
    "0 0 * * */8": "cron field 'day-of-week' step 8 is larger than its range 0-6",
    "5-2 * * * *": "cron field 'minute' range '5-2' is backwards",
    "0 0 * * SAT-SUN": "cron field 'day-of-week' range 'SAT-SUN' is backwards",
    "60 * * * *": "cron field 'minute' value 60 is out of range 0-59",
    "0 24 * * *": "cron field 'hour' value 24 is out of range 0-23",
    "0 0 0 * *": "cron field 'day-of-month' value 0 is out of range 1-31",
    "0 0 * 13 *": "cron field 'month' value 13 is out of range 1-12",
    "0 0 * * 8": "cron field 'day-of-week' value 8 is out of range 0-7",
    "0 0 * FOO *": "cron field 'month' value 'FOO' is not a number or a name (JAN-DEC)",
    "0 0 1.5 * *": "cron field 'day-of-month' item '1.5' is not",
    "0 0 -1 * *": "cron field 'day-of-month' item '-1' is not",
    "5/15 * * * *": "cron field 'minute' step '5/15' needs a range: write 5-59/15",
    "1,,2 * * * *": "cron field 'minute' has an empty item",
    "0 0 L * *": "cron field 'day-of-month' uses 'L': the L, W, # and ? extensions",
    "0 0 15W * *": "cron field 'day-of-month' uses '15W'",
    "0 0 * * 1#2": "cron field 'day-of-week' uses '1#2'",
    "0 0 * * 5L": "cron field 'day-of-week' uses '5L'",
    "0 0 ? * *": "cron field 'day-of-month' uses '?'",
    "0 0 12 * * *": "cron has 6 field(s) but takes 5",
    "0 0 12 * * * 2025": "seconds and year fields are not supported",
    "* * *": "cron has 3 field(s) but takes 5 (minute hour day-of-month month day-of-week)",
    "": "cron expression is empty",
    "   ": "cron expression is empty",
    "CRON_TZ=Europe/London": "cron expression is empty",
    "@reboot": "unknown cron macro '@reboot'",
    "CRON_TZ=Mars/Olympus_Mons 0 * * * *": "unknown time zone 'Mars/Olympus_Mons'",
    "CRON_TZ=America 0 * * * *": "unknown time zone 'America'",
    "CRON_TZ=../../etc/passwd 0 * * * *": "unknown time zone '../../etc/passwd'",
    "CRON_TZ=localtime 0 * * * *": "unknown time zone 'localtime'",
    "0 0 31 2 *": "cron never fires: day-of-month '31' does not occur in month '2'",
    "0 0 30,31 FEB *": "cron never fires: day-of-month '30,31' does not occur in month 'FEB'",
    "0 0 31 4,6,9,11 *": "cron never fires",
    "0 " * 101: "cron is 202 characters long; the limit is 200",
}


@pytest.mark.parametrize(
    ("text", "fragment"), INVALID_CRONS.items(), ids=[repr(text[:40]) for text in INVALID_CRONS]
)
def test_invalid_cron_is_one_sentence_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ScheduleSyntaxError) as caught:
        parse_schedule_cron(text)
    assert fragment in caught.value.message
    assert str(caught.value) == caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    "seconds", [0, 0.5, -1, 366 * 86400 + 1, math.nan, math.inf, -math.inf, 1e300]
)
def test_every_out_of_bounds_is_refused(seconds: float) -> None:
    with pytest.raises(ScheduleSyntaxError, match="between 1 second and 366 days"):
        parse_every(seconds, utc("2025-01-01T00:00:00Z"))


def test_every_bounds_are_inclusive_and_the_type_checks_them_too() -> None:
    anchor = utc("2025-01-01T00:00:00Z")
    assert parse_every(1, anchor).every == timedelta(seconds=1)
    assert parse_every(366 * 86400, anchor).every == timedelta(days=366)
    with pytest.raises(ScheduleSyntaxError, match="not 0 seconds"):
        IntervalSchedule(timedelta(0), anchor)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        next_fire(parse_schedule_cron("@daily"), naive)
    with pytest.raises(ValueError, match="anchor must be a timezone-aware datetime"):
        parse_every(60, naive)


def test_fires_between_is_half_open_and_limited() -> None:
    hourly = parse_schedule_cron("@hourly")
    start, end = utc("2025-06-01T10:00:00Z"), utc("2025-06-01T13:00:00Z")
    expected = ["2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z", "2025-06-01T12:00:00Z"]
    assert fires_between(hourly, start, end, 10) == [utc(e) for e in expected]
    assert fires_between(hourly, start, end, 2) == [utc(e) for e in expected[:2]]
    assert fires_between(hourly, end, start, 10) == []
    every = parse_every(3600, utc("2025-06-01T10:00:00Z"))
    assert fires_between(every, start, end, 10) == [utc(e) for e in expected]


def test_the_calendar_ends_in_year_9999() -> None:
    last = utc("9999-12-31T00:00:00Z")
    assert next_fires(parse_schedule_cron("@daily"), utc("9999-12-30T12:00:00Z"), 5) == [last]
    # 23:00 EST on 9999-12-31 would be in year 10000 UTC.
    assert next_fire(parse_schedule_cron(NY + "0 23 31 12 *"), utc("9999-06-01T00:00:00Z")) is None
    assert next_fire(parse_every(86400, last), last) is None


def test_a_domain_schedule_becomes_a_cron_schedule() -> None:
    schedule = Schedule(cron="30 2 * * *", timezone="America/New_York")
    assert CronSchedule(schedule.cron, schedule.timezone) == parse_schedule_cron(NY + "30 2 * * *")


# Property tests ----------------------------------------------------------------------------

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Dublin",  # "negative DST" in tzdata: winter is the DST period
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
    "America/Santiago",
]
# (lowest value, highest value, highest value of `*`) of each field, minute to day-of-week.
FIELDS = [(0, 59, 59), (0, 23, 23), (1, 31, 31), (1, 12, 12), (0, 7, 6)]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def field_items(draw: st.DrawFn, low: int, high: int, star_high: int) -> str:
    kind = draw(st.sampled_from(["value", "range", "stepped range", "star step"]))
    if kind == "star step":
        return f"*/{draw(st.integers(1, star_high - low + 1))}"
    a, b = sorted(draw(st.lists(st.integers(low, high), min_size=2, max_size=2)))
    if kind == "value":
        return str(a)
    if kind == "range":
        return f"{a}-{b}"
    return f"{a}-{b}/{draw(st.integers(1, b - a + 1))}"


@st.composite
def crons(draw: st.DrawFn) -> str:
    fields = []
    for low, high, star_high in FIELDS:
        if draw(st.booleans()):
            fields.append("*")
        else:
            items = st.lists(field_items(low, high, star_high), min_size=1, max_size=3)
            fields.append(",".join(draw(items)))
    return " ".join(fields)


def schedule_of(cron: str, zone: str) -> CronSchedule:
    try:
        return CronSchedule(cron, zone)
    except ScheduleSyntaxError as error:
        # `* * 30 2 *` and the like are refused (see INVALID_CRONS): nothing to fire.
        assume("never fires" not in error.message)
        raise


AFTERS = st.datetimes(datetime(1990, 1, 1), datetime(2060, 1, 1), timezones=st.just(UTC))


@PROPERTY
@given(cron=crons(), zone=st.sampled_from(ZONES), after=AFTERS)
def test_every_generated_cron_parses_and_croniter_agrees_it_is_valid(
    cron: str, zone: str, after: datetime
) -> None:
    schedule = schedule_of(cron, zone)
    assert croniter.is_valid(cron)
    fire = next_fire(schedule, after)
    assert fire is not None
    assert after < fire <= after + timedelta(days=8 * 366)  # the longest wait: Feb 29, 2104
    assert fire.tzinfo is UTC


@PROPERTY
@given(cron=crons(), zone=st.sampled_from(ZONES), after=AFTERS)
def test_fires_are_sorted_unique_and_one_per_local_time(
    cron: str, zone: str, after: datetime
) -> None:
    schedule = schedule_of(cron, zone)
    fires = fires_between(schedule, after, after + timedelta(days=3), 100)
    assert fires == sorted(set(fires))
    assert all(after <= fire < after + timedelta(days=3) for fire in fires)
    walls = [fire.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for fire in fires]
    assert len(set(walls)) == len(walls)
    # Each fire is the next one after the previous: the list and `next_fire` agree.
    for previous, fire in pairwise(fires):
        assert next_fire(schedule, previous) == fire


def as_croniter_reads_it(cron: str, schedule: CronSchedule) -> str:
    """The same schedule spelled so that croniter reads it as we do: croniter takes an equal
    range `5-5` for the whole field, and decides the day rule by how `*` is spelled."""
    minute, hour, day, month, weekday = re.sub(r"\b(\d+)-\1(/\d+)?\b", r"\1", cron).split()
    if schedule.fields.days == frozenset(range(1, 32)):
        day = "*"
    if schedule.fields.weekdays == frozenset(range(7)):
        weekday = "*"
    return f"{minute} {hour} {day} {month} {weekday}"


@PROPERTY
@given(cron=crons(), after=AFTERS)
def test_in_utc_the_fires_are_croniters(cron: str, after: datetime) -> None:
    schedule = schedule_of(cron, "UTC")
    expected = croniter(as_croniter_reads_it(cron, schedule), after)
    assert next_fires(schedule, after, 5) == [expected.get_next(datetime) for _ in range(5)]


@functools.cache
def transitions(name: str, year: int) -> list[datetime]:
    """The UTC hours in `year` at which the zone's offset changes (none in some years)."""
    zone = ZoneInfo(name)
    hours = [datetime(year, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(366 * 24)]
    return [
        hour
        for before, hour in pairwise(hours)
        if before.astimezone(zone).utcoffset() != hour.astimezone(zone).utcoffset()
    ]


def brute_force_fires(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """The rules stated over real minutes: a minute fires if its local time is new (later than
    every local time before it) and matches, or if a matching local time was skipped just
    before it."""
    fields, zone = schedule.fields, schedule.zone

    def wall(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    def matches(local: datetime) -> bool:
        return (
            local.minute in fields.minutes
            and local.hour in fields.hours
            and local.month in fields.months
            and fields.matches_day(local.date())
        )

    minute = timedelta(minutes=1)
    latest = max(wall(start - k * minute) for k in range(1, 4 * 60))
    fires, moment = [], start
    while moment < end:
        local = wall(moment)
        skipped = int((local - latest) / minute) - 1
        gap = any(matches(latest + k * minute) for k in range(1, skipped + 1))
        if gap or (local > latest and matches(local)):
            fires.append(moment)
        latest, moment = max(latest, local), moment + minute
    return fires


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cron=crons(),
    zone=st.sampled_from([z for z in ZONES if z not in ("UTC", "Asia/Kolkata")]),
    hours=st.sampled_from(["*", "0-4,22-23", "1-3", "1", "2"]),  # the hours clocks change in
    year=st.integers(2000, 2040),
    data=st.data(),
)
def test_around_dst_changes_fires_follow_the_rules_minute_by_minute(
    cron: str, zone: str, hours: str, year: int, data: st.DataObject
) -> None:
    minute, _, day, month, weekday = cron.split()
    schedule = schedule_of(f"{minute} {hours} {day} {month} {weekday}", zone)
    changes = transitions(zone, year)
    assume(changes)  # e.g. Santiago kept summer time through 2015
    change = data.draw(st.sampled_from(changes))
    start, end = change - timedelta(hours=26), change + timedelta(hours=26)
    assert fires_between(schedule, start, end, 10_000) == brute_force_fires(schedule, start, end)
