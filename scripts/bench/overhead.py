"""workflowd's own cost per task, and its wall time against a script driving the jobs API directly.

Chains of N trivial `CreateMaterializedViewIfNotExists` tasks run (a) through workflowd
(`workflowd serve` as a subprocess; trigger → terminal event of `WatchRun`) and (b) through a
"direct script" that submits the same jobs one after another to the same jobs API and awaits
each on the API's shared event stream. Both against the embedded data plane (DuckDB) and against
the instant jobs API (its own process; completes jobs at once), so workflowd's cost is isolated.

- per-task overhead: next job's creation − previous job's end, both stamped by the jobs API
  (instant API: `time.time_ns()`; data plane: ISO timestamps with microseconds);
- ratio: median workflowd wall time / median direct wall time.

Control flow on the same terms (each case once per jobs API): `loop`, one `for` of 20 iterations
of one such task (its gaps are per iteration, with the item's expression evaluated each time),
against the script's 20 jobs in a row; `fork`, two branches of one task each, against the script
submitting both jobs at once and awaiting both (`branch_skew_ms`: between the two jobs' creation).

Usage: `.venv/bin/python scripts/bench/overhead.py [--quick] [--repetitions R]`. The last line
of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from instant_jobs_api import Child, percentile, spawn_instant_api

from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

TERMINAL_EVENTS = frozenset(
    {pb.RUN_EVENT_TYPE_RUN_COMPLETED, pb.RUN_EVENT_TYPE_RUN_FAILED, pb.RUN_EVENT_TYPE_RUN_CANCELLED}
)
RUN_TIMEOUT_S = 120.0
TARGET_P50_MS = 1.0
TARGET_RATIO = 1.05
LOOP_ITERATIONS = 20
FORK_SIDES = ("left", "right")


def chain_spec(name: str, prefix: str, tasks: int) -> str:
    """A workflow of `tasks` trivial views named `<prefix>t<i>` (fresh datasets per prefix)."""
    lines = [f"document: {{dsl: '1.0.0', namespace: bench, name: {name}, version: '1.0.0'}}", "do:"]
    for i in range(tasks):
        lines += [
            f"  - t{i}:",
            "      call: CreateMaterializedViewIfNotExists",
            f"      with: {{nql: SELECT 1 AS one, datasetName: {prefix}t{i}}}",
        ]
    return "\n".join(lines) + "\n"


def loop_spec(name: str, prefix: str, iterations: int) -> str:
    """One `for` over `iterations` items, each a trivial view named by its item."""
    return (
        "\n".join(
            [
                f"document: {{dsl: '1.0.0', namespace: bench, name: {name}, version: '1.0.0'}}",
                "do:",
                "  - each:",
                f"      for: {{each: i, in: '${{ [range({iterations})] }}'}}",
                "      do:",
                "        - t:",
                "            call: CreateMaterializedViewIfNotExists",
                "            with:",
                "              nql: SELECT 1 AS one",
                f"              datasetName: '${{ \"{prefix}t\" + ($i | tostring) }}'",
            ]
        )
        + "\n"
    )


def fork_spec(name: str, prefix: str) -> str:
    """A fork of two branches, one trivial view each."""
    branches = []
    for side in ("left", "right"):
        branches += [
            f"          - {side}:",
            "              call: CreateMaterializedViewIfNotExists",
            f"              with: {{nql: SELECT 1 AS one, datasetName: {prefix}{side}}}",
        ]
    head = f"document: {{dsl: '1.0.0', namespace: bench, name: {name}, version: '1.0.0'}}"
    return (
        "\n".join([head, "do:", "  - both:", "      fork:", "        branches:", *branches]) + "\n"
    )


# The benches measure capacity: the per-company quotas, which would refuse their load, are off.
NO_QUOTAS = {
    "quota_active_runs": 0,
    "quota_active_schedules": 0,
    "quota_min_every_s": 0,
    "quota_trigger_rate_per_s": 0,
}
NO_QUOTA_FLAGS = [
    part
    for name, value in NO_QUOTAS.items()
    for part in ("--" + name.replace("_", "-"), str(value))
]


def workflowd_argv(data_dir: Path, jobs_url: str | None) -> list[str]:
    exe = str(Path(sys.executable).parent / "workflowd")
    argv = [exe, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    argv += ["--dataplane-listen", "127.0.0.1:0", "--data-dir", str(data_dir), *NO_QUOTA_FLAGS]
    return argv + (["--jobs-url", jobs_url] if jobs_url else [])


# `workflowd serve` prints this once it serves; it names the data plane's URL when embedded.
SERVE_READY = r"serving gRPC on [\d.]+:(\d+) \(jobs API (\S+),"


@dataclass(frozen=True)
class Followed:
    """One run through workflowd, with the bench's own `time.time_ns()` at both ends."""

    run_id: str
    wall_s: float
    events: list[pb.RunEvent]
    trigger_ns: int
    terminal_ns: int


