"""Instants and durations as people type and read them: `2026-01-31T06:00Z`, `24h` ago, `90s`,
`PT1H`; shown in UTC to the second."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from workflowd.cli.common import CliError

_SHORT_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_FORMS = "write 90s, 30m, 2h, 1d or ISO-8601 (PT1H)"


def seconds(text: str, flag: str) -> float:
    from workflowd.spec.fields import duration_seconds  # the language loads only when used

    match = _SHORT_DURATION.match(text)
    found = (
        int(match.group(1)) * _UNIT_S[match.group(2)] if match else duration_seconds(text.upper())
    )
    if found is None:
        raise CliError(f"{flag} {text!r}: {DURATION_FORMS}")
    return found


def duration(text: str, flag: str) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds(text, flag) * 1e9))
    return out


def instant(text: str, flag: str) -> datetime:
    """An ISO-8601 instant or date (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} {text!r} is not an ISO-8601 instant (2026-01-31T06:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def timestamp(text: str, flag: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant(text, flag))
    return out


def since(text: str, flag: str, now: datetime) -> datetime:
    """An instant, or a duration before `now` (`24h`: a day ago)."""
    if _SHORT_DURATION.match(text) or text.upper().startswith("P"):
        return now - timedelta(seconds=seconds(text, flag))
    return instant(text, flag)


def utc(value: timestamp_pb2.Timestamp) -> str:
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
