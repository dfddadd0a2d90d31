"""Checks shared by the workflow and its tasks: closed objects, durations, data-flow expressions,
cron schedules. Each returns diagnostics carrying a JSON pointer; positions are added later."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import MAX_SAFE_INTEGER, Json
from workflowd.spec.jqsyntax import check_expression, expression_source, is_expression

_ISO_DURATION = re.compile(
    r"^P(?!$)(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
_DURATION_UNITS = {
    "days": 86400.0,
    "hours": 3600.0,
    "minutes": 60.0,
    "seconds": 1.0,
    "milliseconds": 0.001,
}
MAX_TIMEOUT_DAYS = 366
_MAX_TIMEOUT_S = MAX_TIMEOUT_DAYS * 86400.0


def type_name(value: Json) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def closed(
    value: Mapping[str, Json],
    pointer: str,
    allowed: Iterable[str],
    refused: Mapping[str, str] | None = None,
) -> list[Diagnostic]:
    """Unknown keys of a closed object; `refused` maps known-but-unsupported keys to a reason."""
    allowed = tuple(allowed)
    out: list[Diagnostic] = []
    for key in value:
        where = pointer_join(pointer, key)
        if refused and key in refused:
            out.append(Diagnostic(refused[key], where))
        elif key not in allowed:
            out.append(Diagnostic(f"unknown key {key!r} (allowed: {', '.join(allowed)})", where))
    return out


def expect_object(value: Json, pointer: str, what: str) -> Diagnostic | None:
    if isinstance(value, dict):
        return None
    return Diagnostic(f"{what} must be an object, not {type_name(value)}", pointer)


def duration_seconds(value: Json) -> float | None:
    """Seconds of a valid duration (an object of integer units, or an ISO-8601 string without
    years or months); None when it is not one. Never raises: a long ISO number is infinite."""
    if isinstance(value, dict):
        total = 0.0
        for unit, amount in value.items():
            if unit not in _DURATION_UNITS or type(amount) is not int:
                return None
            if not 0 <= amount <= MAX_SAFE_INTEGER:  # a larger int overflows a float
                return None
            total += _DURATION_UNITS[unit] * amount
        return total if value else None
    if isinstance(value, str) and (match := _ISO_DURATION.match(value)):
        years, months, weeks, days, hours, minutes, seconds = match.groups()
        if years or months:
            return None
        parts = (
            (weeks, 604800.0),
            (days, 86400.0),
            (hours, 3600.0),
            (minutes, 60.0),
            (seconds, 1.0),
        )
        return sum(float(n) * unit for n, unit in parts if n)
    return None


def check_timeout(value: Json, pointer: str) -> tuple[float | None, list[Diagnostic]]:
    """`timeout: {after: duration}` → seconds."""
    if isinstance(value, str):
        reason = "named timeouts need `use.timeouts`, which is not supported yet"
        return None, [Diagnostic(f"timeout must be {{after: duration}}: {reason}", pointer)]
    if (problem := expect_object(value, pointer, "timeout")) is not None:
        return None, [problem]
    assert isinstance(value, dict)
    out = closed(value, pointer, ("after",))
    if "after" not in value:
        return None, [*out, Diagnostic("timeout requires after", pointer)]
    seconds = duration_seconds(value["after"])
    where = pointer_join(pointer, "after")
    if seconds is None or seconds <= 0:
        message = (
            "timeout.after must be a positive duration: {days, hours, minutes, seconds, "
            "milliseconds} (integers) or ISO-8601 such as PT30S (no years or months)"
        )
        out.append(Diagnostic(message, where))
    elif seconds > _MAX_TIMEOUT_S:
        message = f"timeout.after must be at most {MAX_TIMEOUT_DAYS} days (P{MAX_TIMEOUT_DAYS}D)"
        out.append(Diagnostic(message, where))
    return seconds, out


def check_flow_expression(
    value: Json, pointer: str, field: str, names: frozenset[str] = frozenset()
) -> list[Diagnostic]:
    """`input.from`, `output.as`, `export.as` (and `if`, `when` …): bare jq or `${ … }`, or an
    object template. `names`: the variables in scope besides the standard ones."""
    if isinstance(value, str):
        found = check_expression(expression_source(value), pointer, names)
        return [found] if found else []
    if isinstance(value, dict):
        return check_template(value, pointer, names)
    message = f"{field} must be a jq expression (a string) or an object, not {type_name(value)}"
    return [Diagnostic(message, pointer)]


def check_template(
    value: Json, pointer: str, names: frozenset[str] = frozenset()
) -> list[Diagnostic]:
    """Compile every `${ … }` leaf of a value."""
    if isinstance(value, str) and is_expression(value):
        found = check_expression(expression_source(value), pointer, names)
        return [found] if found else []
    if isinstance(value, dict):
        items: Iterable[tuple[str | int, Json]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [
        d for key, item in items for d in check_template(item, pointer_join(pointer, key), names)
    ]