@dataclass
class Workflowd:
    """A `workflowd serve` subprocess and a gRPC client of it."""

    child: Child
    channel: grpc.aio.Channel
    stub: pb_grpc.WorkflowServiceAsyncStub
    jobs_url: str

    @classmethod
    async def spawn(
        cls, data_dir: Path, jobs_url: str | None, env: dict[str, str] | None = None
    ) -> Workflowd:
        argv = workflowd_argv(data_dir, jobs_url)
        child = await Child.spawn(argv, SERVE_READY, data_dir / "stderr.log", env=env)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{child.ready.group(1)}")
        return cls(child, channel, pb_grpc.WorkflowServiceStub(channel), child.ready.group(2))

    async def aclose(self) -> None:
        await self.channel.close()
        await self.child.stop()

    async def create(self, spec: str) -> str:
        reply = await self.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=spec))
        return str(reply.workflow.id)

    async def run_to_end(self, workflow_id: str) -> Followed:
        """Trigger a run and follow it to its terminal event."""
        events: list[pb.RunEvent] = []
        async with asyncio.timeout(RUN_TIMEOUT_S):
            trigger_ns = time.time_ns()
            started = time.perf_counter()
            reply = await self.stub.TriggerWorkflow(
                pb.TriggerWorkflowRequest(workflow_id=workflow_id)
            )
            run_id = reply.run.id
            async for response in self.stub.WatchRun(pb.WatchRunRequest(run_id=run_id)):
                events.append(response.event)
                if response.event.type in TERMINAL_EVENTS:
                    if response.event.type != pb.RUN_EVENT_TYPE_RUN_COMPLETED:
                        raise RuntimeError(f"run {run_id} did not complete: {response.event}")
                    wall_s = time.perf_counter() - started
                    return Followed(run_id, wall_s, events, trigger_ns, time.time_ns())
        raise RuntimeError(f"run {run_id}: stream ended without a terminal event")


