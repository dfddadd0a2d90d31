"""Retention over a large SQLite store while runs execute: how long deleting 90 % of it takes,
how long the store's writer stalls meanwhile, and how much of the file comes back.

The store is made by a daemon (its schema, two workflows), then filled in bulk with SQL:
`--runs` completed runs (default 1,000,000) of one workflow, each with four events and one task
instance, 90 % of them ended 8 to 60 days ago and the rest within the last 6 days. A daemon
(in this process, with its local data plane) then serves it; while clients keep triggering runs
of the other workflow, `SetRetentionPolicy` keeps that workflow's namespace 7 days and
`ApplyRetention` deletes the older runs (in batches, then gives the pages back to the file
system). Meanwhile a probe in a process of its own takes SQLite's write lock every 2 ms: how
long it waits is how long the daemon's writer holds the store (the stall every write sees);
the same load without retention, for 3 s before, is the baseline.

Figures: the CPU time one batch of deletion takes on the writer's thread (measured on the
store before the daemon serves it, and rolled back), the bulk insert's time, the deletion's
time, the writer's stalls (p50, p99, max; apart while deleting and while giving pages back),
what a write through the daemon's writer and a trigger waited meanwhile, the runs left, and
the store's size (file, WAL and shared memory) before and after. Usage:
`.venv/bin/python scripts/bench/retention.py [--quick] [--runs N]`. The last line of output is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2
from instant_jobs_api import percentile
from overhead import NO_QUOTAS

from workflowd.app import App
from workflowd.domain.retention import RetentionPolicy
from workflowd.engine.definitions import DELETE_BATCH
from workflowd.settings import Settings
from workflowd.store.retention import sweep
from workflowd.store.sql import SqliteConn
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

OLD_SHARE = 0.9
KEEP_DAYS = 7
PROBE_INTERVAL_S = 0.002
BASELINE_S = 3.0
LOAD_CLIENTS = 4
# Each client triggers a run, then pauses: a steady load (up to ~200 runs a second, each of
# several commits), not one that saturates the daemon by itself.
LOAD_PAUSE_S = 0.02
INSERT_CHUNK = 20_000
OLD_SPEC = """\
document: {dsl: '1.0.0', namespace: archive, name: nightly, version: '1.0.0'}
do:
  - view:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: nightly}
"""
LIVE_SPEC = """\
document: {dsl: '1.0.0', namespace: live, name: busy, version: '1.0.0'}
do:
  - note: {set: {done: true}}
  - again: {set: {twice: true}}
