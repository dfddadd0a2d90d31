"""The CLI for nightly pipelines, as people run it against a real daemon: runs listed with when
they were scheduled for, how long they took and what started them; filters by status and time;
input from a file; cancelling a run that has ended says so."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.api.test_naming import create, nightly
from tests.conftest import Daemon
from tests.engine.schedule_support import ts
from tests.engine.support import finished, wait_for_event, workflow
from tests.test_cli import cli
from workflowd.v1 import workflow_service_pb2 as pb

FAILING = (
    "  - boom:\n      raise:\n"
    "        error: {type: 'https://example.com/boom', status: 500, title: boom}\n"
)
WAITING = "  - pause:\n      wait: PT1H\n"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


async def test_runs_list_shows_schedule_duration_and_trigger(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    filled = await daemon.stub.BackfillWorkflow(
        pb.BackfillWorkflowRequest(
            workflow_id=wf.id, start_time=ts(day - timedelta(days=1)), end_time=ts(day)
        )
    )
    backfilled = await finished(daemon, filled.run_ids[0])
    manual = await finished(
        daemon,
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id))).run.id,
    )
    code, out, err = await cli("runs", "list", address=daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUN", "WORKFLOW", "VERSION", "STATUS", "TRIGGER", "CREATED", "SCHEDULED", "FOR",
        "DURATION",
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[1:]}
    instant = (day - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert re.fullmatch(
        rf"{backfilled.id}  finance/nightly\s+1\.0\.0\s+completed\s+backfill\s+{STAMP}\s+"
        rf"{instant}\s+\d+\.\d\ds",
        rows[backfilled.id],
    ), rows[backfilled.id]
    assert re.fullmatch(
        rf"{manual.id}  finance/nightly\s+1\.0\.0\s+completed\s+manual\s+{STAMP}\s+-\s+\d+\.\d\ds",
        rows[manual.id],
    ), rows[manual.id]


async def test_runs_list_filters_by_several_statuses_and_by_time(daemon: Daemon) -> None:
    ok = await create(daemon, nightly())
    bad = await create(daemon, workflow("failing", FAILING))
    slow = await create(daemon, workflow("slow", WAITING))
    done = await finished(
        daemon,
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=ok.id))).run.id,
    )
    failed = await finished(
        daemon,
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=bad.id))).run.id,
    )
    waiting = (
        await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=slow.id))
    ).run
    await wait_for_event(daemon, waiting.id, pb.RUN_EVENT_TYPE_TASK_WAITING)

    async def listed(*args: str) -> set[str]:
        code, out, err = await cli("runs", "list", *args, "-o", "json", address=daemon.address)
        assert code == 0, err
        return {r["id"] for r in json.loads(out).get("runs", [])}

    assert await listed("--status", "completed", "--status", "failed") == {done.id, failed.id}
    assert await listed("--status", "failed,running") == {failed.id, waiting.id}
    assert await listed("--since", "1h") == {done.id, failed.id, waiting.id}
    assert await listed("--until", "1h") == set()
    created = failed.created_at.ToDatetime(tzinfo=UTC)
    assert await listed("--since", created.isoformat()) == {failed.id, waiting.id}
    assert await listed("--until", created.isoformat()) == {done.id}
    code, _, err = await cli("runs", "list", "--since", "yesterday", address=daemon.address)
    assert code == 1
    assert "--since 'yesterday' is not an ISO-8601 instant" in err


async def test_input_is_read_from_a_file(daemon: Daemon, tmp_path: Path) -> None:
    await create(daemon, nightly())
    data = tmp_path / "input.json"
    data.write_text('{"day": "2026-01-31", "rows": [1, 2]}')
    code, out, err = await cli(
        "trigger", "finance/nightly", "--input", f"@{data}", "-o", "json", address=daemon.address
    )
    assert code == 0, err
    assert json.loads(out)["input"] == {"day": "2026-01-31", "rows": [1, 2]}
    spec_file = tmp_path / "wf.yaml"
    spec_file.write_text(nightly(name="applied"))
    code, out, err = await cli(
        "apply", "-f", str(spec_file), "--trigger", "--input", f"@{data}", "-o", "json",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    run = await daemon.stub.GetRun(pb.GetRunRequest(run_id=json.loads(out)["run_id"]))
    assert run.run.input.struct_value["day"] == "2026-01-31"
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    code, _, err = await cli("trigger", "finance/nightly", "--input", f"@{broken}")
    assert code == 1
    assert err.startswith(f"workflowd: --input @{broken} is not JSON: ")
    code, _, err = await cli("trigger", "finance/nightly", "--input", "@/no/such/file.json")
    assert code == 1
    assert err == "workflowd: --input /no/such/file.json: No such file or directory\n"


async def test_cancel_says_when_the_run_had_ended_and_records_the_reason(daemon: Daemon) -> None:
    quick = await create(daemon, nightly())
    done = await finished(
        daemon,
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=quick.id))).run.id,
    )
    code, out, err = await cli("runs", "cancel", done.id[:8], address=daemon.address)
    assert code == 1
    assert out == ""
    ended = done.ended_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert err == (
        f"workflowd: run {done.id} had completed at {ended} UTC: there is nothing to cancel\n"
    )
    slow = await create(daemon, workflow("slow", WAITING))
    run = (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=slow.id))).run
    await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_WAITING)
    code, out, err = await cli(
        "runs", "cancel", run.id, "--reason", "bad data upstream", address=daemon.address
    )
    assert code == 0, err
    assert re.fullmatch(rf"run {run.id}: (cancelling|cancelled)\n", out), out
    cancelled = await finished(daemon, run.id)
    assert cancelled.status == pb.RUN_STATUS_CANCELLED
    assert cancelled.cancel_reason == "cancelled on request: bad data upstream"
    code, _, err = await cli("runs", "cancel", run.id, address=daemon.address)
    assert code == 1
    assert "had been cancelled at " in err
