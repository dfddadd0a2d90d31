"""Per-task overhead with tracing on and off, measured in the same period.

Two `workflowd serve` daemons against one instant jobs API (its own process; completes jobs at
once): one with no `OTEL_*` variable (tracing off), one exporting over OTLP/HTTP to a sink in
this process that decodes and counts the spans (tracing on). Rounds alternate between them
(A B, then B A, …) so that the shared machine's load falls on both alike; each run is a chain
of N trivial tasks, and its per-task overhead is the median of (next job's creation − previous
job's end), both stamped by the jobs API, as in `overhead.py`.

Usage: `.venv/bin/python scripts/bench/tracing_overhead.py [--quick] [--rounds R] [--tasks N]`.
The last line of output is one JSON object; `overhead_ratio_on_vs_off` is the median of the
rounds' on/off ratios (target <= 1.05), with its spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from instant_jobs_api import percentile, spawn_instant_api
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from overhead import Workflowd, chain_spec, gaps_ms, job_times

TARGET_RATIO = 1.05


class SpanSink:
    """An OTLP/HTTP traces endpoint that counts what it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        self.spans += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_env(otlp: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if otlp is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    return env


async def one_run(daemon: Workflowd, api_url: str, name: str, tasks: int) -> list[float]:
    """The run's per-task overheads, in ms."""
    workflow_id = await daemon.create(chain_spec(name, name, tasks))
    followed = await daemon.run_to_end(workflow_id)
    async with aiohttp.ClientSession(api_url) as session:
        times = await job_times(session, [followed.run_id], instant=True)
    return gaps_ms(times)


async def bench(rounds: int, tasks: int, work: Path) -> dict[str, Any]:
    api, api_url = await spawn_instant_api(0.0, work / "instant-api.log")
    sink = SpanSink()
    await sink.start()
    daemons: dict[str, Workflowd] = {}
    try:
        for mode, otlp in (("off", None), ("on", sink.url)):
            (work / mode).mkdir()
            daemons[mode] = await Workflowd.spawn(work / mode, api_url, env=daemon_env(otlp))
        for mode, daemon in daemons.items():  # warm-up: first-use costs on both sides
            await one_run(daemon, api_url, f"warm{mode}", tasks)
        per_round: dict[str, list[float]] = {"off": [], "on": []}
        pooled: dict[str, list[float]] = {"off": [], "on": []}
        cpu = {mode: -cpu_s(d.child.proc.pid) for mode, d in daemons.items()}
        for index in range(rounds):
            order = ("off", "on") if index % 2 == 0 else ("on", "off")
            for mode in order:
                gaps = await one_run(daemons[mode], api_url, f"r{index}{mode}", tasks)
                per_round[mode].append(percentile(gaps, 50))
                pooled[mode] += gaps
            off, on = per_round["off"][-1], per_round["on"][-1]
            print(f"round {index}: off {off:.3f} ms, on {on:.3f} ms", flush=True)
        await asyncio.sleep(6)  # ok: the daemon's batch exporter sends every 5 s
        for mode, daemon in daemons.items():  # spans built and exported included
            cpu[mode] = (cpu[mode] + cpu_s(daemon.child.proc.pid)) * 1000 / (rounds * tasks)
        out = summary(per_round, pooled, sink.spans, rounds, tasks)
        out["daemon_cpu_ms_per_task_off"] = round(cpu["off"], 3)
        out["daemon_cpu_ms_per_task_on"] = round(cpu["on"], 3)
        return out
    finally:
        for daemon in daemons.values():
            await daemon.aclose()
        await sink.aclose()
        await api.stop()


def summary(
    per_round: dict[str, list[float]],
    pooled: dict[str, list[float]],
    spans: int,
    rounds: int,
    tasks: int,
) -> dict[str, Any]:
    ratios = [on / off for off, on in zip(per_round["off"], per_round["on"], strict=True)]
    ratio = statistics.median(ratios)
    p50 = {mode: percentile(gaps, 50) for mode, gaps in pooled.items()}
    return {
        "pooled_p50_ms_off": round(p50["off"], 3),
        "pooled_p50_ms_on": round(p50["on"], 3),
        "pooled_ratio_on_vs_off": round(p50["on"] / p50["off"], 3),
        "tasks_per_run": tasks,
        "rounds": rounds,
        "per_task_overhead_ms_p50_off": round(statistics.median(per_round["off"]), 3),
        "per_task_overhead_ms_p50_on": round(statistics.median(per_round["on"]), 3),
        "off_range_ms": [round(min(per_round["off"]), 3), round(max(per_round["off"]), 3)],
        "on_range_ms": [round(min(per_round["on"]), 3), round(max(per_round["on"]), 3)],
        "overhead_ratio_on_vs_off": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "spans_exported": spans,
        "target_met": ratio <= TARGET_RATIO,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (2 rounds of 10 tasks)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 8)")
    parser.add_argument("--tasks", type=int, help="tasks per run (default 100)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 8)
    tasks = args.tasks or (10 if args.quick else 100)
    started = time.perf_counter()
    load_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="workflowd-bench-") as tmp:
        out = asyncio.run(bench(rounds, tasks, Path(tmp)))
    out["bench_seconds"] = round(time.perf_counter() - started, 1)
    out["load_avg_1m_at_start"] = round(load_1m, 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
