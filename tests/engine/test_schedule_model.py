"""The scheduler's decisions against a pure model, over random outages (issue 18: "every instant
must be fired, caught up or recorded missed").

Each example runs real daemons on one data directory, one after another, with a clock the test
moves: a schedule `every` few seconds, a catch-up policy, window and limit, then a random
sequence of clock steps while the daemon runs and outages while none does. The model says, from
the schedule's instants alone, what each instant must become; the store must hold exactly that.

The model: the instants due when a scheduler looks (at a clock step, or when a daemon starts)
are those from the first undecided one up to now, now included. If the first of them is at most
60 s old they are all on time and fire. Otherwise it is a catch-up: of the due instants inside
the window, NONE fires none, LATEST the most recent, ALL the most recent `max_catchup_runs`;
the due instants before those are one MISSED record that counts them.

The workflow's runs fail at once on an expression (no job: the jobs URL leads nowhere), so an
example costs only the daemons' starts; ALLOW_ALL makes every fire create its run whatever the
runs before it are doing.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import T0, activate, at, create, get_schedule, stored_decisions
from tests.engine.support import workflow
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

ON_TIME = timedelta(seconds=60)
NOWHERE = "http://127.0.0.1:9"  # no job is ever submitted
FAILING_TASK = """\
  - count:
      call: ExecuteDml
      with: {nql: 'DELETE FROM company_data.audit'}
      input: {from: '${ error("this run only counts") }'}
"""
POLICIES = {
    "all": pb.CATCHUP_POLICY_ALL,
    "latest": pb.CATCHUP_POLICY_LATEST,
    "none": pb.CATCHUP_POLICY_NONE,
}
_examples = itertools.count()


@dataclass
class Model:
    period: timedelta
    anchor: datetime
    policy: str
    window: timedelta
    cap: int
    decisions: list[tuple[datetime, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next = self.anchor + self.period

    def look(self, now: datetime) -> None:
        """A scheduler looks at `now`: decide every due instant."""
        due: list[datetime] = []
        while self.next <= now:
            due.append(self.next)
            self.next += self.period
        if not due:
            return
        if now - due[0] <= ON_TIME:
            self.decisions += [(t, "fired", 1) for t in due]
            return
        in_window = [t for t in due if t >= now - self.window]
        wanted = {"none": 0, "latest": 1, "all": self.cap}[self.policy]
        firing = in_window[max(0, len(in_window) - wanted) :] if wanted else []
        missed = due[: len(due) - len(firing)]
        if missed:
            self.decisions.append((missed[0], "missed", len(missed)))
        self.decisions += [(t, "caught_up", 1) for t in firing]


@dataclass(frozen=True)
class Scenario:
    period_s: int
    offset_s: int
    policy: str
    window_s: int
    cap: int
    steps: tuple[tuple[bool, int], ...]
    """(an outage?, seconds): the clock moves on while the daemon runs, or while none does."""


scenarios = st.builds(
    Scenario,
    period_s=st.sampled_from([7, 15, 60]),
    offset_s=st.integers(0, 59),
    policy=st.sampled_from(sorted(POLICIES)),
    window_s=st.sampled_from([0, 20, 75, 300, 3600]),
    cap=st.integers(1, 4),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 240)), min_size=1, max_size=5).map(
        tuple
    ),
)


async def settle(daemon: Daemon, workflow_id: str, now: datetime) -> None:
    """Every instant up to `now` is decided once the schedule points past it."""

    async def past() -> bool:
        return at((await get_schedule(daemon, workflow_id)).next_fire_at) > now

    await eventually(past)


def stored_runs(data_dir: Path, workflow_id: str) -> list[datetime]:
    with contextlib.closing(sqlite3.connect(data_dir / "workflowd.db")) as conn:
        rows = conn.execute(
            "SELECT scheduled_at FROM runs WHERE workflow_id = ? ORDER BY scheduled_at",
            (workflow_id,),
        ).fetchall()
    return [datetime.fromisoformat(r[0]) for r in rows]


def missed_count(reason: str) -> int:
    found = re.search(r"([0-9][0-9,]*) instants? not fired", reason)
    assert found is not None, reason
    return int(found.group(1).replace(",", ""))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios)
async def test_every_instant_is_fired_caught_up_or_recorded_missed(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path, scenario: Scenario
) -> None:
    data_dir = tmp_path / f"example{next(_examples)}"
    now = T0 + timedelta(seconds=scenario.offset_s)

    async def daemon_at(moment: datetime) -> tuple[Daemon, ManualClock]:
        clock = ManualClock(moment)
        options = {"jobs_url": NOWHERE, "max_catchup_runs": scenario.cap, "quota_min_every_s": 0}
        return await start_daemon(data_dir, clock=clock, **options), clock

    daemon, clock = await daemon_at(now)
    every = f"schedule: {{every: {{seconds: {scenario.period_s}}}}}\n"
    wf = await create(daemon, workflow("counted", FAILING_TASK, extra=every))
    await activate(
        daemon,
        wf.id,
        catchup_policy=POLICIES[scenario.policy],
        overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL,
        catchup_window=duration_pb2.Duration(seconds=scenario.window_s),
    )
    model = Model(
        timedelta(seconds=scenario.period_s),
        now,
        scenario.policy,
        timedelta(seconds=scenario.window_s),
        scenario.cap,
    )
    for outage, seconds in scenario.steps:
        now += timedelta(seconds=seconds)
        if outage:
            await daemon.app.drain()
            daemon, clock = await daemon_at(now)
        else:
            clock.set(now)
        model.look(now)
        await settle(daemon, wf.id, now)
    await daemon.app.drain()

    decided = stored_decisions(data_dir, wf.id)
    got = [
        (instant, outcome, missed_count(reason) if outcome == "missed" else 1)
        for instant, outcome, reason in decided
    ]
    assert got == model.decisions
    fired = [t for t, outcome, _ in model.decisions if outcome != "missed"]
    assert stored_runs(data_dir, wf.id) == fired
