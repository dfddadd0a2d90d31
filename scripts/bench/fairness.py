"""One company's 300 schedules firing every second against another company's triggers.

Company `noisy` creates `--schedules` workflows (300) with `schedule: {every: {seconds: 1}}` and
activates each with the ALLOW_ALL overlap policy; company `quiet` triggers a one-task workflow
every 100 ms, first alone (the baseline, half as long, at most 5 s), then for `--seconds` (20)
while the schedules fire. Then `noisy` unschedules its workflows one call at a time, as a
script would; a run created after its workflow's UnscheduleWorkflow answered is a fire that
came too late. The daemon
(`workflowd serve` with a tokens file) runs against the instant jobs API in its own process,
whose jobs last `--job-s` (1 s), so runs pile up as they would on a busy jobs system.

Each case runs on a fresh daemon: `default` with the default quotas (most activations are then
refused, with RESOURCE_EXHAUSTED), `lifted` with the quotas that would refuse this load turned
off (what is left is fair sharing alone). A third case, `flood`, has no schedules: `noisy`
calls TriggerWorkflow from `FLOOD_CALLERS` callers at once, without pause, under the default
quotas, while `quiet` triggers as before.

Usage: `.venv/bin/python scripts/bench/fairness.py [--quick]`. The last line of output is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from instant_jobs_api import percentile, spawn_instant_api
from tenants import Latencies, Tenants, rounded

from workflowd.api.client import Client, ClientError
from workflowd.v1 import workflow_service_pb2 as pb

TRIGGER_INTERVAL_S = 0.1
FLOOD_CALLERS = 32
LIFTED = (
    *("--quota-min-every-s", "0", "--quota-active-schedules", "0"),
    *("--quota-active-runs", "0", "--quota-trigger-rate-per-s", "0"),
)
# A smoke run is too short for a busy machine to pass the default burst of 500 triggers: its
# flood meets a small bucket instead, so the refusals it reports never depend on speed.
QUICK_FLOOD = ("--quota-trigger-burst", "5", "--quota-trigger-rate-per-s", "1")
ACTIVE = [pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING, pb.RUN_STATUS_CANCELLING]


def spec(name: str, schedule: str = "") -> str:
    return (
        f"document: {{dsl: '1.0.0', namespace: bench, name: {name}, version: '1.0.0'}}\n"
        f"{schedule}do:\n"
        "  - one:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        f"      with: {{nql: SELECT 1 AS one, datasetName: {name.replace('-', '_')}}}\n"
    )


async def schedule_all(noisy: Client, count: int) -> tuple[list[str], Counter[str]]:
    """The workflows whose schedules are active, and why the others were refused."""
    active: list[str] = []
    refused: Counter[str] = Counter()
    every = "schedule: {every: {seconds: 1}}\n"
    for i in range(count):
        created = await noisy.call(
            "CreateWorkflow", pb.CreateWorkflowRequest(specification=spec(f"tick-{i}", every))
        )
        request = pb.ScheduleWorkflowRequest(
            workflow_id=created.workflow.id, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL
        )
        try:
            await noisy.call("ScheduleWorkflow", request)
            active.append(created.workflow.id)
        except ClientError as exc:
            refused[f"{exc.code}: {exc.message.partition('(setting ')[2].partition(')')[0]}"] += 1
    return active, refused


async def count_runs(client: Client, statuses: list[pb.RunStatus.ValueType]) -> list[pb.Run]:
    runs: list[pb.Run] = []
    token = ""
    while True:
        page = await client.call(
            "ListRuns", pb.ListRunsRequest(statuses=statuses, page_size=1000, page_token=token)
        )
        runs += page.runs
        token = page.next_page_token
        if not token:
            return runs


async def unschedule_all(
    noisy: Client, workflow_ids: list[str]
) -> tuple[dict[str, float], list[float]]:
    """Each workflow's unschedule answer time (epoch seconds), and each call's milliseconds."""
    answered: dict[str, float] = {}
    calls: list[float] = []
    for workflow_id in workflow_ids:
        started = time.perf_counter()
        await noisy.call(
            "UnscheduleWorkflow", pb.UnscheduleWorkflowRequest(workflow_id=workflow_id)
        )
        calls.append((time.perf_counter() - started) * 1000)
        answered[workflow_id] = time.time()
    return answered, calls


async def quiet_triggers(quiet: Client, workflow_id: str, seconds: float) -> tuple[Latencies, int]:
    """The quiet company's trigger latencies, and how many of its triggers its own quota
    refused (a refusal is an answer too: the smoke run's small bucket holds for both)."""
    latencies, stop, refused = Latencies(), asyncio.Event(), 0
    request = pb.TriggerWorkflowRequest(workflow_id=workflow_id)

    async def trigger() -> None:
        nonlocal refused
        try:
            await quiet.call("TriggerWorkflow", request)
        except ClientError as exc:
            if exc.code != "RESOURCE_EXHAUSTED":
                raise
            refused += 1

    probe = asyncio.create_task(latencies.probe(trigger, stop, TRIGGER_INTERVAL_S))
    await asyncio.sleep(seconds)  # ok: the probe samples for this long
    stop.set()
    await probe
    return latencies, refused


async def measure(tenants: Tenants, schedules: int, seconds: float) -> dict[str, Any]:
    noisy, quiet = tenants.clients["noisy"], tenants.clients["quiet"]
    mine = await quiet.call("CreateWorkflow", pb.CreateWorkflowRequest(specification=spec("mine")))
    baseline, baseline_refused = await quiet_triggers(
        quiet, mine.workflow.id, min(5.0, seconds / 2)
    )
    active, refused = await schedule_all(noisy, schedules)
    loaded, loaded_refused = await quiet_triggers(quiet, mine.workflow.id, seconds)
    piled_up = len(await count_runs(noisy, ACTIVE))
    started = time.perf_counter()
    answered, calls = await unschedule_all(noisy, active)
    unschedule_s = time.perf_counter() - started
    await asyncio.sleep(3)  # ok: any fire still on its way would land meanwhile
    late = [
        run
        for run in await count_runs(noisy, [])
        if run.workflow_id in answered
        and run.created_at.ToNanoseconds() / 1e9 > answered[run.workflow_id]
    ]
    return {
        "schedules_active": len(active),
        "activations_refused": dict(refused),
        "quiet_refused_by_own_quota": baseline_refused + loaded_refused,
        "noisy_active_runs_after_load": piled_up,
        **baseline.figures("baseline_trigger"),
        **loaded.figures("loaded_trigger"),
        "unschedule_all_s": round(unschedule_s, 2),
        "unschedule_call_ms_p50": rounded(percentile(calls, 50)),
        "unschedule_call_ms_p99": rounded(percentile(calls, 99)),
        "runs_created_after_unschedule": len(late),
    }


async def flood(noisy: Client, workflow_id: str, stop: asyncio.Event, tally: Counter[str]) -> None:
    request = pb.TriggerWorkflowRequest(workflow_id=workflow_id)
    while not stop.is_set():
        try:
            await noisy.call("TriggerWorkflow", request)
            tally["accepted"] += 1
        except ClientError as exc:
            tally[exc.code] += 1


async def measure_flood(tenants: Tenants, seconds: float) -> dict[str, Any]:
    noisy, quiet = tenants.clients["noisy"], tenants.clients["quiet"]
    mine = await quiet.call("CreateWorkflow", pb.CreateWorkflowRequest(specification=spec("mine")))
    theirs = await noisy.call("CreateWorkflow", pb.CreateWorkflowRequest(specification=spec("x")))
    baseline, baseline_refused = await quiet_triggers(
        quiet, mine.workflow.id, min(5.0, seconds / 2)
    )
    stop, tally = asyncio.Event(), Counter[str]()
    callers = [
        asyncio.create_task(flood(noisy, theirs.workflow.id, stop, tally))
        for _ in range(FLOOD_CALLERS)
    ]
    loaded, loaded_refused = await quiet_triggers(quiet, mine.workflow.id, seconds)
    stop.set()
    await asyncio.gather(*callers)
    return {
        "noisy_triggers": dict(tally),
        "quiet_refused_by_own_quota": baseline_refused + loaded_refused,
        **baseline.figures("baseline_trigger"),
        **loaded.figures("loaded_trigger"),
    }


Measure = Callable[[Tenants], Awaitable[dict[str, Any]]]


async def case(work: Path, flags: tuple[str, ...], job_s: float, how: Measure) -> dict[str, Any]:
    await asyncio.to_thread(work.mkdir)
    api, api_url = await spawn_instant_api(job_s, work / "instant-api.log")
    tenants = await Tenants.spawn(work, ["noisy", "quiet"], api_url, flags)
    try:
        return await how(tenants)
    finally:
        await tenants.aclose()
        await api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (30 schedules, 3 s)")
    parser.add_argument("--schedules", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--job-s", type=float, default=1.0)
    args = parser.parse_args()
    schedules, seconds = (30, 3.0) if args.quick else (args.schedules, args.seconds)
    load_1m = os.getloadavg()[0]
    out: dict[str, Any] = {"schedules": schedules, "seconds": seconds, "job_s": args.job_s}
    with tempfile.TemporaryDirectory(prefix="workflowd-bench-") as tmp:
        schedule_storm = functools.partial(measure, schedules=schedules, seconds=seconds)
        trigger_flood = functools.partial(measure_flood, seconds=seconds)
        cases = (
            ("default", (), schedule_storm),
            ("lifted", LIFTED, schedule_storm),
            ("flood", QUICK_FLOOD if args.quick else (), trigger_flood),
        )
        for name, flags, how in cases:
            figures = asyncio.run(case(Path(tmp) / name, flags, args.job_s, how))
            print(f"{name}: {json.dumps(figures)}", flush=True)
            out[name] = figures
    out["load_avg_1m_at_start"] = round(load_1m, 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
