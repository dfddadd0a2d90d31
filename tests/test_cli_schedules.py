"""The schedule commands of the CLI, as people run them, against a real daemon."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.engine.schedule_support import QUICK_TASK, scheduled
from tests.engine.support import AUDIT_CSV, Plane
from tests.test_cli import cli


@pytest.fixture
async def plane(daemon: Daemon) -> AsyncIterator[Plane]:
    plane = Plane.of(daemon)
    await plane.load_csv("audit", AUDIT_CSV)
    yield plane
    await plane.aclose()


async def test_apply_schedule_get_list_change_and_unschedule(
    daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(scheduled("paris", "{cron: 'CRON_TZ=Europe/Paris 30 6 * * *'}"))
    code, out, err = await cli("apply", "-f", str(path), "--schedule", address=daemon.address)
    assert code == 0, err
    assert "schedule active" in out

    code, out, err = await cli("schedules", "get", "analytics/paris", address=daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert (
        lines[0] == "analytics/paris version 1.0.0: cron CRON_TZ=Europe/Paris 30 6 * * * (active)"
    )
    assert lines[1] == "overlap SKIP, catch-up LATEST within 1h"
    assert lines[2] == "next fires (Europe/Paris):"
    fires = [line.strip() for line in lines[3:13]]
    assert len(fires) == 10
    assert all(f.endswith(("06:30:00 CET", "06:30:00 CEST")) for f in fires), fires

    code, out, err = await cli(
        "schedule", "analytics/paris", "--overlap", "buffer-one", "--catchup", "all",
        "--catchup-window", "2h", "-o", "json", address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    sched = json.loads(out)["schedule"]
    assert sched["overlap_policy"] == "OVERLAP_POLICY_BUFFER_ONE"
    assert sched["catchup_policy"] == "CATCHUP_POLICY_ALL"
    assert sched["catchup_window"] == "7200s"

    code, out, _ = await cli("schedules", "list", address=daemon.address)
    assert "analytics/paris" in out
    assert "cron CRON_TZ=Europe/Paris 30 6 * * *" in out

    code, out, err = await cli("unschedule", "analytics/paris", address=daemon.address)
    assert code == 0, err
    assert out.strip() == "analytics/paris unscheduled"
    code, out, _ = await cli("schedules", "get", "analytics/paris", address=daemon.address)
    assert "(stopped)" in out.splitlines()[0]
    assert "stopped" in out
    assert "unscheduled on request" in out


async def test_backfill_watch_runs_each_instant_and_exits_zero(
    daemon: Daemon, plane: Plane, tmp_path: Path
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(scheduled("hourly", "{cron: '@hourly'}", QUICK_TASK))
    code, _, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 0, err
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    code, out, err = await cli(
        "backfill", "analytics/hourly", "--start", hour.isoformat(),
        "--end", (hour + timedelta(hours=3)).isoformat(), "--watch", address=daemon.address,
    )  # fmt: skip
    assert code == 0, err + out
    lines = out.splitlines()
    # A count, then a table of the instants and their runs (not the ids on one line).
    assert lines[0] == "3 instants, 3 new runs"
    assert lines[1].split() == ["SCHEDULED", "FOR", "(UTC)", "RUN", "STATUS", "NEW"]
    for k, row in enumerate(lines[2:5]):
        instant = (hour + timedelta(hours=k)).strftime("%Y-%m-%d %H:%M:%S")
        assert re.fullmatch(rf"{instant}  [0-9a-f-]{{36}}  \w+\s+yes", row), row
    notes = {row["note"] for row in await plane.rows("audit")}
    for k in range(3):
        assert (hour + timedelta(hours=k)).strftime("%Y-%m-%dT%H:%M:%SZ") in notes


async def test_schedule_errors_are_one_readable_line(daemon: Daemon, tmp_path: Path) -> None:
    code, _, err = await cli("schedule", "analytics/nothing", address=daemon.address)
    assert code == 1
    assert "NOT_FOUND: workflow analytics/nothing not found" in err
    code, _, err = await cli(
        "schedule", "analytics/nothing", "--catchup-window", "soon", address=daemon.address
    )
    assert code == 1
    assert "--catchup-window 'soon': write 90s, 30m, 2h, 1d or ISO-8601 (PT1H)" in err


async def test_schedule_and_apply_give_the_schedules_runs_an_input(
    daemon: Daemon, tmp_path: Path
) -> None:
    text = scheduled("dayly", "{cron: '@daily'}").replace(
        "schedule:",
        "input:\n  schema:\n    format: json\n    document: {type: object, required: [day]}\n"
        "schedule:",
    )
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    code, out, err = await cli("apply", "-f", str(path), "--schedule", address=daemon.address)
    assert code == 1
    assert "'day' is a required property" in err, err
    assert err.rstrip().endswith(
        "give the schedule an input its input.schema accepts in --schedule-input"
    ), err
    (tmp_path / "input.json").write_text('{"day": "2026-01-01"}')
    code, out, err = await cli(
        "apply", "-f", str(path), "--schedule", "--schedule-input", f"@{tmp_path / 'input.json'}",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await cli("schedules", "get", "analytics/dayly", address=daemon.address)
    assert code == 0, err
    assert 'input {"day": "2026-01-01"}' in out.splitlines()

    code, out, err = await cli(
        "schedule", "analytics/dayly", "--input", '{"month": 3}', address=daemon.address
    )
    assert code == 1
    assert err.startswith(
        "workflowd: INVALID_ARGUMENT: --input: does not match the workflow's input.schema"
    ), err
    code, out, err = await cli(
        "schedule", "analytics/dayly", "--input", '{"day": "d2"}', "-o", "json",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["schedule"]["input"] == {"day": "d2"}


LATER_TASK = (
    "  - count:\n"
    "      call: ExecuteDml\n"
    "      with: {nql: 'INSERT INTO company_data.later SELECT 1 AS n'}\n"
)


async def test_backfill_rerun_failed_redoes_the_failed_instants_only(
    daemon: Daemon, plane: Plane, tmp_path: Path
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(scheduled("needs-later", "{cron: '@hourly'}", LATER_TASK))
    code, _, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 0, err
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    window = ["--start", hour.isoformat(), "--end", (hour + timedelta(hours=2)).isoformat()]
    code, out, err = await cli(
        "backfill", "analytics/needs-later", *window, "--watch", address=daemon.address
    )
    assert code != 0  # both instants failed: the table is not there yet
    assert out.splitlines()[0] == "2 instants, 2 new runs", out
    await plane.load_csv("later", "n\n0\n")

    code, out, err = await cli("backfill", "analytics/needs-later", *window, address=daemon.address)
    assert code == 0, err
    assert out.splitlines()[0] == "2 instants, 0 new runs"  # the default replays nothing

    code, out, err = await cli(
        "backfill", "analytics/needs-later", *window, "--rerun", "failed", "--watch",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0, err + out
    lines = out.splitlines()
    assert lines[0] == "2 instants, 2 new runs", out
    assert all(row.split()[-1] == "yes" for row in lines[2:4]), out
    assert sorted(row["n"] for row in await plane.rows("later")) == [0, 1, 1]

    # An instant's latest run is what counts: both re-runs completed, so nothing failed is left.
    code, out, err = await cli(
        "backfill", "analytics/needs-later", *window, "--rerun", "failed", address=daemon.address
    )
    assert code == 0, err
    assert out.splitlines()[0] == "2 instants, 0 new runs", out

    # `all` runs every instant again, a completed one from its start.
    code, out, err = await cli(
        "backfill", "analytics/needs-later", *window, "--rerun", "all", "--watch",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0, err + out
    assert out.splitlines()[0] == "2 instants, 2 new runs", out
    assert sorted(row["n"] for row in await plane.rows("later")) == [0, 1, 1, 1, 1]