class DirectScript:
    """What a person would write without workflowd: submit a job, await it, submit the next.

    Jobs are awaited on one held `GET /jobs/events` stream, as workflowd does, so both sides
    pay the same for learning that a job ended.
    """

    TAG = "bench_direct"

    def __init__(self, jobs_url: str) -> None:
        self._session = aiohttp.ClientSession(jobs_url)
        self._ended: dict[str, asyncio.Future[None]] = {}
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_stream(), name="bench.direct.stream")
        await asyncio.wait(
            [asyncio.ensure_future(self._connected.wait()), self._reader],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._reader.done():
            self._reader.result()  # raises what stopped it

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
        await self._session.close()

    async def run_chain(self, prefix: str, tasks: int) -> tuple[str, float]:
        """Submit and await `tasks` jobs in order: (run label, wall seconds)."""
        label = f"direct-{prefix}"
        async with asyncio.timeout(RUN_TIMEOUT_S):
            started = time.perf_counter()
            for i in range(tasks):
                await self._job(label, f"{prefix}t{i}", f"t{i}")
            return label, time.perf_counter() - started

    async def run_parallel(self, prefix: str, sides: Sequence[str]) -> tuple[str, float]:
        """Submit one job per side at once and await them all: (run label, wall seconds)."""
        label = f"direct-{prefix}"
        async with asyncio.timeout(RUN_TIMEOUT_S):
            started = time.perf_counter()
            await asyncio.gather(*(self._job(label, f"{prefix}{side}", side) for side in sides))
            return label, time.perf_counter() - started

    async def _job(self, label: str, dataset: str, task: str) -> None:
        body = {
            "type": "materialize-view",
            "input": {"nql": "SELECT 1 AS one", "dataset_name": dataset},
            "idempotency_key": str(uuid.uuid4()),
            "tags": [self.TAG],
            "metadata": {"workflow_run_id": label, "task_name": task},
        }
        async with self._session.post("/jobs", json=body) as resp:
            job = await resp.json()
            if resp.status not in (200, 201):
                raise RuntimeError(f"direct submit failed: {resp.status} {job}")
        if job["state"] not in ("completed", "failed", "cancelled"):
            await self._future(job["job_id"])

    def _future(self, job_id: str) -> asyncio.Future[None]:
        # Created by whichever comes first: the submit's reply or the job's end on the stream.
        future = self._ended.get(job_id)
        if future is None:
            future = self._ended[job_id] = asyncio.get_running_loop().create_future()
        return future

    async def _read_stream(self) -> None:
        async with self._session.get(
            "/jobs/events", params={"tag": self.TAG}, timeout=aiohttp.ClientTimeout(total=None)
        ) as resp:
            resp.raise_for_status()
            self._connected.set()
            async for raw in resp.content:
                line = raw.decode()
                if not line.startswith("data: "):
                    continue
                job = json.loads(line[6:])
                if job.get("state") in ("completed", "failed", "cancelled"):
                    future = self._future(job["job_id"])
                    if not future.done():
                        future.set_result(None)


# --- timings from the jobs API -------------------------------------------------------------------


def _iso_ns(value: str) -> int:
    moment = datetime.fromisoformat(value)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


async def job_times(
    session: aiohttp.ClientSession, run_ids: Sequence[str], instant: bool
) -> dict[str, list[tuple[int, int]]]:
    """Per run: (created_ns, ended_ns) of each task's job, in the order they were created (a
    chain's and a loop's order of tasks)."""
    by_run: dict[str, list[tuple[int, int]]] = {run_id: [] for run_id in run_ids}
    if instant:
        async with session.get("/bench/timings") as resp:
            timings: dict[str, dict[str, Any]] = await resp.json()
        for t in timings.values():
            if t["run_id"] in by_run:
                by_run[t["run_id"]].append((t["created_ns"], t["ended_ns"]))
    else:
        for run_id in run_ids:
            params = {"workflow_run_id": run_id, "per_page": "500"}
            async with session.get("/jobs", params=params) as resp:
                page = await resp.json()
            for job in page["records"]:
                by_run[run_id].append((_iso_ns(job["created_at"]), _iso_ns(job["ended_at"])))
    return {run_id: sorted(jobs) for run_id, jobs in by_run.items()}


# Where a gap goes, from the daemon's event times (its clock is the same machine clock):
# job end → TASK_COMPLETED stamped (learning of the end), → next TASK_STARTED stamped (recording
# the completion, resolving the next task), → next job created (committing the intent, POST).
SEGMENTS = ("learn_end", "record_and_resolve", "intent_and_submit")


def segments_ms(
    times: dict[str, list[tuple[int, int]]], events: dict[str, list[pb.RunEvent]]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for run_id, jobs in times.items():
        stamps: dict[tuple[int, int], int] = {
            (e.type, e.task_index): e.time.ToNanoseconds() for e in events[run_id]
        }
        for i in range(len(jobs) - 1):
            completed = stamps[pb.RUN_EVENT_TYPE_TASK_COMPLETED, i]
            started = stamps[pb.RUN_EVENT_TYPE_TASK_STARTED, i + 1]
            out["learn_end"].append((completed - jobs[i][1]) / 1e6)
            out["record_and_resolve"].append((started - completed) / 1e6)
            out["intent_and_submit"].append((jobs[i + 1][0] - started) / 1e6)
    return out


def durations_ms(times: dict[str, list[tuple[int, int]]]) -> list[float]:
    return [(ended - created) / 1e6 for jobs in times.values() for created, ended in jobs]


def gaps_ms(times: dict[str, list[tuple[int, int]]]) -> list[float]:
    """Previous job's end → next job's creation, for consecutive tasks of each run."""
    gaps: list[float] = []
    for jobs in times.values():
        gaps += [(nxt[0] - prev[1]) / 1e6 for prev, nxt in itertools.pairwise(jobs)]
    return gaps


# --- the measurement -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    plane: str  # "instant" or "embedded"
    tasks: int
    repetitions: int


@dataclass
class Repetitions:
    walls: dict[str, list[float]] = field(default_factory=lambda: {"workflowd": [], "direct": []})
    direct_runs: list[str] = field(default_factory=list)
    followed: dict[str, Followed] = field(default_factory=dict)  # by run id


Spec = Callable[[str], str]  # a prefix → a specification named after it, on fresh datasets
DirectRun = Callable[[str], Awaitable[tuple[str, float]]]  # a prefix → (label, wall seconds)


async def repeat(
    repetitions: int, daemon: Workflowd, spec: Spec, direct_run: DirectRun, tag: str
) -> Repetitions:
    """Warm-up once, then alternate workflowd and direct runs; fresh datasets every time."""
    out = Repetitions()
    for rep in range(repetitions + 1):
        prefix = f"{tag}r{rep}"
        workflow_id = await daemon.create(spec(prefix))
        followed = await daemon.run_to_end(workflow_id)
        label, direct_wall = await direct_run(f"d{prefix}")
        if rep == 0:
            continue  # warm-up: first-use costs (imports, caches, connections) on both sides
        out.walls["workflowd"].append(followed.wall_s)
        out.walls["direct"].append(direct_wall)
        out.followed[followed.run_id] = followed
        out.direct_runs.append(label)
    return out


def walls(reps: Repetitions) -> dict[str, float]:
    wf_wall = statistics.median(reps.walls["workflowd"])
    direct_wall = statistics.median(reps.walls["direct"])
    return {
        "workflowd_wall_s": round(wf_wall, 4),
        "direct_wall_s": round(direct_wall, 4),
        "ratio": round(wf_wall / direct_wall, 3),
    }


async def measure(case: Case, daemon: Workflowd, direct: DirectScript) -> dict[str, Any]:
    n = case.tasks
    reps = await repeat(
        case.repetitions,
        daemon,
        lambda prefix: chain_spec(f"chain-{prefix}", f"w{prefix}", n),
        lambda prefix: direct.run_chain(prefix, n),
        f"n{n}",
    )
    followed_runs = reps.followed
    async with aiohttp.ClientSession(daemon.jobs_url) as session:
        wf_times = await job_times(session, list(followed_runs), case.plane == "instant")
        direct_times = await job_times(session, reps.direct_runs, case.plane == "instant")
    direct_gaps = gaps_ms(direct_times)
    wf_gaps = gaps_ms(wf_times)
    segments = segments_ms(wf_times, {r: f.events for r, f in followed_runs.items()})
    # The fixed cost of a run: trigger sent → first job created, last job ended → the
    # terminal event received by the watcher (bench and jobs API share the machine clock).
    run_start = [(wf_times[r][0][0] - f.trigger_ns) / 1e6 for r, f in followed_runs.items()]
    run_end = [(f.terminal_ns - wf_times[r][-1][1]) / 1e6 for r, f in followed_runs.items()]
    return {
        **walls(reps),
        "overhead_ms_p50": round(percentile(wf_gaps, 50), 3),
        "overhead_ms_p99": round(percentile(wf_gaps, 99), 3),
        "direct_gap_ms_p50": round(percentile(direct_gaps, 50), 3),
        "direct_gap_ms_p99": round(percentile(direct_gaps, 99), 3),
        "gap_samples": len(wf_gaps),
        # Job creation → end as the jobs API saw it: the embedded plane shares workflowd's
        # process, so its jobs may take longer when workflowd is busy than for the script.
        "job_ms_p50": round(percentile(durations_ms(wf_times), 50), 3),
        "direct_job_ms_p50": round(percentile(durations_ms(direct_times), 50), 3),
        "run_start_ms_p50": round(statistics.median(run_start), 3),
        "run_end_ms_p50": round(statistics.median(run_end), 3),
        "gap_breakdown_ms_p50": {k: round(percentile(v, 50), 3) for k, v in segments.items()},
    }


async def measure_flow(
    plane: str, repetitions: int, daemon: Workflowd, direct: DirectScript
) -> dict[str, Any]:
    """The `for` and `fork` cases (the module's docstring says what each measures)."""
    loop = await repeat(
        repetitions,
        daemon,
        lambda prefix: loop_spec(f"loop-{prefix}", f"w{prefix}", LOOP_ITERATIONS),
        lambda prefix: direct.run_chain(prefix, LOOP_ITERATIONS),
        "loop",
    )
    fork = await repeat(
        repetitions,
        daemon,
        lambda prefix: fork_spec(f"fork-{prefix}", f"w{prefix}"),
        lambda prefix: direct.run_parallel(prefix, FORK_SIDES),
        "fork",
    )
    instant = plane == "instant"
    async with aiohttp.ClientSession(daemon.jobs_url) as session:
        loop_gaps = gaps_ms(await job_times(session, list(loop.followed), instant))
        loop_direct = gaps_ms(await job_times(session, loop.direct_runs, instant))
        fork_skews = skews_ms(await job_times(session, list(fork.followed), instant))
        fork_direct = skews_ms(await job_times(session, fork.direct_runs, instant))
    return {
        f"loop_{LOOP_ITERATIONS}": {
            **walls(loop),
            "overhead_ms_p50": round(percentile(loop_gaps, 50), 3),
            "overhead_ms_p99": round(percentile(loop_gaps, 99), 3),
            "direct_gap_ms_p50": round(percentile(loop_direct, 50), 3),
            "gap_samples": len(loop_gaps),
        },
        "fork_2": {
            **walls(fork),
            "branch_skew_ms_p50": round(percentile(fork_skews, 50), 3),
            "direct_skew_ms_p50": round(percentile(fork_direct, 50), 3),
        },
    }


def skews_ms(times: dict[str, list[tuple[int, int]]]) -> list[float]:
    """Per run, first job's creation → last job's creation (jobs meant to start together)."""
    return [(jobs[-1][0] - jobs[0][0]) / 1e6 for jobs in times.values() if jobs]


async def bench(tasks: Sequence[int], repetitions: int, work: Path) -> dict[str, Any]:
    api, api_url = await spawn_instant_api(0.0, work / "instant-api.log")
    daemons: dict[str, Workflowd] = {}
    try:
        for name in ("wf-instant", "wf-embedded"):
            (work / name).mkdir()
        daemons["instant"] = await Workflowd.spawn(work / "wf-instant", api_url)
        daemons["embedded"] = await Workflowd.spawn(work / "wf-embedded", None)
        results: dict[str, Any] = {}
        for plane, daemon in daemons.items():
            direct = DirectScript(daemon.jobs_url)
            await direct.start()
            try:
                for n in tasks:
                    case = Case(plane, n, repetitions)
                    results[f"{plane}_{n}"] = figures = await measure(case, daemon, direct)
                    print(f"{plane:8} {n:4} tasks: {json.dumps(figures)}", flush=True)
                results[f"{plane}_flow"] = flow = await measure_flow(
                    plane, repetitions, daemon, direct
                )
                print(f"{plane:8} control flow: {json.dumps(flow)}", flush=True)
            finally:
                await direct.aclose()
        return results
    finally:
        for daemon in daemons.values():
            await daemon.aclose()
        await api.stop()


def summary(results: dict[str, Any], small: int, large: int) -> dict[str, Any]:
    head = results[f"instant_{large}"]
    return {
        "per_task_overhead_ms_p50": head["overhead_ms_p50"],
        "per_task_overhead_ms_p99": head["overhead_ms_p99"],
        "ratio_vs_direct": results[f"embedded_{small}"]["ratio"],
        "loop_overhead_ms_p50": results["instant_flow"][f"loop_{LOOP_ITERATIONS}"][
            "overhead_ms_p50"
        ],
        "fork_ratio_vs_direct": results["embedded_flow"]["fork_2"]["ratio"],
        "targets_met": {
            "per_task_overhead_ms_p50": head["overhead_ms_p50"] <= TARGET_P50_MS,
            "ratio_vs_direct": results[f"embedded_{small}"]["ratio"] <= TARGET_RATIO,
        },
        "cases": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (5/20 tasks)")
    parser.add_argument("--repetitions", type=int, help="measured runs per case (default 5)")
    args = parser.parse_args()
    small, large = (5, 20) if args.quick else (20, 100)
    repetitions = args.repetitions or (1 if args.quick else 5)
    started = time.perf_counter()
    load_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="workflowd-bench-") as tmp:
        results = asyncio.run(bench((small, large), repetitions, Path(tmp)))
    out = summary(results, small, large)
    out["bench_seconds"] = round(time.perf_counter() - started, 1)
    out["load_avg_1m_at_start"] = round(load_1m, 2)
    print(
        f"per-task overhead (instant API, {large} tasks): p50 {out['per_task_overhead_ms_p50']} ms"
        f", p99 {out['per_task_overhead_ms_p99']} ms (target p50 <= {TARGET_P50_MS} ms)\n"
        f"wall-time ratio vs direct (embedded plane, {small} tasks): {out['ratio_vs_direct']}"
        f" (target <= {TARGET_RATIO})"
    )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
