"""workflowd under many concurrent runs: peak memory, event-loop lag, and event latency to watchers.

For each N (1,000 and 10,000): a fresh daemon (its own process) runs against the instant jobs API
(its own process) whose jobs last `--delay-s` seconds. The bench triggers N runs of a chain of
`--tasks` tasks with bounded client concurrency, attaches `WatchRun` watchers (1,000 in total,
spread evenly over the runs) as soon as their runs exist, and waits until every run ended.

- peak RSS: VmHWM of the daemon process (/proc/<pid>/status);
- event-loop lag: workflowd has no lag metric, so the daemon runs here as `concurrency.py host`:
  the same `App` as `workflowd serve`, plus a probe task on its loop that sleeps 10 ms and
  records how late it wakes. SIGUSR1 makes it print the window's figures and start a new one;
- event latency: the instant API's job end (`time.time_ns()`) → the watcher receiving that
  task's TASK_COMPLETED event (same machine clock).

Usage: `.venv/bin/python scripts/bench/concurrency.py [--quick] [--runs 1000 10000]`. The last
line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from instant_jobs_api import Child, percentile, spawn_instant_api
from overhead import NO_QUOTAS, TERMINAL_EVENTS, chain_spec

from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

PROBE_INTERVAL_S = 0.010
TRIGGER_CONCURRENCY = 64
CHANNELS = 8  # watchers are spread over a few HTTP/2 connections, as many clients would be
# A phase gives up after this, plus the time its triggers and jobs take (by N and the delay).
PHASE_TIMEOUT_S = 240.0
TARGETS = {"loop_lag_ms_p99": 20.0, "event_latency_ms_p99": 10.0}
# Peak RSS: 500 MB up to 33,000 runs, then 1.5 GB per 100,000.
RSS_MB_PER_RUN = 1500.0 / 100_000
RSS_FLOOR_MB = 500.0


# --- the daemon host (a subprocess): workflowd's App plus a loop-lag probe --------------------


class LagProbe:
    """Sleeps a fixed interval and records how late each wake-up comes: the loop's lag."""

    def __init__(self) -> None:
        self.samples_ms: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + PROBE_INTERVAL_S
            await asyncio.sleep(PROBE_INTERVAL_S)  # ok: the probe's measuring tick
            if len(self.samples_ms) < 1_000_000:
                self.samples_ms.append(max(0.0, (loop.time() - expected) * 1000))

    def take(self) -> dict[str, float]:
        """The figures of the window since the last `take()`, which starts a new window."""
        samples, self.samples_ms = self.samples_ms, []
        return {
            "loop_lag_ms_p50": round(percentile(samples, 50), 2),
            "loop_lag_ms_p99": round(percentile(samples, 99), 2),
            "loop_lag_ms_max": round(max(samples, default=0.0), 2),
            "lag_samples": len(samples),
        }


