"""Row ⇄ value conversions shared by the store modules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from workflowd.domain.json import Json


def ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def parse_ts_required(value: str) -> datetime:
    return datetime.fromisoformat(value)


def dump(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load(value: str | None) -> Json:
    return None if value is None else json.loads(value)
