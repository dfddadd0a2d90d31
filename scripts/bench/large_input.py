"""Another company's GetWorkflow latency while one company runs workflows with a large input.

Company `noisy` triggers `--runs` runs at once (6) of a workflow of `--tasks` tasks (30), each
with trivial expressions (`with` and `output.as`), and a run input of about 600 KB; company
`quiet` calls GetWorkflow once every 5 ms (one call at a time), first alone (the baseline), then
until the noisy runs have ended; and the CPU time the daemon and its expression workers spent
meanwhile. The daemon (`workflowd serve` with a tokens file) runs
against the instant jobs API in its own process, so what is measured is workflowd's own cost.

Usage: `.venv/bin/python scripts/bench/large_input.py [--quick]`. The last line of output is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from instant_jobs_api import spawn_instant_api
from overhead import TERMINAL_EVENTS
from tenants import Latencies, Tenants

from workflowd.api.client import Client
from workflowd.v1 import workflow_service_pb2 as pb

INPUT_BYTES = 600 * 1024
BASELINE_CALLS = 200
PROBE_INTERVAL_S = 0.005
RUN_TIMEOUT_S = 300.0


def spec(name: str, tasks: int) -> str:
    lines = [f"document: {{dsl: '1.0.0', namespace: bench, name: {name}, version: '1.0.0'}}", "do:"]
    for i in range(tasks):
        lines += [
            f"  - t{i}:",
            "      call: CreateMaterializedViewIfNotExists",
            f"      with: {{nql: '${{ \"SELECT {i} AS one\" }}', datasetName: t{i}}}",
            "      output:",
            "        as: '${ {datasetId} }'",
        ]
    return "\n".join(lines) + "\n"


def children_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the live children of `pid` (the expression workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        if int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def large_input() -> struct_pb2.Value:
    rows = [{"id": i, "text": "x" * 90} for i in range(INPUT_BYTES // 110)]
    return json_format.ParseDict({"rows": rows}, struct_pb2.Value())


async def follow(client: Client, run_id: str) -> int:
    async for event in client.watch_run(run_id):
        if event.type in TERMINAL_EVENTS:
            return int(event.type)
    raise RuntimeError(f"run {run_id} ended without a terminal event")


async def measure(tenants: Tenants, runs: int, tasks: int) -> dict[str, Any]:
    noisy, quiet = tenants.clients["noisy"], tenants.clients["quiet"]
    created = await noisy.call(
        "CreateWorkflow", pb.CreateWorkflowRequest(specification=spec("wide", tasks))
    )
    mine = await quiet.call(
        "CreateWorkflow", pb.CreateWorkflowRequest(specification=spec("mine", 1))
    )

    async def get_workflow() -> object:
        return await quiet.call("GetWorkflow", pb.GetWorkflowRequest(id=mine.workflow.id))

    baseline = Latencies()
    for _ in range(BASELINE_CALLS):
        started = time.perf_counter()
        await get_workflow()
        baseline.samples.append((time.perf_counter() - started) * 1000)
    request = pb.TriggerWorkflowRequest(workflow_id=created.workflow.id, input=large_input())
    loaded, stop = Latencies(), asyncio.Event()
    probe = asyncio.create_task(loaded.probe(get_workflow, stop, PROBE_INTERVAL_S))
    started = time.perf_counter()
    pid = tenants.child.proc.pid
    daemon_cpu, workers_cpu = tenants.child.cpu_s(), children_cpu_s(pid)
    replies = await asyncio.gather(*(noisy.call("TriggerWorkflow", request) for _ in range(runs)))
    async with asyncio.timeout(RUN_TIMEOUT_S):
        ends = await asyncio.gather(*(follow(noisy, reply.run.id) for reply in replies))
    wall_s = time.perf_counter() - started
    daemon_cpu, workers_cpu = tenants.child.cpu_s() - daemon_cpu, children_cpu_s(pid) - workers_cpu
    stop.set()
    await probe
    completed = sum(1 for end in ends if end == pb.RUN_EVENT_TYPE_RUN_COMPLETED)
    return {
        "runs": runs,
        "tasks": tasks,
        "input_bytes": request.input.ByteSize(),
        "runs_completed": completed,
        "noisy_wall_s": round(wall_s, 2),
        "noisy_daemon_cpu_s": round(daemon_cpu, 2),
        "noisy_expression_workers_cpu_s": round(workers_cpu, 2),
        **baseline.figures("baseline_get_workflow"),
        **loaded.figures("loaded_get_workflow"),
    }


async def bench(work: Path, runs: int, tasks: int) -> dict[str, Any]:
    api, api_url = await spawn_instant_api(0.0, work / "instant-api.log")
    tenants = await Tenants.spawn(work, ["noisy", "quiet"], api_url)
    try:
        return await measure(tenants, runs, tasks)
    finally:
        await tenants.aclose()
        await api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (2 runs, 5 tasks)")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=30)
    args = parser.parse_args()
    runs, tasks = (2, 5) if args.quick else (args.runs, args.tasks)
    load_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="workflowd-bench-") as tmp:
        out = asyncio.run(bench(Path(tmp), runs, tasks))
    out["load_avg_1m_at_start"] = round(load_1m, 2)
    print(
        f"GetWorkflow of another company: alone p50 {out['baseline_get_workflow_ms_p50']} ms; "
        f"during {runs} runs of {tasks} tasks with a {out['input_bytes']} byte input: p50 "
        f"{out['loaded_get_workflow_ms_p50']} ms, max {out['loaded_get_workflow_ms_max']} ms"
    )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