class GcTimer:
    """Times the cyclic garbage collector's oldest-generation passes, which stop the loop for
    as long as they walk every tracked object (and so grow with the number of active runs)."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._started = 0

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif len(self.pauses_ms) < 100_000:
            self.pauses_ms.append((time.perf_counter_ns() - self._started) / 1e6)

    def take(self) -> dict[str, float]:
        pauses, self.pauses_ms = self.pauses_ms, []
        return {
            "gc_full_collections": len(pauses),
            "gc_full_pause_ms_max": round(max(pauses, default=0.0), 1),
            "gc_full_pause_ms_total": round(sum(pauses), 1),
        }


def loop_thread_cpu() -> dict[str, float]:
    """The CPU time of the thread this runs on (the signal handler: the event loop's), to tell
    the loop's share of the daemon's CPU from its other threads' (the store's writer, the
    readers, the log)."""
    return {"loop_thread_cpu_s": time.thread_time()}


async def host(jobs_url: str, data_dir: Path, slow_callback_ms: float) -> None:
    from workflowd.app import App
    from workflowd.observability import configure_logging
    from workflowd.settings import Settings

    settings = Settings.load(
        {
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "data_dir": data_dir,
            "jobs_url": jobs_url,
            **NO_QUOTAS,
        },
        os.environ,
    )
    configure_logging(settings.log_format, settings.log_level)
    app = App(settings)
    probe = LagProbe()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gc_timer = GcTimer()
    gc_timer.install()
    loop.add_signal_handler(
        signal.SIGUSR1,
        lambda: print(
            "lag " + json.dumps(probe.take() | gc_timer.take() | loop_thread_cpu()), flush=True
        ),
    )
    if slow_callback_ms:
        # Diagnostics only (asyncio debug mode costs CPU): log each callback that holds the
        # loop longer than this, naming it, to find what causes the lag spikes.
        loop.set_debug(True)
        loop.slow_callback_duration = slow_callback_ms / 1000
    await app.start()
    probe_task = asyncio.create_task(probe.run(), name="bench.lag-probe")
    assert app.http is not None
    print(f"serving gRPC on 127.0.0.1:{app.grpc_port} http {app.http.port}", flush=True)
    try:
        await stop.wait()
    finally:
        probe_task.cancel()
        await asyncio.wait([probe_task])
        await app.drain()


# --- the bench (the parent process) ------------------------------------------------------------


@dataclass
class Phase:
    runs: int
    tasks: int
    delay_s: float
    watchers: int
    slow_callback_ms: float = 0.0
    # (run id, task name, received ns); TASK_COMPLETED events carry no job id, so the job is
    # found by the run and task that the jobs API has in its metadata.
    latencies: list[tuple[str, str, int]] = field(default_factory=list)
    # A watcher sees every seq once, in order, up to the run's terminal event (see "Watching"
    # in docs/architecture.md); anything else is counted here.
    seq_faults: list[str] = field(default_factory=list)


class Clients:
    """Stubs over a few channels, handed out round-robin."""

    def __init__(self, port: int) -> None:
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
        self.stubs: list[pb_grpc.WorkflowServiceAsyncStub] = [
            pb_grpc.WorkflowServiceStub(c) for c in self.channels
        ]

    def stub(self, i: int) -> pb_grpc.WorkflowServiceAsyncStub:
        return self.stubs[i % len(self.stubs)]

    async def aclose(self) -> None:
        for channel in self.channels:
            await channel.close()


async def watch(stub: pb_grpc.WorkflowServiceAsyncStub, run_id: str, phase: Phase) -> None:
    """One watcher: note when each TASK_COMPLETED arrives, until the run's terminal event."""
    last_seq = 0
    async for response in stub.WatchRun(pb.WatchRunRequest(run_id=run_id)):
        event = response.event
        if event.seq != last_seq + 1:
            phase.seq_faults.append(f"{run_id}: seq {event.seq} after {last_seq}")
        last_seq = event.seq
        if event.type == pb.RUN_EVENT_TYPE_TASK_COMPLETED:
            phase.latencies.append((run_id, event.task_name, time.time_ns()))
        elif event.type in TERMINAL_EVENTS:
            return
    phase.seq_faults.append(f"{run_id}: stream ended after seq {last_seq}, before the run's end")


WatchRunsCall = grpc.aio.UnaryStreamCall[pb.WatchRunsRequest, pb.WatchRunsResponse]


async def count_ends(call: WatchRunsCall, expected: int) -> dict[str, int]:
    """Read a `WatchRuns` stream of terminal statuses until `expected` distinct runs ended;
    returns how many ended in each status."""
    ended: dict[str, pb.RunEventType.ValueType] = {}
    async for response in call:
        event = response.event
        if event.type in TERMINAL_EVENTS and event.run_id not in ended:
            ended[event.run_id] = event.type
            if len(ended) >= expected:
                break
    by_type: dict[str, int] = {}
    for kind in ended.values():
        name = pb.RunEventType.Name(kind).removeprefix("RUN_EVENT_TYPE_RUN_").lower()
        by_type[name] = by_type.get(name, 0) + 1
    return by_type


async def trigger_all(
    clients: Clients, workflow_id: str, phase: Phase, watchers: list[asyncio.Task[None]]
) -> list[str]:
    """Trigger `phase.runs` runs, at most TRIGGER_CONCURRENCY at a time; every
    (runs/watchers)-th run gets a watcher as soon as it exists."""
    run_ids: list[str] = []
    every = max(1, phase.runs // phase.watchers)
    counter = iter(range(phase.runs))

    async def worker() -> None:
        for i in counter:
            reply = await clients.stub(i).TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=workflow_id)
            )
            run_ids.append(reply.run.id)
            if i % every == 0 and len(watchers) < phase.watchers:
                coro = watch(clients.stub(i), reply.run.id, phase)
                watchers.append(asyncio.create_task(coro, name="bench.watcher"))

    async with asyncio.TaskGroup() as group:
        for _ in range(TRIGGER_CONCURRENCY):
            group.create_task(worker())
    return run_ids


