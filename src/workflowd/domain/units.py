"""Counts and durations as people read them: `1 run`, `3 runs`, `2d`, `4h30m`, `1.5s`."""

from __future__ import annotations

_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def plural(count: int, noun: str, many: str = "") -> str:
    """`1 run`, `2 runs`; `many` for a noun whose plural is not noun + s."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def span(seconds: float) -> str:
    """A duration in its largest units, zero parts left out: 172800 → `2d`, 16200 → `4h30m`,
    90 → `1m30s`, 0.25 → `0.25s`."""
    if seconds < 0:
        return "-" + span(-seconds)
    whole = int(seconds)
    fraction = seconds - whole
    parts = []
    for unit, size in _UNITS:
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    if whole or fraction or not parts:
        parts.append(f"{whole + fraction:g}s")
    return "".join(parts)
