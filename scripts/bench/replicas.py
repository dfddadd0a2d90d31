"""Replicas of workflowd on one PostgreSQL store: throughput of trivial-job runs with 1, 2 and 3
replicas, and how long a killed replica's runs take to be adopted.

Every replica is `workflowd serve` in its own process on a new schema of the PostgreSQL server
named by `--postgres` (default: the test server, `WORKFLOWD_TEST_POSTGRES`), against the instant
jobs API (its own process). Then:

- runs_per_s: N one-task runs triggered round-robin across the replicas (64 calls in flight),
  from the first trigger until a watcher on one replica has seen every run end;
- cpu_<N>: where the CPU went meanwhile, in CPU milliseconds per run (the replicas, PostgreSQL's
  processes, the jobs API) and how busy the machine's cores were: what bounds the scaling;
- adoption_s: two replicas; the first holds runs whose jobs the jobs API keeps running; it is
  killed with SIGKILL, and the figure is the time until the survivor waits on every one of
  those jobs again (`workflowd_jobs_awaited` in its /metrics), for a lease of `--lease-s`.

Usage: `.venv/bin/python scripts/bench/replicas.py [--quick] [--runs 2000]`. The last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import grpc
import psycopg
from instant_jobs_api import Child, spawn_instant_api
from overhead import NO_QUOTA_FLAGS, chain_spec
from recovery import metric, trigger, until

from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

READY = r"serving gRPC on [\d.]+:(\d+) \(jobs API \S+, metrics (http://\S+/metrics),"
TARGET_SCALING = 1.7
TERMINAL = {
    pb.RUN_EVENT_TYPE_RUN_COMPLETED,
    pb.RUN_EVENT_TYPE_RUN_FAILED,
    pb.RUN_EVENT_TYPE_RUN_CANCELLED,
}


@asynccontextmanager
async def schema(server: str) -> AsyncIterator[str]:
    """A store URL naming a new schema of `server`, dropped afterwards."""
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        parts = urlsplit(server)
        query = [*parse_qsl(parts.query), ("options", f"-csearch_path={name}")]
        yield urlunsplit(parts._replace(query=urlencode(query)))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


def replica_argv(work: Path, index: int, store: str, jobs_url: str, lease_s: float) -> list[str]:
    data_dir = work / f"replica-{index}"
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(Path(sys.executable).parent / "workflowd"), "serve",
        "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--data-dir", str(data_dir), "--jobs-url", jobs_url,
        "--store", store, "--replica-lease-s", str(lease_s), *NO_QUOTA_FLAGS,
    ]  # fmt: skip


@asynccontextmanager
async def replicas(
    work: Path, count: int, store: str, jobs_url: str, lease_s: float
) -> AsyncIterator[list[Child]]:
    async with AsyncExitStack() as stack:
        started = []
        for i in range(count):
            argv = replica_argv(work, i, store, jobs_url, lease_s)
            child = await Child.spawn(argv, READY, work / f"replica-{i}.log")
            stack.push_async_callback(child.stop)
            started.append(child)
        yield started


def stub_of(child: Child, stack: AsyncExitStack) -> pb_grpc.WorkflowServiceAsyncStub:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{child.ready.group(1)}")
    stack.push_async_callback(channel.close)
    return pb_grpc.WorkflowServiceStub(channel)


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL server process of this machine."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended meanwhile
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            fields = text.rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


class CpuWindow:
    """CPU used by each part between `start` and `stop`."""

    def __init__(self, replicas: Sequence[Child], api: Child) -> None:
        self._replicas = replicas
        self._api = api
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float, tuple[int, int]]:
        return (
            sum(child.cpu_s() for child in self._replicas),
            postgres_cpu_s(),
            self._api.cpu_s(),
            time.process_time(),  # this bench: the triggers and the watch
            machine_ticks(),
        )

    def per_run(self, runs: int) -> dict[str, float]:
        end = self._read()
        replicas, postgres, api, client = (
            1000 * (b - a) / runs for a, b in zip(self._start[:4], end[:4], strict=True)
        )
        busy = (end[4][0] - self._start[4][0]) / max(1, end[4][1] - self._start[4][1])
        return {
            "replicas_ms_per_run": round(replicas, 2),
            "postgres_ms_per_run": round(postgres, 2),
            "jobs_api_ms_per_run": round(api, 2),
            "bench_client_ms_per_run": round(client, 2),
            "cores_busy_pct": round(100 * busy, 1),
        }


async def throughput(
    work: Path, server: str, count: int, runs: int, lease_s: float
) -> tuple[float, dict[str, float]]:
    api, api_url = await spawn_instant_api(0.0, work / f"api-{count}.log")
    try:
        async with (
            schema(server) as store,
            replicas(work / f"x{count}", count, store, api_url, lease_s) as children,
            AsyncExitStack() as stack,
        ):
            stubs = [stub_of(child, stack) for child in children]
            reply = await stubs[0].CreateWorkflow(
                pb.CreateWorkflowRequest(specification=chain_spec("spread", "s", 1))
            )
            workflow_id = reply.workflow.id
            # A first run, watched to its end, warms every replica up and gives the watcher a
            # place in the log to start from: no event after it can be missed.
            for stub in stubs:
                probe = await stub.TriggerWorkflow(
                    pb.TriggerWorkflowRequest(workflow_id=workflow_id)
                )
                events = [
                    r.event async for r in stub.WatchRun(pb.WatchRunRequest(run_id=probe.run.id))
                ]
            watch = stubs[0].WatchRuns(
                pb.WatchRunsRequest(workflow_id=workflow_id, after_global_seq=events[-1].global_seq)
            )
            ended = 0

            async def count_ends() -> None:
                nonlocal ended
                async for response in watch:
                    ended += response.event.type in TERMINAL
                    if ended == runs:
                        return

            counting = asyncio.create_task(count_ends())
            cpu = CpuWindow(children, api)
            started = time.perf_counter()
            share = [runs // count + (1 if i < runs % count else 0) for i in range(count)]
            await asyncio.gather(
                *(trigger(stub, workflow_id, n) for stub, n in zip(stubs, share, strict=True))
            )
            await asyncio.wait_for(counting, timeout=600)
            rate = runs / (time.perf_counter() - started)
            return rate, cpu.per_run(runs)
    finally:
        await api.stop()


async def adoption(work: Path, server: str, runs: int, lease_s: float) -> dict[str, Any]:
    api, api_url = await spawn_instant_api(-1.0, work / "api-adoption.log")
    try:
        async with (
            schema(server) as store,
            replicas(work / "adopt", 2, store, api_url, lease_s) as (first, survivor),
            AsyncExitStack() as stack,
            aiohttp.ClientSession() as session,
        ):
            stub = stub_of(first, stack)
            reply = await stub.CreateWorkflow(
                pb.CreateWorkflowRequest(specification=chain_spec("adopted", "a", 1))
            )
            await trigger(stub, reply.workflow.id, runs)
            first_metrics = first.ready.group(2)

            async def all_awaited(url: str) -> bool:
                return await metric(session, url, "workflowd_jobs_awaited") >= runs

            await until(lambda: all_awaited(first_metrics), 120, "the first replica mid-job")
            first.proc.kill()
            await first.proc.wait()
            killed = time.perf_counter()
            await until(lambda: all_awaited(survivor.ready.group(2)), 120, "runs adopted")
            adoption_s = time.perf_counter() - killed
            async with session.post(f"{api_url}/bench/release") as resp:
                resp.raise_for_status()
            async with session.get(f"{api_url}/bench/timings") as resp:
                jobs = (await resp.json()).values()
            per_task: dict[tuple[str, str], int] = {}
            for job in jobs:
                key = (job["run_id"], job["task"])
                per_task[key] = per_task.get(key, 0) + 1
            return {
                "adoption_s": round(adoption_s, 2),
                "adopted_runs": runs,
                "duplicate_jobs": sum(n - 1 for n in per_task.values()),
            }
    finally:
        await api.stop()


async def bench(
    work: Path, server: str, counts: Sequence[int], runs: int, adopt_runs: int, lease_s: float
) -> dict[str, Any]:
    rates: dict[str, float] = {}
    figures: dict[str, Any] = {"runs": runs, "runs_per_s": rates}
    for n in counts:
        rate, cpu = await throughput(work, server, n, runs, lease_s)
        rates[str(n)] = round(rate, 1)
        figures[f"cpu_{n}"] = cpu
        print(f"{n} replica(s): {rate:.1f} runs/s; CPU {cpu}", flush=True)
    if "1" in rates and "2" in rates:
        figures["scaling_1_to_2"] = round(rates["2"] / rates["1"], 2)
        figures["target_met"] = figures["scaling_1_to_2"] >= TARGET_SCALING
    figures.update(await adoption(work, server, adopt_runs, lease_s))
    figures["lease_s"] = lease_s
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small smoke run (1 and 2 replicas, 2 s lease)"
    )
    parser.add_argument("--runs", type=int, help="runs per replica count (default 2000)")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts to measure")
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "WORKFLOWD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--work-dir", type=Path, help="keep logs here")
    args = parser.parse_args()
    runs = args.runs or (100 if args.quick else 2000)
    counts = [int(n) for n in ("1,2" if args.quick else args.replicas).split(",")]
    lease_s = 2.0 if args.quick else args.lease_s
    load_1m = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="workflowd-replicas-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = asyncio.run(
            bench(work, args.postgres, counts, runs, 20 if args.quick else 500, lease_s)
        )
    figures["cpus"] = os.cpu_count()
    figures["load_avg_1m_at_start"] = round(load_1m, 2)
    figures["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
