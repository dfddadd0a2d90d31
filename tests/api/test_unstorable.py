"""Values a store cannot keep are the caller's mistake, on SQLite and on PostgreSQL (issue 16,
item 12): a NUL in a key, a reason, an input string or a task name, and a key of a million
characters, are INVALID_ARGUMENT at the API, never INTERNAL; and a scheduled fire that cannot
create its run is decided (skipped, saying why) instead of retried forever."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import Daemon
from tests.engine.schedule_support import (
    T0,
    activate,
    at,
    create,
    decision_at,
    get_schedule,
    scheduled,
)
from tests.engine.support import SLOW_NQL, finished, jv, trigger, workflow
from tests.postgres import store_url  # noqa: F401 (the fixture: a SQLite file, then PostgreSQL)
from tests.scheduler.manual_clock import ManualClock
from workflowd.v1 import workflow_service_pb2 as pb

SLOW = workflow(
    "slow",
    f"  - slow:\n      call: CreateMaterializedViewIfNotExists\n"
    f'      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}\n',
)


async def refused(call: Awaitable[object]) -> tuple[str, list[str]]:
    """The INVALID_ARGUMENT message of `call`, and the fields its violations name."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields = []
    if status is not None:
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                fields += [v.field for v in bad.field_violations]
    return error.details() or "", fields


# `store_url` first: its schema is dropped after the daemon has drained, not before.
async def test_values_no_store_can_keep_are_invalid_argument(
    store_url: str,  # noqa: F811
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(store=store_url)
    stub = daemon.stub
    wf = (await stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=SLOW))).workflow
    run = await trigger(daemon, wf.id)

    for key, why in (("a\0b", "control character"), ("k" * 1_000_000, "at most 256")):
        message, fields = await refused(
            stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id, idempotency_key=key))
        )
        assert why in message
        assert fields == ["idempotency_key"]
    message, fields = await refused(
        stub.TriggerWorkflow(
            pb.TriggerWorkflowRequest(workflow_id=wf.id, input=jv({"day": {"note": "x\0y"}}))
        )
    )
    assert "NUL" in message
    assert fields == ["input/day/note"]
    message, fields = await refused(
        stub.CancelRun(pb.CancelRunRequest(run_id=run.id, reason="stop\0now"))
    )
    assert fields == ["reason"]
    message, fields = await refused(
        stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id, input=jv({"k\0": 1})))
    )
    assert fields == ["input/k\0"]
    message, fields = await refused(
        stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=SLOW, tags=["a\0b"]))
    )
    assert fields == ["tags[0]"]

    document = {  # a JSON specification, as a tool writes it
        "document": {"dsl": "1.0.0", "namespace": "analytics", "name": "nul", "version": "1.0.0"},
        "do": [{"a\u0000b": {"call": "ExecuteDml", "with": {"nql": "DELETE FROM company_data.x"}}}],
    }
    message, fields = await refused(
        stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=json.dumps(document)))
    )
    assert "a task name must not hold control characters" in message
    assert fields == ["specification/do/0/a\0b"]

    # The daemon and its store are fine: the same calls, right, succeed.
    again = await trigger(daemon, wf.id, idempotency_key="day-1", input=jv({"day": "ok"}))
    same = await trigger(daemon, wf.id, idempotency_key="day-1", input=jv({"day": "ok"}))
    assert same.id == again.id
    await stub.CancelRun(pb.CancelRunRequest(run_id=run.id, reason="stop now"))
    await stub.CancelRun(pb.CancelRunRequest(run_id=again.id, reason="stop now"))
    assert (await finished(daemon, run.id)).status == pb.RUN_STATUS_CANCELLED


def store_execute(store: str, sql: str, args: tuple[object, ...]) -> None:
    """One statement straight on the store, as an older workflowd or an operator left it."""
    if store.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(Path(urlsplit(store).path))) as conn:
            conn.execute(sql.replace("%s", "?"), args)
            conn.commit()
        return
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute(sql, args)  # type: ignore[arg-type]


async def test_a_fire_that_cannot_create_its_run_is_decided_and_the_schedule_moves_on(
    store_url: str,  # noqa: F811
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    first = await start_daemon(store=store_url, clock=ManualClock(T0))
    wf = await create(first, scheduled("legacy", "{cron: '*/5 * * * *'}"))
    await activate(first, wf.id)
    await first.app.drain()
    # A version stored before task names were checked: its task name holds a NUL.
    legacy = scheduled("legacy", "{cron: '*/5 * * * *'}").replace("- log:", '- "lo\\0g":')
    store_execute(
        store_url,
        "UPDATE workflow_versions SET specification = %s WHERE workflow_id = %s",
        (legacy, wf.id),
    )
    clock = ManualClock(T0)
    daemon = await start_daemon(first.data_dir, store=store_url, clock=clock)
    instant = T0.replace(minute=5)
    clock.set(instant)
    decision = await decision_at(daemon, wf.id, instant)
    assert decision.outcome == pb.FIRE_OUTCOME_SKIPPED
    assert decision.reason.startswith("the run cannot be created: invalid specification")
    assert "control characters" in decision.reason
    sched = await get_schedule(daemon, wf.id)
    assert at(sched.next_fire_at) == instant + timedelta(minutes=5)
