"""The scheduler under many active schedules: fire lateness, CPU while idle between fires, RSS,
the backlog, and whether another workflow's runs still get through.

A `workflowd serve` subprocess runs against the instant jobs API (its own process). The bench
creates `--schedules` workflows whose `schedule: {every: …}` is one hour, and activates them
evenly over `--spread-s` seconds (by default the fire period, so that their phases are spread
over it, as a real fleet's would be):

- idle CPU: with every schedule active and none due for the next hour, the daemon's CPU time
  (/proc/<pid>/stat) over `--idle-s` seconds;
- fire lateness: every workflow then gets a version 2.0.0 whose schedule is every
  `--period-s` seconds (its phase, the activation instant, stays): by default 10,000 schedules
  every 100 s, 100 instants a second, within what the daemon completes. A `WatchRuns` stream
  receives each scheduled run's RUN_CREATED event; lateness = receipt (`time.time()` here,
  after the fire committed and the event crossed gRPC) − the instant (anchor + k × period).
  Measured over `--window-s` seconds, after every workflow's first fire of the new period;
- backlog: `workflowd_schedule_backlog` and `workflowd_schedule_backlog_seconds` from
  `/metrics`, every `--scrape-every-s` seconds of that window (their maximum), as a Prometheus
  would scrape them (15 s by default; each scrape renders every workflow's series, which at
  500 workflows costs the daemon about 120 ms of CPU, so a scrape every second shows in the
  lateness); a shorter `--period-s` puts the daemon above its capacity, where the backlog grows
  instead of the lateness hiding;
- other runs: meanwhile, one run at a time of another (unscheduled) workflow, every 100 ms:
  trigger to its terminal event, so a fleet of schedules is seen not to starve other runs;
- RSS: VmRSS and VmHWM of the daemon at the end.

Usage: `.venv/bin/python scripts/bench/scheduler.py [--quick] [--schedules 10000]
[--period-s 100]`. The last line of output is one JSON object with `fire_lateness_ms_p99`,
`idle_cpu_percent` and `schedule_backlog_max`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from instant_jobs_api import Child, percentile, spawn_instant_api
from overhead import SERVE_READY, TERMINAL_EVENTS, Workflowd, workflowd_argv

from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

CONCURRENCY = 64
OTHER_EVERY_S = 0.1
TARGETS = {"fire_lateness_ms_p99": 100.0, "idle_cpu_percent": 1.0}


def spec(index: int, version: str, every: str) -> str:
    return (
        f"document: {{dsl: '1.0.0', namespace: bench, name: s{index}, version: '{version}'}}\n"
        f"schedule: {{every: {every}}}\n"
        "do:\n"
        "  - one:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT 1 AS one, datasetName: s{index}}}\n"
    )


@dataclass
class Fleet:
    stub: pb_grpc.WorkflowServiceAsyncStub
    ids: list[str] = field(default_factory=list)
    anchors: dict[str, float] = field(default_factory=dict)  # workflow id → epoch seconds


async def bounded(calls: list[Callable[[], Any]], limit: int = CONCURRENCY) -> list[Any]:
    """Make the calls, at most `limit` at a time (each is only started when its turn comes:
    ten thousand started at once would flood the channel)."""
    slots = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Any]) -> Any:
        async with slots:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def create_all(fleet: Fleet, count: int, version: str, every: str) -> None:
    responses = await bounded(
        [
            functools.partial(
                fleet.stub.CreateWorkflow,
                pb.CreateWorkflowRequest(specification=spec(i, version, every)),
            )
            for i in range(count)
        ]
    )
    if not fleet.ids:
        fleet.ids = [r.workflow.id for r in responses]


async def activate_spread(fleet: Fleet, spread_s: float) -> None:
    """Activate every schedule, evenly over `spread_s`, so that their phases differ."""
    start = time.monotonic()
    step = spread_s / max(1, len(fleet.ids))

    async def activate(index: int, workflow_id: str) -> None:
        await asyncio.sleep(max(0.0, start + index * step - time.monotonic()))  # ok: pacing
        response = await fleet.stub.ScheduleWorkflow(
            pb.ScheduleWorkflowRequest(workflow_id=workflow_id)
        )
        fleet.anchors[workflow_id] = response.schedule.anchor.ToDatetime(tzinfo=UTC).timestamp()

    await asyncio.gather(*(activate(i, w) for i, w in enumerate(fleet.ids)))


async def idle_cpu_percent(daemon: Child, idle_s: float) -> float:
    before = daemon.cpu_s()
    await asyncio.sleep(idle_s)  # ok: the measuring window
    return round((daemon.cpu_s() - before) / idle_s * 100, 3)


async def collect_created(
    stub: pb_grpc.WorkflowServiceAsyncStub, seen: list[tuple[str, float]]
) -> None:
    call = stub.WatchRuns(pb.WatchRunsRequest(statuses=[pb.RUN_STATUS_PENDING]))
    async for response in call:
        if response.event.type == pb.RUN_EVENT_TYPE_RUN_CREATED:
            seen.append((response.event.workflow_id, time.time()))


def lateness_ms(
    fleet: Fleet, seen: list[tuple[str, float]], after: float, period_s: float
) -> list[float]:
    out = []
    for workflow_id, received in seen:
        anchor = fleet.anchors.get(workflow_id)
        if anchor is None or received < after:
            continue
        instant = anchor + ((received - anchor) // period_s) * period_s
        out.append((received - instant) * 1000)
    return out


@dataclass(frozen=True)
class Plan:
    schedules: int
    spread_s: float
    idle_s: float
    period_s: int
    window_s: float
    scrape_every_s: float


async def spawn_daemon(work: Path, api_url: str) -> tuple[Workflowd, str]:
    """`workflowd serve` and the URL of its /metrics."""
    ready = SERVE_READY + r" metrics (\S+),"
    child = await Child.spawn(workflowd_argv(work, api_url), ready, work / "stderr.log")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{child.ready.group(1)}")
    daemon = Workflowd(child, channel, pb_grpc.WorkflowServiceStub(channel), child.ready.group(2))
    return daemon, child.ready.group(3)


async def sample_backlog(
    metrics_url: str, every_s: float, samples: list[tuple[float, float]]
) -> None:
    """(backlog, its oldest instant's age) from /metrics, every `every_s` seconds."""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(metrics_url) as resp:
                found = {}
                for line in (await resp.text()).splitlines():
                    name, _, value = line.partition(" ")
                    if name in ("workflowd_schedule_backlog", "workflowd_schedule_backlog_seconds"):
                        found[name] = float(value)
            samples.append(
                (found["workflowd_schedule_backlog"], found["workflowd_schedule_backlog_seconds"])
            )
            await asyncio.sleep(every_s)  # ok: the sampling period


async def other_runs(stub: pb_grpc.WorkflowServiceAsyncStub, latencies_ms: list[float]) -> None:
    """One run at a time of an unscheduled workflow, started every OTHER_EVERY_S: trigger to
    its terminal event."""
    reply = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=other_spec()))
    workflow_id = reply.workflow.id
    while True:
        started = time.perf_counter()
        run = await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=workflow_id))
        async for response in stub.WatchRun(pb.WatchRunRequest(run_id=run.run.id)):
            if response.event.type in TERMINAL_EVENTS:
                break
        latencies_ms.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(max(0.0, started + OTHER_EVERY_S - time.perf_counter()))  # ok: pace


