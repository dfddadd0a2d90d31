"""`schedule.cron` → a validated `CronSchedule`, and the wall-clock minutes it matches.

Grammar (strict, so that a typo is an error rather than a surprising schedule):

    [CRON_TZ=<IANA zone> ]<minute> <hour> <day-of-month> <month> <day-of-week>
    [CRON_TZ=<IANA zone> ]@hourly | @daily | @weekly | @monthly | @yearly | @annually

Each field is a comma-separated list of `*`, `v`, `a-b`, `*/n` or `a-b/n`. Values are numbers in
the field's range (minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
day-of-week 0-7 or SUN-SAT, where 0 and 7 are both Sunday; names are case-insensitive).
A range needs a ≤ b; a step n needs 1 ≤ n ≤ the number of values it steps over (so `*/100`
minutes is refused rather than quietly meaning `0`). `a/n`, seconds or year fields and the
Quartz extensions `L`, `W`, `#`, `?` are refused. Without `CRON_TZ=` the cron reads in UTC.

Day rule (POSIX): when both day-of-month and day-of-week restrict the day, a day matches if EITHER
matches; when one of them allows every day, the other alone decides. "Allows every day" is read
from the values, not the spelling: `*`, `*/1`, `1-31` and `0-6` all restrict nothing, and `*/2`
restricts like any list. (croniter decides by spelling, and not consistently; Vixie cron treats
any field starting with `*` as unrestricting, so `*/2` in day-of-month would AND.)
A cron that can never fire (`0 0 31 2 *`, `0 0 30,31 FEB *`) is refused. What remains always
fires again within 8 years (the wait for a February 29 across 2100), so walking the calendar
day by day to find the next match is bounded and cheap.

This module knows only the calendar: which naive wall-clock minutes match (croniter walks it,
given the canonical spelling of the validated fields). Turning those into real instants in a
time zone (DST gaps and overlaps) is `fires.py`'s job: croniter's own zone handling fires an
ambiguous local time twice.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

MAX_CRON_LENGTH = 200
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELD_NAMES = "minute hour day-of-month month day-of-week"
_CRON_TZ = re.compile(r"CRON_TZ=(\S*)\s*(.*)", re.DOTALL)
_ITEM = re.compile(r"(?:(\*)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9A-Za-z]+))?", re.ASCII)
# `L`, `5L`, `15W`, `LW`, `1#2`, `?` — but not the L of JUL or the W of WED.
_EXTENSION = re.compile(r"[#?]|(?<![A-Z])(?:[0-9]*L|[0-9]+W|LW)(?![A-Z])", re.IGNORECASE)
# The most days each month can have: February counts 29, since leap years do come.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ALL_DAYS = frozenset(range(1, 32))
_ALL_WEEKDAYS = frozenset(range(7))


class ScheduleSyntaxError(ValueError):
    """A schedule that cannot be used; `message` is one readable sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int  # the highest value that may be written (7 for day-of-week)
    star_high: int  # what `*` spans up to (6 for day-of-week: 7 would repeat Sunday)
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    def value(self, token: str) -> int:
        if token.isdigit():
            number = int(token)
        elif token.upper() in self.names:
            number = self.low + self.names.index(token.upper())
        else:
            named = f" or a name ({self.names[0]}-{self.names[-1]})" if self.names else ""
            raise self.error(f"value {token!r} is not a number{named}")
        if not self.low <= number <= self.high:
            raise self.error(f"value {number} is out of range {self.low}-{self.high}")
        return number

    def error(self, problem: str) -> ScheduleSyntaxError:
        return ScheduleSyntaxError(f"cron field {self.name!r} {problem}")


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS = (
    _Field("minute", 0, 59, 59),
    _Field("hour", 0, 23, 23),
    _Field("day-of-month", 1, 31, 31),
    _Field("month", 1, 12, 12, _MONTHS),
    _Field("day-of-week", 0, 7, 6, _WEEKDAYS),
)


