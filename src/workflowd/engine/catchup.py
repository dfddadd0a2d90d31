"""What a catch-up does after downtime: which missed instants fire, and the one record of those
that do not. Pure, and bounded: whatever the downtime, at most `max_runs` instants fire, and
the others are counted (up to `COUNT_CAP`) and named by their range in a MISSED decision.

The instants due when a scheduler comes back are those from the schedule's next instant up to
now, `now` included. Those before the catch-up window are missed; within it, the policy picks:
NONE none, LATEST the most recent, ALL the most recent `max_runs`. What fires is always the
latest of the due instants, so what is missed is one range, from the first due instant on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from workflowd.domain.schedule import CatchupPolicy, FireDecision, FireOutcome, WorkflowSchedule
from workflowd.domain.units import span
from workflowd.engine import fires

COUNT_CAP = 100_000
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CatchUp:
    firing: tuple[datetime, ...]
    """The instants to fire, ascending."""
    missed: FireDecision | None
    """The record of the instants not fired (at the first of them), if any."""
    following: datetime | None
    """The schedule's next instant after now."""


def plan(schedule: WorkflowSchedule, now: datetime, max_runs: int) -> CatchUp:
    spec, anchor, policies = schedule.spec, schedule.anchor, schedule.policies
    first = schedule.next_fire_at
    assert first is not None
    window_start = now - timedelta(seconds=policies.catchup_window_s)
    wanted = {CatchupPolicy.NONE: 0, CatchupPolicy.LATEST: 1, CatchupPolicy.ALL: max_runs}
    firing = fires.latest(spec, anchor, max(first, window_start), now, wanted[policies.catchup])
    following = fires.next_fire(spec, anchor, now)
    if firing and firing[0] <= first:
        return CatchUp(tuple(firing), None, following)
    end = firing[0] if firing else now + _TICK  # the missed range is [first, end)
    # `first` is an instant of the schedule (the store keeps it so): the range holds it at least.
    last = fires.latest(spec, anchor, first, end - _TICK, 1) or [first]
    outside = fires.count(spec, anchor, first, min(window_start, end), COUNT_CAP)
    inside = fires.count(spec, anchor, max(first, window_start), end, COUNT_CAP)
    reason = _reason(schedule, first, last[0], outside, inside, max_runs)
    return CatchUp(tuple(firing), FireDecision(first, FireOutcome.MISSED, reason, now), following)


def _reason(
    schedule: WorkflowSchedule,
    first: datetime,
    last: datetime,
    outside: int,
    inside: int,
    max_runs: int,
) -> str:
    policies = schedule.policies
    why: list[str] = []
    if policies.catchup is CatchupPolicy.NONE:
        why.append("the catch-up policy is NONE")
    else:
        if outside:
            why.append(
                f"{_count(outside)} outside the catch-up window ({span(policies.catchup_window_s)})"
            )
        if inside and policies.catchup is CatchupPolicy.LATEST:
            why.append(f"{_count(inside)} in it: LATEST fires only the most recent instant")
        elif inside:
            why.append(
                f"{_count(inside)} in it beyond the {max_runs} most recent, as many as a "
                "catch-up fires (max_catchup_runs)"
            )
    total = outside + inside
    through = "" if total == 1 else f" to {last.isoformat()}"
    return (
        f"no scheduler ran from {first.isoformat()}: {_count(total)} not fired from "
        f"{first.isoformat()}{through}; " + "; ".join(why)
    )


def _count(n: int) -> str:
    if n > COUNT_CAP:
        return f"more than {COUNT_CAP:,} instants"
    return "1 instant" if n == 1 else f"{n:,} instants"
