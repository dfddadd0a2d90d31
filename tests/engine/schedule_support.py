"""Helpers for schedule tests: a daemon on a hand-moved clock, and waits on fire decisions."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from tests.conftest import Daemon, eventually
from tests.engine.support import SLOW_NQL, workflow
from workflowd.v1 import workflow_service_pb2 as pb

T0 = datetime(2026, 1, 5, 12, 1, tzinfo=UTC)  # a Monday, 12:01 UTC

QUICK_TASK = """\
  - log:
      call: ExecuteDml
      with:
        nql: '${ "INSERT INTO company_data.audit VALUES (1, 1, ''\\($workflow.scheduledAt)'')" }'
      export: {as: '$context + {at: $workflow.scheduledAt}'}
"""
SLOW_TASK = f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
"""


def scheduled(name: str, schedule: str, tasks: str = QUICK_TASK, version: str = "1.0.0") -> str:
    return workflow(name, tasks, version=version, extra=f"schedule: {schedule}\n")


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def at(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


async def create(daemon: Daemon, text: str, **fields: Any) -> pb.Workflow:
    response = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=text, **fields)
    )
    return response.workflow


async def activate(daemon: Daemon, workflow_id: str, **fields: Any) -> pb.ScheduleWorkflowResponse:
    return await daemon.stub.ScheduleWorkflow(
        pb.ScheduleWorkflowRequest(workflow_id=workflow_id, **fields)
    )


async def get_schedule(daemon: Daemon, workflow_id: str) -> pb.Schedule:
    response = await daemon.stub.GetSchedule(pb.GetScheduleRequest(workflow_id=workflow_id))
    return response.schedule


async def decision_at(daemon: Daemon, workflow_id: str, instant: datetime) -> pb.FireDecision:
    """The decision recorded for `instant`, once there is one."""

    async def find() -> pb.FireDecision | None:
        for decision in (await get_schedule(daemon, workflow_id)).recent_decisions:
            if at(decision.fire_time) == instant:
                return decision
        return None

    found = await eventually(find)
    assert found is not None
    return found


async def runs_of(daemon: Daemon, workflow_id: str) -> list[pb.Run]:
    """Every run of the workflow, oldest first."""
    response = await daemon.stub.ListRuns(
        pb.ListRunsRequest(workflow_id=workflow_id, page_size=1000)
    )
    return list(reversed(response.runs))


def slow(name: str, schedule: str) -> str:
    return scheduled(name, schedule, SLOW_TASK)


def stored_decisions(data_dir: Path, workflow_id: str) -> list[tuple[datetime, str, str]]:
    """Every decision the store keeps for the workflow, by instant: (instant, outcome, reason),
    read from the daemon's SQLite file (GetSchedule shows only the 20 most recent)."""
    with contextlib.closing(sqlite3.connect(data_dir / "workflowd.db")) as conn:
        rows = conn.execute(
            "SELECT instant, outcome, reason FROM schedule_decisions WHERE workflow_id = ?"
            " ORDER BY instant",
            (workflow_id,),
        ).fetchall()
    return [(datetime.fromisoformat(i), outcome, reason) for i, outcome, reason in rows]
