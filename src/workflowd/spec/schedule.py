"""The top-level `schedule` block: `cron` (five fields or a macro, UTC unless `CRON_TZ=`) or
`every` (a duration, from the moment the schedule is activated). The scheduler's own parser
decides what a cron means, so what is accepted here is exactly what fires."""

from __future__ import annotations

from workflowd.domain.definition import Schedule
from workflowd.domain.diagnostics import Diagnostic
from workflowd.domain.json import Json
from workflowd.scheduler import MAX_EVERY, MIN_EVERY, ScheduleSyntaxError, parse_schedule_cron
from workflowd.spec.fields import closed, duration_seconds, expect_object, type_name

_REFUSED = {
    kind: f"schedule.{kind} is not supported yet; use schedule.cron or schedule.every"
    for kind in ("after", "on")
}


def check_schedule(value: Json) -> tuple[Schedule | None, list[Diagnostic]]:
    """The schedule a valid block describes, and the diagnostics of an invalid one."""
    if (problem := expect_object(value, "/schedule", "schedule")) is not None:
        return None, [problem]
    assert isinstance(value, dict)
    out = closed(value, "/schedule", ("cron", "every"), _REFUSED)
    kinds = [kind for kind in ("cron", "every") if kind in value]
    if len(kinds) != 1:
        if not out:
            out.append(Diagnostic("schedule takes exactly one of cron or every", "/schedule"))
        return None, out
    found, problems = _cron(value["cron"]) if kinds == ["cron"] else _every(value["every"])
    return (found if not out and not problems else None), out + problems


def _cron(cron: Json) -> tuple[Schedule | None, list[Diagnostic]]:
    if not isinstance(cron, str):
        return None, [Diagnostic(f"cron must be a string, not {type_name(cron)}", "/schedule/cron")]
    try:
        parsed = parse_schedule_cron(cron)
    except ScheduleSyntaxError as exc:
        return None, [Diagnostic(exc.message, "/schedule/cron")]
    return Schedule(cron=parsed.expression, timezone=parsed.timezone), []


def _every(every: Json) -> tuple[Schedule | None, list[Diagnostic]]:
    seconds = duration_seconds(every)
    low, high = MIN_EVERY.total_seconds(), MAX_EVERY.total_seconds()
    if seconds is None or not low <= seconds <= high:
        message = (
            "schedule.every must be a duration between 1 second and 366 days: "
            "{days, hours, minutes, seconds, milliseconds} (integers) or ISO-8601 such as PT15M"
        )
        return None, [Diagnostic(message, "/schedule/every")]
    return Schedule(every_s=seconds), []
