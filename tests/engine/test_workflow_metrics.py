"""Metrics and logs to alert on, per workflow: runs ended by status, run durations, the last
success (kept across a restart), retries, schedule decisions, webhook deliveries; the series
are capped; a failed run's WARNING names workflow, run, task and title; a drain logs its steps."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta

import pytest

from tests.conftest import Daemon, eventually
from tests.engine.schedule_support import T0, activate, create, scheduled
from tests.engine.support import AUDIT_CSV, Plane, apply, finished, trigger
from tests.scheduler.manual_clock import ManualClock
from tests.webhooks import COMPLETES, FAILS, RETRIES
from workflowd.observability import JsonFormatter
from workflowd.v1 import workflow_service_pb2 as pb

Start = Callable[..., Awaitable[Daemon]]


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.app.metrics.registry.get_sample_value(name, labels)


async def run_of(daemon: Daemon, spec: str, name: str) -> pb.Run:
    workflow = await apply(daemon, spec.format(name=name))
    return await finished(daemon, (await trigger(daemon, workflow.id)).id)


async def test_runs_are_counted_and_timed_per_workflow(daemon: Daemon) -> None:
    done = [await run_of(daemon, COMPLETES, "nightly") for _ in range(2)]
    await run_of(daemon, FAILS, "broken")
    await run_of(daemon, RETRIES, "flaky")
    nightly = {"company": "local", "workflow": "etl/nightly"}
    ended = "workflowd_workflow_runs_ended_total"
    assert sample(daemon, ended, **nightly, status="completed") == 2
    assert sample(daemon, ended, company="local", workflow="etl/broken", status="failed") == 1
    assert sample(daemon, ended, **nightly, status="failed") is None
    duration = "workflowd_workflow_run_duration_seconds_count"
    assert sample(daemon, duration, **nightly, status="completed") == 2
    last = sample(daemon, "workflowd_workflow_last_success_timestamp_seconds", **nightly)
    latest = max(r.ended_at.ToDatetime(tzinfo=UTC).timestamp() for r in done)
    assert last == pytest.approx(latest, abs=1.0)
    broken = {"company": "local", "workflow": "etl/broken"}
    assert sample(daemon, "workflowd_workflow_last_success_timestamp_seconds", **broken) is None
    retries = "workflowd_workflow_task_retries_total"
    assert sample(daemon, retries, company="local", workflow="etl/flaky") == 1


async def test_workflows_past_the_cap_share_one_series(start_daemon: Start) -> None:
    daemon = await start_daemon(metrics_max_workflows=1)
    await run_of(daemon, COMPLETES, "first")
    await run_of(daemon, COMPLETES, "second")
    await run_of(daemon, COMPLETES, "third")
    ended = "workflowd_workflow_runs_ended_total"
    labels = {"company": "local", "status": "completed"}
    assert sample(daemon, ended, workflow="etl/first", **labels) == 1
    assert sample(daemon, ended, workflow="other", **labels) == 2
    assert sample(daemon, ended, workflow="etl/second", **labels) is None


async def test_the_last_success_is_known_again_after_a_restart(start_daemon: Start) -> None:
    first = await start_daemon()
    run = await run_of(first, COMPLETES, "nightly")
    await first.app.drain()
    second = await start_daemon(first.data_dir)
    labels = {"company": "local", "workflow": "etl/nightly"}

    async def seeded() -> float | None:
        return sample(second, "workflowd_workflow_last_success_timestamp_seconds", **labels)

    assert await eventually(seeded) == pytest.approx(
        run.ended_at.ToDatetime(tzinfo=UTC).timestamp(), 1e-6
    )


async def test_schedule_decisions_and_lateness_per_workflow(start_daemon: Start) -> None:
    clock = ManualClock(T0)
    daemon = await start_daemon(clock=clock)
    plane = Plane.of(daemon)
    await plane.load_csv("audit", AUDIT_CSV)
    await plane.aclose()
    wf = await create(daemon, scheduled("ticking", "{cron: '*/5 * * * *'}"))
    await activate(daemon, wf.id)
    clock.set(T0.replace(minute=5) + timedelta(seconds=2))
    labels = {"company": "local", "workflow": "analytics/ticking"}

    async def fired() -> float | None:
        name = "workflowd_workflow_schedule_decisions_total"
        return sample(daemon, name, **labels, outcome="fired")

    assert await eventually(fired) == 1
    late = "workflowd_workflow_schedule_lateness_seconds"
    assert sample(daemon, f"{late}_count", **labels) == 1
    assert sample(daemon, f"{late}_sum", **labels) == pytest.approx(2.0)


async def test_a_failed_run_is_one_structured_warning(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflowd")
    run = await run_of(daemon, FAILS, "broken")
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == "workflowd.engine"
    ]
    assert len(warnings) == 1
    record = warnings[0]
    assert record.getMessage() == (
        f"run {run.id} of etl/broken failed at /do/0/boom: the nightly load broke"
    )
    entry = json.loads(JsonFormatter().format(record))
    assert {k: entry[k] for k in ("run_id", "workflow", "task_ref", "title")} == {
        "run_id": run.id,
        "workflow": "etl/broken",
        "task_ref": "/do/0/boom",
        "title": "the nightly load broke",
    }


async def test_a_drain_logs_its_steps(
    start_daemon: Start, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = await start_daemon()
    caplog.set_level(logging.INFO, logger="workflowd")
    await daemon.app.drain()
    said = [r.getMessage() for r in caplog.records if r.name == "workflowd"]
    steps = [line.split(":")[0] for line in said if line.startswith(("draining", "drained"))]
    assert steps == ["draining"] * 5 + [said[-1].split(":")[0]]
    assert said[0] == "draining: health NOT_SERVING, no new runs"
    assert said[-1].startswith("drained in ")
    assert said[-1].endswith("s: store closed")
