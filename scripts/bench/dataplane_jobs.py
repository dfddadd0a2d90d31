"""Throughput and latency of the local data plane for trivial jobs, over HTTP on loopback.

For 1 and 2 worker threads, the data plane runs as its own process (`python -m dataplane
serve`, fresh data directory) and this script submits N trivial `execute-dml` jobs (a one-row
INSERT each) with at most C in flight, awaiting each on the shared event stream
`GET /jobs/events`. Latency is POST sent → `completed` event received; throughput is jobs
divided by first submit → last completion; a job's end reaching the client is the job's
`ended_at` (the data plane's clock, when it committed the end) → its terminal event parsed by
this script (the same machine's clock). Every job's row is counted at the end.

Usage: `.venv/bin/python scripts/bench/dataplane_jobs.py [--quick] [--jobs N] [--in-flight C]
[--src DIR]` (`--quick`: 100 jobs; `--src`: the source tree whose data plane to run, e.g. an
older commit's `src/`). The last
line of output is one JSON object: `{"workers_1": {...}, "workers_2": {...}, "machine": {...}}`,
where `machine` gives the CPU count and the 1-minute load average before and after: the client
and the data plane share the machine, so figures taken under other load are not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

SRC = Path(__file__).resolve().parents[2] / "src"
TIME_LIMIT_S = 120.0


@contextlib.asynccontextmanager
async def dataplane(workers: int, src: Path) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-dataplane-") as data_dir:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dataplane", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", data_dir, "--workers", str(workers),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={"PYTHONPATH": str(src), "PATH": ""},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            match = re.search(r"http://[\d.]+:\d+", line)
            if match is None:
                raise RuntimeError(f"data plane did not start: {line!r}")
            yield match.group(0)
        finally:
            process.terminate()
            await process.wait()


async def submit(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{url}/jobs", json=body) as response:
        if response.status not in (200, 201):
            raise RuntimeError(f"submit failed: {response.status} {await response.text()}")
        job: dict[str, Any] = await response.json()
        return job


async def follow_completions(
    http: aiohttp.ClientSession,
    url: str,
    done: dict[str, asyncio.Future[str]],
    end_to_client_ms: list[float],
) -> None:
    """Resolves each job's future with its terminal state as events arrive on the shared
    stream, reconnecting with Last-Event-ID if the server closes it (a slow reader)."""
    headers: dict[str, str] = {}
    while True:
        with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            async with http.get(f"{url}/jobs/events", headers=headers) as response:
                async for raw in response.content:
                    line = raw.decode()
                    if line.startswith("id: "):
                        headers["Last-Event-ID"] = line[4:].strip()
                    elif line.startswith("data: "):
                        job = json.loads(line[6:])
                        if job["ended_at"] is not None:
                            ended = datetime.fromisoformat(job["ended_at"]).timestamp()
                            end_to_client_ms.append((time.time() - ended) * 1000)
                        resolve(done, job)


def resolve(done: dict[str, asyncio.Future[str]], job: dict[str, Any]) -> None:
    if job["state"] in ("completed", "failed", "cancelled"):
        future = done.setdefault(job["job_id"], asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(job["state"])


async def one_job(
    http: aiohttp.ClientSession,
    url: str,
    n: int,
    done: dict[str, asyncio.Future[str]],
    gate: asyncio.Semaphore,
) -> float:
    async with gate:
        started = time.perf_counter()
        nql = f"INSERT INTO company_data.bench VALUES ({n})"
        job = await submit(http, url, {"type": "execute-dml", "input": {"nql": nql}})
        future = done.setdefault(job["job_id"], asyncio.get_running_loop().create_future())
        state = await future
        if state != "completed":
            async with http.get(f"{url}/jobs/{job['job_id']}") as response:
                failures = (await response.json())["failures"]
            raise RuntimeError(f"job {job['job_id']} ended {state}: {failures}")
        return (time.perf_counter() - started) * 1000


async def measure(workers: int, jobs: int, in_flight: int, src: Path) -> dict[str, Any]:
    async with dataplane(workers, src) as url, aiohttp.ClientSession() as http:
        done: dict[str, asyncio.Future[str]] = {}
        ends: list[float] = []
        listener = asyncio.create_task(follow_completions(http, url, done, ends))
        try:
            setup = {"nql": "SELECT 0::BIGINT AS n WHERE false", "dataset_name": "bench"}
            job = await submit(http, url, {"type": "materialize-view", "input": setup})
            setup_done = done.setdefault(job["job_id"], asyncio.get_running_loop().create_future())
            await asyncio.wait_for(setup_done, 30)
            gate = asyncio.Semaphore(in_flight)
            ends.clear()
            started = time.perf_counter()
            latencies = await asyncio.wait_for(
                asyncio.gather(*(one_job(http, url, n, done, gate) for n in range(jobs))),
                TIME_LIMIT_S,
            )
            elapsed = time.perf_counter() - started
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        async with http.get(f"{url}/datasets/bench") as response:
            rows = (await response.json())["row_count"]
    if rows != jobs:
        raise RuntimeError(f"expected {jobs} rows, found {rows}")
    return {
        "jobs": jobs,
        "in_flight": in_flight,
        "jobs_per_s": round(jobs / elapsed, 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": percentile(latencies, 0.99),
        "end_to_client_ms_p50": round(statistics.median(ends), 2),
        "end_to_client_ms_p99": percentile(ends, 0.99),
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400, help="jobs per configuration")
    parser.add_argument("--in-flight", type=int, default=16, help="jobs awaited at once")
    parser.add_argument("--src", type=Path, default=SRC, help="the data plane's source tree")
    parser.add_argument("--quick", action="store_true", help="smoke run (100 jobs)")
    args = parser.parse_args()
    if args.quick:
        args.jobs = 100
    load_before = os.getloadavg()[0]
    figures: dict[str, Any] = {}
    for workers in (1, 2):
        result = await measure(workers, args.jobs, args.in_flight, args.src)
        figures[f"workers_{workers}"] = result
        print(
            f"workers={workers}: {result['jobs_per_s']} jobs/s, latency p50 "
            f"{result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms, end to client"
            f" p50 {result['end_to_client_ms_p50']} ms, p99 {result['end_to_client_ms_p99']} ms "
            f"({result['jobs']} jobs, {result['in_flight']} in flight)",
            flush=True,
        )
    figures["machine"] = {
        "cpus": os.cpu_count(),
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
