"""A run in flight across the upgrade to task instances: stored as the previous schema stored it
(tasks numbered by position, PENDING rows for those not started, a job submitted under the old
idempotency key `run_id:index` whose id the old process never recorded), it resumes after the
migration on the new daemon, finds that job instead of submitting it again, and completes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from pathlib import Path

import grpc
import pytest

from tests.conftest import eventually
from tests.engine.support import AUDIT_CSV, EVENTS_CSV, Plane
from tests.procs import start_dataplane, start_workflowd
from workflowd.store.migrations import MIGRATIONS
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

SPEC = """\
document: {dsl: '1.0.0', namespace: analytics, name: upgraded, version: '1.0.0'}
do:
  - build:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT user_id FROM company_data.events, datasetName: upgraded_view}
  - log:
      call: ExecuteDml
      with: {nql: "INSERT INTO company_data.audit VALUES (1, 1, 'upgraded')"}
  - refresh:
      call: RefreshMaterializedView
      with: {datasetName: upgraded_view}
"""
STAMP = "2026-12-01T08:00:00.000000+00:00"
PREVIOUS_SCHEMA = 4  # the last migration before task instances


async def submit(plane: Plane, request: dict[str, object]) -> dict[str, object]:
    async with plane.session.post("/jobs", json=request) as resp:
        assert resp.status == 201, await resp.text()
        job: dict[str, object] = await resp.json()
    return job


async def ended(plane: Plane, job_id: str) -> dict[str, object]:
    async def done() -> bool:
        return (await plane.job(job_id))["state"] in ("completed", "failed")

    await eventually(done)
    return await plane.job(job_id)


def request(
    run_id: str, wf_id: str, index: int, name: str, body: dict[str, object]
) -> dict[str, object]:
    """A job request exactly as the previous daemon built and stored it."""
    return {
        **body,
        "idempotency_key": f"{run_id}:{index}",
        "tags": ["workflow_enqueued"],
        "metadata": {"workflow_id": wf_id, "workflow_run_id": run_id, "task_name": name},
    }


def old_store(
    path: Path, wf_id: str, run_id: str, built: dict[str, object], log: dict[str, object]
) -> None:
    """The store as the previous schema left it: `build` completed, `log` RUNNING with its
    request committed and its job submitted but not recorded, `refresh` PENDING."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        for version, script in enumerate(MIGRATIONS[:PREVIOUS_SCHEMA], start=1):
            for statement in script:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
        conn.execute(
            "INSERT INTO workflows (id, company, namespace, name, current_version, status,"
            " created_at, updated_at) VALUES (?, 'local', 'analytics', 'upgraded', '1.0.0',"
            " 'active', ?, ?)",
            (wf_id, STAMP, STAMP),
        )
        conn.execute(
            "INSERT INTO workflow_versions (workflow_id, version, ordinal, specification,"
            " spec_sha256, created_at) VALUES (?, '1.0.0', 1, ?, ?, ?)",
            (wf_id, SPEC, hashlib.sha256(SPEC.encode()).hexdigest(), STAMP),
        )
        conn.execute(
            "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status,"
            " trigger, input, created_at, started_at, last_seq) VALUES (?, 'local', ?,"
            " 'analytics', 'upgraded', '1.0.0', 'running', 'manual', '{}', ?, ?, 4)",
            (run_id, wf_id, STAMP, STAMP),
        )
        tasks = [
            (0, "build", "CreateMaterializedViewIfNotExists", "completed", built),
            (1, "log", "ExecuteDml", "running", log),
            (2, "refresh", "RefreshMaterializedView", "pending", None),
        ]
        for index, name, call, status, job in tasks:
            conn.execute(
                "INSERT INTO tasks (run_id, idx, name, call, reference, status, job_id,"
                " job_request, input, output, started_at, ended_at) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?)",
                (
                    run_id, index, name, call, f"/do/{index}/{name}", status,
                    str(job["job_id"]) if job and status == "completed" else "",
                    json.dumps(job["request"]) if job else None,
                    json.dumps(job["output"]) if job and status == "completed" else None,
                    STAMP if job else None, STAMP if status == "completed" else None,
                ),
            )  # fmt: skip
        events = [
            ("run_created", "pending", -1, "", None),
            ("run_started", "running", -1, "", None),
            ("task_started", "running", 0, "build", "running"),
            ("task_completed", "running", 0, "build", "completed"),
        ]
        for seq, (kind, run_status, index, name, task_status) in enumerate(events, start=1):
            conn.execute(
                "INSERT INTO run_events (run_id, seq, company, workflow_id, namespace, type, time,"
                " run_status, task_index, task_name, task_status) VALUES (?, ?, 'local', ?,"
                " 'analytics', ?, ?, ?, ?, ?, ?)",
                (run_id, seq, wf_id, kind, STAMP, run_status, index, name, task_status),
            )


async def test_a_run_in_flight_across_the_upgrade_resumes_and_submits_no_job_twice(
    tmp_path: Path,
) -> None:
    plane_proc, plane_url = await start_dataplane(tmp_path / "plane")
    plane = Plane(plane_url)
    daemon = None
    try:
        await plane.load_csv("events", EVENTS_CSV)
        await plane.load_csv("audit", AUDIT_CSV)
        wf_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
        build_request = request(
            run_id, wf_id, 0, "build",
            {"type": "materialize-view", "input": {"nql": "SELECT user_id FROM company_data.events", "dataset_name": "upgraded_view"}},
        )  # fmt: skip
        build = await ended(plane, str((await submit(plane, build_request))["job_id"]))
        log_request = request(
            run_id, wf_id, 1, "log",
            {"type": "execute-dml", "input": {"nql": "INSERT INTO company_data.audit VALUES (1, 1, 'upgraded')"}},
        )  # fmt: skip
        log_job = await submit(plane, log_request)
        state = tmp_path / "workflowd"
        state.mkdir()
        old_store(
            state / "workflowd.db",
            wf_id,
            run_id,
            {
                "job_id": build["job_id"],
                "request": build_request,
                "output": {"datasetName": "upgraded_view"},
            },
            {"request": log_request},
        )

        daemon, address = await start_workflowd(state, plane_url)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.WorkflowServiceStub(channel)

            async def over() -> bool:
                run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
                return run.status == pb.RUN_STATUS_COMPLETED

            await eventually(over, timeout_s=60)
            run = (await stub.GetRun(pb.GetRunRequest(run_id=run_id))).run

        assert [(t.name, t.status) for t in run.tasks] == [
            ("build", pb.TASK_STATUS_COMPLETED),
            ("log", pb.TASK_STATUS_COMPLETED),
            ("refresh", pb.TASK_STATUS_COMPLETED),
        ]
        assert [t.key for t in run.tasks] == ["/do/0/build", "/do/1/log", "/do/2/refresh"]
        found = await plane.jobs_for_run(run_id)
        # One job per task: no second `log` under a new key.
        assert sorted(j["metadata"]["task_name"] for j in found) == ["build", "log", "refresh"]
        jobs = {j["metadata"]["task_name"]: j for j in found}
        assert jobs["log"]["job_id"] == log_job["job_id"] == run.tasks[1].job_id
        assert jobs["log"]["idempotency_key"] == f"{run_id}:1"  # the old key, found again
        assert jobs["refresh"]["idempotency_key"] == f"{run_id}:/do/2/refresh"
        logged = [r for r in await plane.rows("audit") if r["note"] == "upgraded"]
        assert len(logged) == 1
    finally:
        if daemon is not None:
            await daemon.stop()
        await plane.aclose()
        await plane_proc.stop()