def other_spec() -> str:
    return (
        "document: {dsl: '1.0.0', namespace: bench, name: other, version: '1.0.0'}\n"
        "do:\n"
        "  - one:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with: {nql: SELECT 1 AS one, datasetName: other}\n"
    )


async def bench(plan: Plan, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    api, api_url = await spawn_instant_api(0.0, work / "api.log")
    (work / "workflowd").mkdir(exist_ok=True)
    daemon, metrics_url = await spawn_daemon(work / "workflowd", api_url)
    try:
        fleet = Fleet(daemon.stub)
        await create_all(fleet, plan.schedules, "1.0.0", "{hours: 1}")
        await activate_spread(fleet, plan.spread_s)
        idle = await idle_cpu_percent(daemon.child, plan.idle_s)
        seen: list[tuple[str, float]] = []
        watcher = asyncio.create_task(collect_created(daemon.stub, seen))
        await create_all(fleet, plan.schedules, "2.0.0", f"{{seconds: {plan.period_s}}}")
        # From here on every workflow fires each period at anchor + k × period.
        measure_from = time.time() + plan.period_s
        await asyncio.sleep(plan.period_s)  # ok: every schedule moves to its new period
        backlog: list[tuple[float, float]] = []
        others_ms: list[float] = []
        sidelines = [
            asyncio.create_task(sample_backlog(metrics_url, plan.scrape_every_s, backlog)),
            asyncio.create_task(other_runs(daemon.stub, others_ms)),
        ]
        await asyncio.sleep(plan.window_s)  # ok: the measuring window
        for task in [watcher, *sidelines]:
            task.cancel()
        await asyncio.gather(watcher, *sidelines, return_exceptions=True)
        samples = lateness_ms(fleet, seen, measure_from, plan.period_s)
        result: dict[str, Any] = {
            "schedules": plan.schedules,
            "period_s": plan.period_s,
            "instants_per_s": round(plan.schedules / plan.period_s, 1),
            "scrape_every_s": plan.scrape_every_s,
            "fires_measured": len(samples),
            "fire_lateness_ms_p50": round(percentile(samples, 50), 2),
            "fire_lateness_ms_p99": round(percentile(samples, 99), 2),
            "fire_lateness_ms_max": round(max(samples, default=float("nan")), 2),
            "schedule_backlog_max": max((b for b, _ in backlog), default=float("nan")),
            "schedule_backlog_seconds_max": max((a for _, a in backlog), default=float("nan")),
            "other_runs": len(others_ms),
            "other_run_ms_p50": round(percentile(others_ms, 50), 2),
            "other_run_ms_p99": round(percentile(others_ms, 99), 2),
            "idle_cpu_percent": idle,
            "daemon_cpu_s": round(daemon.child.cpu_s(), 1),
            "rss_mb": round(daemon.child.status_mb("VmRSS"), 1),
            "peak_rss_mb": round(daemon.child.status_mb("VmHWM"), 1),
            "bench_seconds": round(time.monotonic() - started, 1),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        }
        result["targets_met"] = {k: result[k] <= v for k, v in TARGETS.items()}
        return result
    finally:
        await daemon.aclose()
        await api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--spread-s", type=float, help="activations spread (default: the period)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle CPU window")
    parser.add_argument("--period-s", type=int, default=100, help="the fleet's fire period")
    parser.add_argument("--window-s", type=float, default=100.0, help="lateness window")
    parser.add_argument("--scrape-every-s", type=float, default=15.0, help="/metrics period")
    parser.add_argument("--quick", action="store_true", help="100 schedules, short windows")
    parser.add_argument("--work-dir", type=Path, help="keep logs and state here")
    args = parser.parse_args()
    spread_s = args.spread_s if args.spread_s is not None else float(args.period_s)
    plan = Plan(
        args.schedules, spread_s, args.idle_s, args.period_s, args.window_s, args.scrape_every_s
    )
    if args.quick:
        plan = Plan(
            schedules=100, spread_s=3.0, idle_s=2.0, period_s=5, window_s=8.0, scrape_every_s=1.0
        )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="workflowd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(bench(plan, work))
    for key, value in result.items():
        print(f"{key:24} {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
