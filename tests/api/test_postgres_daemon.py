"""A real daemon on PostgreSQL (`--store postgresql://…`): a workflow runs end to end through
the gRPC API, and what it stored is in the database, not in a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Daemon, serve_refused
from tests.engine.support import apply, finished, trigger, workflow
from tests.postgres import fresh_schema
from workflowd.v1 import workflow_service_pb2 as pb

TWO_TASKS = workflow(
    "on-postgres",
    """\
  - build:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: pg_one}
      export: {as: '$context + {built: .datasetId}'}
  - buildMore:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 2 AS two, datasetName: pg_two}
""",
)


@pytest.fixture
async def store_url() -> AsyncIterator[str]:
    with fresh_schema() as url:
        yield url


# `store_url` first: its schema is dropped after the daemon has drained, not before.
async def test_a_daemon_on_postgresql_runs_a_workflow(
    store_url: str, start_daemon: Callable[..., Awaitable[Daemon]]
) -> None:
    daemon = await start_daemon(store=store_url)
    wf = await apply(daemon, TWO_TASKS)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)

    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    assert [t.status for t in run.tasks] == [pb.TASK_STATUS_COMPLETED] * 2
    assert "built" in dict(run.context)
    with psycopg.connect(store_url) as conn:
        stored = conn.execute("SELECT status FROM runs WHERE id = %s", (run.id,)).fetchone()
        events = conn.execute(
            "SELECT type FROM run_events WHERE run_id = %s ORDER BY global_seq", (run.id,)
        ).fetchall()
    assert stored == ("completed",)
    assert events[0] == ("run_created",)
    assert events[-1] == ("run_completed",)
    assert not (daemon.data_dir / "workflowd.db").exists()


async def serve_fails(tmp_path: Path, store: str) -> str:
    return await serve_refused(
        tmp_path,
        "--store", store, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--dataplane-listen", "127.0.0.1:0",
    )  # fmt: skip


async def test_serve_refuses_an_unreachable_server_in_one_sentence(tmp_path: Path) -> None:
    said = await serve_fails(tmp_path, "postgresql://someone:s3cret@127.0.0.1:1/w")
    assert "127.0.0.1:1" in said
    assert "s3cret" not in said


async def test_runs_are_found_by_namespace_and_id_start_on_postgresql(
    store_url: str, start_daemon: Callable[..., Awaitable[Daemon]]
) -> None:
    """The new filters are SQL too: a range on ids (byte order, as `TEXT COLLATE "C"` keeps it)
    and a workflow's name."""
    daemon = await start_daemon(store=store_url)
    wf = await apply(daemon, TWO_TASKS)
    runs = [await trigger(daemon, wf.id) for _ in range(3)]
    for run in runs:
        for length in (4, 9, 36):  # the 9th character is a hyphen
            found = await daemon.stub.ListRuns(pb.ListRunsRequest(run_id_prefix=run.id[:length]))
            assert run.id in [r.id for r in found.runs]
            assert all(r.id.startswith(run.id[:length]) for r in found.runs)
    by_name = await daemon.stub.ListRuns(
        pb.ListRunsRequest(namespace="analytics", name="on-postgres")
    )
    assert {r.id for r in by_name.runs} == {r.id for r in runs}
    named = await daemon.stub.ListWorkflows(pb.ListWorkflowsRequest(name="on-postgres"))
    assert [w.id for w in named.workflows] == [wf.id]
    for run in runs:
        await finished(daemon, run.id)