@dataclass(frozen=True, slots=True)
class CronFields:
    """The values each field matches."""

    minutes: tuple[int, ...]  # ascending
    hours: tuple[int, ...]  # ascending
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday
    day_or: bool  # both day fields restrict the day: either may match (see the module docstring)

    def matches_day(self, day: date) -> bool:
        by_date = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        return (by_date or by_weekday) if self.day_or else (by_date and by_weekday)

    def wall_times(self, start: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock minutes at or after naive `start`, ascending, to year 9999.

        croniter walks the calendar; it is given the canonical spelling of our validated fields
        (`canonical`), which it reads exactly as the day rule above says."""
        walk = croniter(self.canonical, start - timedelta(seconds=1))
        while True:
            try:
                wall: datetime = walk.get_next(datetime)
            except (CroniterBadDateError, OverflowError, ValueError):  # past year 9999
                return
            yield wall

    @property
    def canonical(self) -> str:
        """Each field as the explicit list of its values, `*` where it allows every value: no
        equal-ended ranges and no step spellings, whose readings differ between cron dialects
        (croniter reads `5-5` as the whole field), and the day rule follows from which day
        field is `*`."""
        parts = [
            _listed(self.minutes, 60),
            _listed(self.hours, 24),
            "*" if self.days == _ALL_DAYS else _listed(self.days, 0),
            _listed(self.months, 12),
            "*" if self.weekdays == _ALL_WEEKDAYS else _listed(self.weekdays, 0),
        ]
        return " ".join(parts)


def _listed(values: Collection[int], every: int) -> str:
    return "*" if len(values) == every else ",".join(str(v) for v in sorted(values))


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron read in an IANA zone. Constructing one validates it (`ScheduleSyntaxError`), so
    every instance is well-formed and fires again within 8 years of any moment."""

    expression: str  # five fields or a macro, without the CRON_TZ= prefix
    timezone: str = "UTC"
    fields: CronFields = field(init=False, repr=False, compare=False)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.expression) > MAX_CRON_LENGTH:
            raise _too_long(self.expression)
        # Frozen: the derived attributes are set once, here, from the validated text.
        object.__setattr__(self, "fields", _parse_fields(self.expression.strip()))
        object.__setattr__(self, "zone", _zone(self.timezone))


def parse_schedule_cron(text: str) -> CronSchedule:
    """`[CRON_TZ=<zone> ]<5 fields | @macro>` → CronSchedule (UTC without the prefix)."""
    if len(text) > MAX_CRON_LENGTH:
        raise _too_long(text)
    expression = text.strip()
    if match := _CRON_TZ.fullmatch(expression):
        return CronSchedule(match.group(2), match.group(1))
    return CronSchedule(expression)


def _parse_fields(expression: str) -> CronFields:
    if expression.startswith("@") and expression not in MACROS:
        known = ", ".join(MACROS)
        raise ScheduleSyntaxError(f"unknown cron macro {expression!r}: use one of {known}")
    texts = MACROS.get(expression, expression).split()
    if len(texts) != len(_FIELDS):
        raise _field_count_error(len(texts))
    minutes, hours, days, months, weekdays = (
        _parse_field(text, spec) for text, spec in zip(texts, _FIELDS, strict=True)
    )
    weekdays = frozenset(d % 7 for d in weekdays)  # 7 is Sunday too
    day_or = days != _ALL_DAYS and weekdays != _ALL_WEEKDAYS
    if not day_or and not any(d <= _MONTH_DAYS[m - 1] for m in months for d in days):
        raise ScheduleSyntaxError(
            f"cron never fires: day-of-month {texts[2]!r} does not occur in month {texts[3]!r}"
        )
    return CronFields(
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=days,
        months=months,
        weekdays=weekdays,
        day_or=day_or,
    )


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise spec.error(f"has an empty item in the list {text!r}")
        values.update(_parse_item(item, spec))
    return frozenset(values)


def _parse_item(item: str, spec: _Field) -> range:
    if _EXTENSION.search(item):
        raise spec.error(f"uses {item!r}: the L, W, # and ? extensions are not supported")
    match = _ITEM.fullmatch(item)
    if match is None:
        raise spec.error(f"item {item!r} is not *, a value, a range a-b, or a step */n or a-b/n")
    star, first, last, step = match.groups()
    if star:
        low, high = spec.low, spec.star_high
    else:
        low = spec.value(first)
        high = spec.value(last) if last else low
        if low > high:
            raise spec.error(f"range {item!r} is backwards: its start must not exceed its end")
    if step is None:
        return range(low, high + 1)
    if not star and last is None:
        # Some crons read `5/15` as `5-59/15`, others refuse it: ask for the explicit form.
        raise spec.error(f"step {item!r} needs a range: write {first}-{spec.star_high}/{step}")
    return range(low, high + 1, _step(step, spec, low, high))


def _step(text: str, spec: _Field, low: int, high: int) -> int:
    if not text.isdigit():
        raise spec.error(f"step {text!r} is not a number")
    step = int(text)
    if step < 1:
        raise spec.error(f"step must be at least 1, not {step}")
    if step > high - low + 1:
        raise spec.error(f"step {step} is larger than its range {low}-{high}")
    return step


def _field_count_error(count: int) -> ScheduleSyntaxError:
    if count == 0:
        return ScheduleSyntaxError("cron expression is empty: expected 5 fields or a macro")
    extra = "; seconds and year fields are not supported" if count > len(_FIELDS) else ""
    return ScheduleSyntaxError(
        f"cron has {count} field(s) but takes 5 ({_FIELD_NAMES}) or a macro such as @daily{extra}"
    )


def _zone(name: str) -> ZoneInfo:
    # `localtime` is the host's own zone file: the schedule would change with the machine.
    if name != "localtime":
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # not found, malformed key, a directory
            pass
    raise ScheduleSyntaxError(
        f"unknown time zone {name!r}: CRON_TZ takes an IANA name such as Europe/London"
    )


def _too_long(text: str) -> ScheduleSyntaxError:
    return ScheduleSyntaxError(
        f"cron is {len(text)} characters long; the limit is {MAX_CRON_LENGTH}"
    )