async def active_runs(metrics_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("workflowd_active_runs "):
                return float(line.split()[1])
    return float("nan")


async def lag_window(daemon: Child) -> dict[str, Any]:
    """Close the daemon's current lag window (SIGUSR1) and return its figures."""
    daemon.proc.send_signal(signal.SIGUSR1)
    async with asyncio.timeout(10):
        line = await daemon.readline()
    return dict(json.loads(line.removeprefix("lag ")))


async def event_latencies_ms(api_url: str, received: Sequence[tuple[str, str, int]]) -> list[float]:
    async with aiohttp.ClientSession(api_url) as session, session.get("/bench/timings") as resp:
        timings: dict[str, dict[str, Any]] = await resp.json()
    ended = {(t["run_id"], t["task"]): t["ended_ns"] for t in timings.values() if t["ended_ns"]}
    return [(ns - ended[run_id, task]) / 1e6 for run_id, task, ns in received]


async def run_phase(phase: Phase, work: Path) -> dict[str, Any]:
    data_dir = work / f"wf-{phase.runs}"
    data_dir.mkdir(parents=True)
    api, api_url = await spawn_instant_api(phase.delay_s, work / f"api-{phase.runs}.log")
    try:
        argv = [sys.executable, __file__, "host", "--jobs-url", api_url]
        argv += ["--data-dir", str(data_dir), "--slow-callback-ms", str(phase.slow_callback_ms)]
        daemon = await Child.spawn(argv, r"gRPC on [\d.]+:(\d+) http (\d+)", data_dir / "log")
        try:
            return await _measure(phase, daemon, api_url)
        finally:
            await daemon.stop()
    finally:
        await api.stop()


@dataclass
class Observed:
    run_ids: list[str]
    ended: dict[str, int]
    trigger_s: float
    all_ended_s: float
    active_after_trigger: float
    baseline_mb: float
    peak_mb: float
    cpu_s: float
    loop_cpu_s: float
    lag: dict[str, Any]


async def _drive(
    phase: Phase, daemon: Child, clients: Clients, watchers: list[asyncio.Task[None]]
) -> Observed:
    """Create the workflow, trigger every run, wait for every end; the daemon's figures."""
    statuses = [pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_CANCELLED]
    ends_call = clients.stub(0).WatchRuns(pb.WatchRunsRequest(statuses=statuses))
    try:
        spec = chain_spec(f"fanout-{phase.runs}", "c", phase.tasks)
        reply = await clients.stub(0).CreateWorkflow(pb.CreateWorkflowRequest(specification=spec))
        await ends_call.initial_metadata()  # subscribed: no run end can be missed from here on
        ends = asyncio.create_task(count_ends(ends_call, phase.runs), name="bench.run-ends")
        baseline_mb, cpu_before = daemon.status_mb("VmRSS"), daemon.cpu_s()
        opened = await lag_window(daemon)  # start the daemon's lag window now
        started = time.perf_counter()
        budget_s = PHASE_TIMEOUT_S + phase.runs / 50 + 2 * phase.tasks * phase.delay_s
        async with asyncio.timeout(budget_s):
            run_ids = await trigger_all(clients, reply.workflow.id, phase, watchers)
            trigger_s = time.perf_counter() - started
            active = await active_runs(f"http://127.0.0.1:{daemon.ready.group(2)}/metrics")
            ended = await ends
            all_ended_s = time.perf_counter() - started
            await asyncio.gather(*watchers)
        lag = await lag_window(daemon)
        return Observed(
            run_ids,
            ended,
            trigger_s,
            all_ended_s,
            active,
            baseline_mb,
            daemon.status_mb("VmHWM"),
            daemon.cpu_s() - cpu_before,
            lag.pop("loop_thread_cpu_s") - opened["loop_thread_cpu_s"],
            lag,
        )
    finally:
        ends_call.cancel()


async def _measure(phase: Phase, daemon: Child, api_url: str) -> dict[str, Any]:
    clients = Clients(int(daemon.ready.group(1)))
    client_probe = LagProbe()  # the bench's own loop: is the bench the slow part?
    probe_task = asyncio.create_task(client_probe.run(), name="bench.client-lag-probe")
    watchers: list[asyncio.Task[None]] = []
    try:
        seen = await _drive(phase, daemon, clients, watchers)
    finally:
        for task in [*watchers, probe_task]:
            task.cancel()
        await asyncio.wait([*watchers, probe_task])
        await clients.aclose()
    latencies = await event_latencies_ms(api_url, phase.latencies)
    for fault in phase.seq_faults[:5]:
        print(f"watcher saw events out of sequence: {fault}", flush=True)
    runs = len(seen.run_ids)
    return {
        "runs": runs,
        "ended": sum(seen.ended.values()),
        "ended_by_status": seen.ended,
        "tasks_per_run": phase.tasks,
        "job_delay_s": phase.delay_s,
        "watchers": len(watchers),
        "trigger_s": round(seen.trigger_s, 2),
        "triggers_per_s": round(runs / seen.trigger_s),
        "active_runs_after_trigger": seen.active_after_trigger,
        "all_ended_s": round(seen.all_ended_s, 2),
        "daemon_cpu_s": round(seen.cpu_s, 1),
        "daemon_cpu_ms_per_task": round(seen.cpu_s * 1000 / (runs * phase.tasks), 2),
        # Of which the event loop's thread, and the others (the store's writer, readers, log).
        "loop_thread_cpu_ms_per_task": round(seen.loop_cpu_s * 1000 / (runs * phase.tasks), 2),
        "other_threads_cpu_ms_per_task": round(
            (seen.cpu_s - seen.loop_cpu_s) * 1000 / (runs * phase.tasks), 2
        ),
        "baseline_rss_mb": round(seen.baseline_mb, 1),
        "peak_rss_mb": round(seen.peak_mb, 1),
        **seen.lag,
        "event_latency_ms_p50": round(percentile(latencies, 50), 2),
        "event_latency_ms_p99": round(percentile(latencies, 99), 2),
        "event_latency_ms_max": round(max(latencies, default=float("nan")), 2),
        "latency_samples": len(latencies),
        "watch_seq_faults": len(phase.seq_faults),
        "client_loop_lag_ms_p99": client_probe.take()["loop_lag_ms_p99"],
    }


def verdict(figures: dict[str, Any]) -> dict[str, bool]:
    rss_limit = max(RSS_FLOOR_MB, RSS_MB_PER_RUN * figures["runs"])
    met = {"peak_rss_mb": figures["peak_rss_mb"] <= rss_limit}
    return met | {name: figures[name] <= limit for name, limit in TARGETS.items()}


async def bench(phases: Sequence[Phase], work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in phases:
        figures = await run_phase(phase, work)
        figures["targets_met"] = verdict(figures)
        out[f"runs_{phase.runs}"] = figures
        print(f"{phase.runs:6} runs: {json.dumps(figures)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    host_cmd = sub.add_parser("host", help="(internal) the daemon with a loop-lag probe")
    host_cmd.add_argument("--jobs-url", required=True)
    host_cmd.add_argument("--data-dir", type=Path, required=True)
    host_cmd.add_argument("--slow-callback-ms", type=float, default=0.0)
    parser.add_argument("--quick", action="store_true", help="small smoke run (200 runs)")
    parser.add_argument("--runs", type=int, nargs="+", help="N values (default 1000 10000)")
    parser.add_argument("--tasks", type=int, default=2, help="tasks per run (default 2)")
    parser.add_argument("--watchers", type=int, default=1000, help="WatchRun streams (1000)")
    parser.add_argument("--delay-s", type=float, help="job duration (default: by N)")
    parser.add_argument(
        "--slow-callback-ms",
        type=float,
        default=0.0,
        help="diagnostics: run the daemon in asyncio debug mode, logging slower callbacks",
    )
    parser.add_argument("--work-dir", type=Path, help="keep logs and databases here")
    args = parser.parse_args()
    if args.command == "host":
        asyncio.run(host(args.jobs_url, args.data_dir, args.slow_callback_ms))
        return
    counts = args.runs or ([200] if args.quick else [1000, 10_000])
    watchers = min(args.watchers, 100) if args.quick else args.watchers
    phases = [
        Phase(
            n,
            args.tasks,
            args.delay_s or default_delay_s(n),
            min(watchers, n),
            args.slow_callback_ms,
        )
        for n in counts
    ]
    started = time.perf_counter()
    load_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="workflowd-bench-") as tmp:
        out = asyncio.run(bench(phases, args.work_dir or Path(tmp)))
    out["load_avg_1m_at_start"] = round(load_1m, 2)
    out["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out), flush=True)


def default_delay_s(runs: int) -> float:
    """Long enough that every run is still on its first job when the last one is triggered."""
    return max(2.0, runs / 200)


if __name__ == "__main__":
    main()
