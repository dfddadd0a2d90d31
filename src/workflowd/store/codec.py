"""Row ⇄ value conversions shared by the store modules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson

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
    """Compact JSON text, as the store writes values (orjson: a twentieth of the standard
    library's time for the small values every commit writes)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # What orjson refuses and the standard library writes (integers past 64 bits, keys
        # that are not strings); stored values are within `JsonBounds` and never get here.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load(value: str | None) -> Json:
    if value is None:
        return None
    try:
        decoded: Json = orjson.loads(value)
    except orjson.JSONDecodeError:
        decoded = json.loads(value)  # text orjson refuses (NaN, integers past 64 bits)
    return decoded