"""


def settings(data_dir: Path) -> Settings:
    return Settings.load(
        {
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "dataplane_listen": "127.0.0.1:0",
            "data_dir": data_dir,
            # Only the ApplyRetention this bench asks for: no background pass meanwhile.
            "retention_interval_s": 7 * 86400.0,
            **NO_QUOTAS,
            "quota_stored_bytes": 0,
        },
        {},
    )


def store_bytes(data_dir: Path) -> int:
    return sum(
        path.stat().st_size
        for path in data_dir.glob("workflowd.db*")
        if not path.name.endswith(".lock")
    )


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def bulk_insert(db: Path, workflow_id: str, runs: int, now: datetime) -> float:
    """`runs` completed runs, oldest first, with their events and task instance, in chunks of
    one transaction each, numbering events in the company's sequence as the store's writer
    does."""
    started = time.perf_counter()
    rng = random.Random(18)
    old = int(runs * OLD_SHARE)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        company_seq = conn.execute(
            "SELECT COALESCE(MAX(last_seq), 0) FROM company_sequences WHERE company = 'local'"
        ).fetchone()[0]
        stored = 0
        for start in range(0, runs, INSERT_CHUNK):
            run_rows, event_rows, instance_rows = [], [], []
            for i in range(start, min(runs, start + INSERT_CHUNK)):
                if i < old:  # 60 to 8 days ago, in creation order
                    age = timedelta(days=60) - timedelta(days=52) * (i / max(old, 1))
                else:
                    age = timedelta(days=6) - timedelta(days=6) * ((i - old) / (runs - old))
                created = now - age
                ended = created + timedelta(seconds=rng.uniform(1, 30))
                run_id = str(uuid.uuid4())
                output = json.dumps({"rows": rng.randrange(10**6)})
                run_rows.append((run_id, workflow_id, ts(created), ts(created), ts(ended), output))
                for seq, kind, at in (
                    (1, "run_created", created),
                    (2, "run_started", created),
                    (3, "task_completed", ended),
                    (4, "run_completed", ended),
                ):
                    company_seq += 1
                    event_rows.append((run_id, seq, workflow_id, kind, ts(at), company_seq))
                request = json.dumps({"type": "materialize-view", "key": f"{run_id}:/do/0/view"})
                instance_rows.append((run_id, ts(created), ts(ended), request, output))
                stored += 2 * len(output) + len(request) + 4
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status,"
                " trigger, input, context, output, created_at, started_at, ended_at, last_seq)"
                " VALUES (?, 'local', ?, 'archive', 'nightly', '1.0.0', 'completed', 'manual',"
                " '{}', '{}', ?, ?, ?, ?, 4)",
                [(r[0], r[1], r[5], r[2], r[3], r[4]) for r in run_rows],
            )
            conn.executemany(
                "INSERT INTO run_events (run_id, seq, company, workflow_id, namespace, type, time,"
                " run_status, company_seq) VALUES (?, ?, 'local', ?, 'archive', ?, ?,"
                " 'completed', ?)",
                event_rows,
            )
            conn.executemany(
                "INSERT INTO task_instances (run_id, key, ord, reference, name, kind, call,"
                " position, status, started_at, ended_at, job_request, output) VALUES (?,"
                " '/do/0/view', 1, '/do/0/view', 'view', 'call',"
                " 'CreateMaterializedViewIfNotExists', 0, 'completed', ?, ?, ?, ?)",
                instance_rows,
            )
            conn.execute("COMMIT")
        conn.execute(
            "INSERT INTO company_sequences (company, last_seq) VALUES ('local', ?)"
            " ON CONFLICT (company) DO UPDATE SET last_seq = excluded.last_seq",
            (company_seq,),
        )
        conn.execute(
            "INSERT INTO company_usage (company, stored_bytes) VALUES ('local', ?)"
            " ON CONFLICT (company) DO UPDATE"
            " SET stored_bytes = company_usage.stored_bytes + excluded.stored_bytes",
            (stored,),
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def batch_cost(db: Path, workflow_id: str, batches: int = 40) -> dict[str, float]:
    """The writer's own cost of one retention batch, apart from the machine's load: CPU time
    (`thread_time`) of the first `batches` sweeps of the daemon's size, each in a transaction
    that is rolled back (the store stays as it is)."""
    policy = RetentionPolicy(keep_s=KEEP_DAYS * 86400.0)
    now = datetime.now(UTC)
    costs: list[float] = []
    raw = sqlite3.connect(db, isolation_level=None)
    raw.row_factory = sqlite3.Row
    raw.execute("PRAGMA foreign_keys=ON")
    conn = SqliteConn(raw)
    after: int | None = 0
    with contextlib.closing(raw):
        for _ in range(batches):
            if after is None:
                break
            raw.execute("BEGIN IMMEDIATE")
            started = time.thread_time()
            swept = sweep(
                conn, "local", workflow_id, policy, now,
                after=after, before=None, limit=DELETE_BATCH, dry_run=False,
            )  # fmt: skip
            costs.append((time.thread_time() - started) * 1000)
            raw.execute("ROLLBACK")
            after = swept.next_after
    return {
        "batch_runs": DELETE_BATCH,
        "batch_cpu_ms_p50": round(percentile(costs, 50), 2),
        "batch_cpu_ms_p99": round(percentile(costs, 99), 2),
    }


async def make_store(data_dir: Path) -> str:
    """A daemon creates the store and both workflows; the archive workflow's id."""
    app = App(settings(data_dir))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.WorkflowServiceStub(channel)
            old = await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=OLD_SPEC))
            await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=LIVE_SPEC))
            return old.workflow.id
    finally:
        await app.drain()


def lock_probe(db: Path) -> None:
    """In its own process (no share of the daemon's GIL or event loop): take SQLite's write
    lock every PROBE_INTERVAL_S until stdin closes, retrying every 0.1 ms while the daemon's
    writer holds it; prints how long each take waited (ms), as JSON."""
    waits: list[tuple[float, float]] = []
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    stdin = os.fdopen(0, "rb", buffering=0)
    os.set_blocking(0, False)
    while stdin.read(1) is None:  # None: nothing to read yet, b"": closed
        started = time.perf_counter()
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                time.sleep(0.0001)
        conn.execute("COMMIT")
        waits.append((time.time(), (time.perf_counter() - started) * 1000))
        time.sleep(PROBE_INTERVAL_S)
    print(json.dumps(waits))


class LockProbe:
    """`lock_probe` as a child process."""

    def __init__(self, db: Path) -> None:
        self._db = db
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--lock-probe", str(self._db),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def stop(self) -> list[tuple[float, float]]:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        out, _ = await self._proc.communicate()
        return [(at, wait) for at, wait in json.loads(out)]


async def free_pages(db: Path, stop: asyncio.Event, seen: list[tuple[float, int]]) -> None:
    """The store's free pages every half second (a read-only connection of its own)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        while not stop.is_set():
            seen.append((time.time(), conn.execute("PRAGMA freelist_count").fetchone()[0]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def probe(app: App, stop: asyncio.Event, samples: list[float]) -> None:
    """An empty write through the daemon's writer every PROBE_INTERVAL_S: what a caller in the
    daemon waits for one (the event loop's own delays included)."""
    writer = app.store.db.writer
    while not stop.is_set():
        started = time.perf_counter()
        await writer.submit(lambda conn: None)
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PROBE_INTERVAL_S)


