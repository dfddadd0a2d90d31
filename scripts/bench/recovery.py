"""workflowd restarted with many runs in flight: how soon it serves, how soon every run has
re-attached to its job, and that no job was submitted twice and no run was left behind.

`workflowd serve` (its own process) runs against the instant jobs API (its own process), which
holds every job running until the bench releases them. The bench triggers N runs of a one-task
workflow, waits until the jobs API holds N jobs (every run is mid-job), kills the daemon with
SIGKILL and starts it again on the same data directory. Then:

- serving_s: from the restart's exec to the daemon's ready line (printed once gRPC serves);
- reattached_s: from the exec to the moment the daemon waits on all N jobs again
  (`workflowd_jobs_awaited` in /metrics, polled every 20 ms);
- duplicate_jobs: jobs beyond one per (run, task), from the jobs API's own records;
- stuck_runs: runs not COMPLETED once the jobs are released and the daemon went idle.

Usage: `.venv/bin/python scripts/bench/recovery.py [--quick] [--runs 10000]`. The last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from instant_jobs_api import Child, spawn_instant_api
from overhead import chain_spec, workflowd_argv

from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

READY = r"serving gRPC on [\d.]+:(\d+) \(jobs API \S+, metrics (http://\S+/metrics),"
TRIGGER_CONCURRENCY = 64
POLL_S = 0.02
TARGETS = {"serving_s": 1.0, "reattached_s": 5.0, "duplicate_jobs": 0, "stuck_runs": 0}


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{url} has no {name}")


async def jobs_of(session: aiohttp.ClientSession, api_url: str) -> dict[str, dict[str, Any]]:
    async with session.get(f"{api_url}/bench/timings") as resp:
        jobs: dict[str, dict[str, Any]] = await resp.json()
    return jobs


async def trigger(stub: pb_grpc.WorkflowServiceAsyncStub, workflow_id: str, runs: int) -> None:
    counter = iter(range(runs))

    async def worker() -> None:
        for _ in counter:
            await stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=workflow_id))

    async with asyncio.TaskGroup() as group:
        for _ in range(TRIGGER_CONCURRENCY):
            group.create_task(worker())


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll `check()` every POLL_S until it is true: the figure lives in another process."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if await check():
                    return
                await asyncio.sleep(POLL_S)  # ok: polling another process's figure
    except TimeoutError:
        raise RuntimeError(f"gave up after {timeout_s} s waiting for {what}") from None


async def statuses(stub: pb_grpc.WorkflowServiceAsyncStub, workflow_id: str) -> Counter[str]:
    found: Counter[str] = Counter()
    token = ""
    while True:
        page = await stub.ListRuns(
            pb.ListRunsRequest(workflow_id=workflow_id, page_size=1000, page_token=token)
        )
        found.update(pb.RunStatus.Name(r.status).removeprefix("RUN_STATUS_") for r in page.runs)
        token = page.next_page_token
        if not token:
            return found


async def bench(runs: int, work: Path) -> dict[str, Any]:
    api, api_url = await spawn_instant_api(-1.0, work / "api.log")
    data_dir = work / "workflowd"
    data_dir.mkdir()
    argv = workflowd_argv(data_dir, api_url)
    try:
        async with aiohttp.ClientSession() as session:
            first = await Child.spawn(argv, READY, work / "first.log")
            try:
                workflow_id, trigger_s = await _load(first, runs)

                async def all_submitted() -> bool:
                    return len(await jobs_of(session, api_url)) >= runs

                await until(all_submitted, 120, "every run's job submitted")
            finally:
                first.proc.kill()
                await first.proc.wait()
            in_flight = sum(
                1 for j in (await jobs_of(session, api_url)).values() if not j["ended_ns"]
            )
            started = time.perf_counter()
            second = await Child.spawn(argv, READY, work / "second.log", timeout_s=120)
            serving_s = time.perf_counter() - started
            try:
                metrics_url = second.ready.group(2)

                async def reattached() -> bool:
                    awaited = await metric(session, metrics_url, "workflowd_jobs_awaited")
                    return awaited >= in_flight

                await until(reattached, 120, "every run re-attached")
                reattached_s = time.perf_counter() - started
                async with session.post(f"{api_url}/bench/release") as resp:
                    resp.raise_for_status()

                async def idle() -> bool:
                    return await metric(session, metrics_url, "workflowd_active_runs") == 0

                await until(idle, 120, "every run ended")
                async with grpc.aio.insecure_channel(f"127.0.0.1:{second.ready.group(1)}") as ch:
                    ended = await statuses(pb_grpc.WorkflowServiceStub(ch), workflow_id)
            finally:
                await second.stop()
            jobs = (await jobs_of(session, api_url)).values()
            per_task = Counter((j["run_id"], j["task"]) for j in jobs)
    finally:
        await api.stop()
    return {
        "runs": runs,
        "in_flight_at_kill": in_flight,
        "trigger_s": round(trigger_s, 2),
        "serving_s": round(serving_s, 3),
        "reattached_s": round(reattached_s, 3),
        "duplicate_jobs": sum(n - 1 for n in per_task.values()),
        "jobs_missing": runs - len(per_task),
        "ended_by_status": dict(ended),
        "stuck_runs": runs - ended.get("COMPLETED", 0),
    }


async def _load(daemon: Child, runs: int) -> tuple[str, float]:
    """Create the workflow and trigger `runs` runs; the workflow id and the trigger time."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.ready.group(1)}") as channel:
        stub = pb_grpc.WorkflowServiceStub(channel)
        reply = await stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=chain_spec("recovery", "r", 1))
        )
        started = time.perf_counter()
        await trigger(stub, reply.workflow.id, runs)
        return reply.workflow.id, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (300 runs)")
    parser.add_argument("--runs", type=int, help="runs in flight (default 10000)")
    parser.add_argument("--work-dir", type=Path, help="keep logs and databases here")
    args = parser.parse_args()
    runs = args.runs or (300 if args.quick else 10_000)
    load_1m = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="workflowd-recovery-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = asyncio.run(bench(runs, work))
    figures["targets_met"] = {k: figures[k] <= limit for k, limit in TARGETS.items()}
    figures["load_avg_1m_at_start"] = round(load_1m, 2)
    figures["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