async def measured(
    app: App, stub: pb_grpc.WorkflowServiceStub, work: Any
) -> tuple[Any, dict[str, Any]]:
    """`work` awaited while runs are triggered and both probes run; its result and figures,
    the writer's stalls also apart for the time pages were given back (from when the store's
    free pages peaked)."""
    stop = asyncio.Event()
    writes: list[float] = []
    triggers: list[float] = []
    lock = LockProbe(app.settings.data_dir / "workflowd.db")
    await lock.start()
    background = [
        asyncio.create_task(probe(app, stop, writes)),
        *(asyncio.create_task(load(stub, stop, triggers)) for _ in range(LOAD_CLIENTS)),
    ]
    free: list[tuple[float, int]] = []
    watcher = asyncio.create_task(free_pages(app.settings.data_dir / "workflowd.db", stop, free))
    started = time.perf_counter()
    result = await work
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*background, watcher)
    samples = await lock.stop()
    waits = [wait for _, wait in samples]
    peak = max(free, key=lambda found: found[1])[0] if free else time.time()
    deleting = [wait for at, wait in samples if at < peak] or [0.0]
    reclaiming = [wait for at, wait in samples if at >= peak] or [0.0]
    return result, {
        "seconds": round(elapsed, 1),
        "writer_stall_ms_p50": round(percentile(waits, 50), 2),
        "writer_stall_ms_p99": round(percentile(waits, 99), 2),
        "writer_stall_ms_max": round(max(waits), 2),
        "deleting_s": round(peak - samples[0][0], 1) if samples else 0.0,
        "deleting_writer_stall_ms_p99": round(percentile(deleting, 99), 2),
        "deleting_writer_stall_ms_max": round(max(deleting), 2),
        "reclaiming_writer_stall_ms_p99": round(percentile(reclaiming, 99), 2),
        "reclaiming_writer_stall_ms_max": round(max(reclaiming), 2),
        "daemon_write_ms_p99": round(percentile(writes, 99), 2),
        "runs_triggered": len(triggers),
        "trigger_ms_p99": round(percentile(triggers, 99), 2),
    }


async def load(
    stub: pb_grpc.WorkflowServiceStub, stop: asyncio.Event, samples: list[float]
) -> None:
    request = pb.TriggerWorkflowRequest(namespace="live", name="busy")
    while not stop.is_set():
        started = time.perf_counter()
        await stub.TriggerWorkflow(request)
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(LOAD_PAUSE_S)


def count_runs(db: Path, workflow_id: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        found = conn.execute("SELECT COUNT(*) FROM runs WHERE workflow_id = ?", (workflow_id,))
        return int(found.fetchone()[0])


async def bench(runs: int, work: Path) -> dict[str, Any]:
    data_dir = work / "data"
    workflow_id = await make_store(data_dir)
    db = data_dir / "workflowd.db"
    insert_s = bulk_insert(db, workflow_id, runs, datetime.now(UTC))
    cost = batch_cost(db, workflow_id)
    size_before = store_bytes(data_dir)

    app = App(settings(data_dir))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.WorkflowServiceStub(channel)
            keep = pb.RetentionPolicy(keep_for=duration_pb2.Duration(seconds=KEEP_DAYS * 86400))
            await stub.SetRetentionPolicy(
                pb.SetRetentionPolicyRequest(namespace="archive", policy=keep)
            )
            # The same load without retention first: what the stalls are without it.
            _, baseline = await measured(app, stub, asyncio.sleep(BASELINE_S))
            load_1m = os.getloadavg()[0]
            done, during = await measured(
                app, stub, stub.ApplyRetention(pb.ApplyRetentionRequest(namespace="archive"))
            )
    finally:
        await app.drain()
    return {
        "runs": runs,
        "insert_s": round(insert_s, 1),
        "deleted_runs": done.deleted_runs,
        "runs_left": count_runs(db, workflow_id),
        "deletion_s": during["seconds"],
        "deleted_runs_per_s": round(done.deleted_runs / during["seconds"]),
        "writer_stall_ms_p99": during["writer_stall_ms_p99"],
        "one_batch": cost,
        "store_mb_before": round(size_before / 2**20, 1),
        "store_mb_after": round(store_bytes(data_dir) / 2**20, 1),
        "during_retention": during,
        "baseline_without_retention": {
            key: value
            for key, value in baseline.items()
            if not key.startswith(("deleting", "reclaiming"))
        },
        "load_1m": round(load_1m, 2),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="ended runs stored")
    parser.add_argument("--quick", action="store_true", help="small smoke run (20,000 runs)")
    parser.add_argument("--lock-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lock_probe:
        lock_probe(args.lock_probe)
        return
    runs = 20_000 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="wfd-retention-") as work:
        result = asyncio.run(bench(runs, Path(work)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
