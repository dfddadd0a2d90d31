"""The CLI's words, against a real daemon and data plane: the flags and commands a CLI user
types (not the API's parameters and RPCs), plurals, durations as `2d` and `4h30m`, tables that
stay aligned, and defaults that say what the README says."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.api.test_naming import SET_TASK, create
from tests.conftest import REPO, Daemon
from tests.engine.schedule_support import scheduled
from tests.specs import spec
from tests.test_cli import cli
from workflowd.settings import Settings
from workflowd.v1 import workflow_service_pb2 as pb


@pytest.mark.own_plane  # the datasets CLI calls the daemon's own data plane
async def test_a_dataset_load_conflict_names_the_flag(daemon: Daemon, tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    csv.write_text("id,note\n1,first\n")
    plane = ("--dataplane-url", daemon.jobs_url)
    code, out, err = await cli("datasets", "load", str(csv), "--name", "one", *plane)
    assert code == 0, err
    assert out.endswith(": 1 row, 2 columns\n"), out
    code, _, err = await cli("datasets", "load", str(csv), "--name", "one", *plane)
    assert code == 1
    assert err == "workflowd: dataset 'one' already exists; load with --replace\n"
    code, out, err = await cli("datasets", "show", "one", *plane)
    assert code == 0, err
    assert "table, 1 row)" in out.splitlines()[0]


async def test_refusals_name_commands_and_flags_not_rpcs(daemon: Daemon, tmp_path: Path) -> None:
    wf = await create(daemon, spec(tasks=SET_TASK))
    code, _, err = await cli("schedules", "get", "analytics/daily-summary", address=daemon.address)
    assert code == 1
    assert err == (
        f"workflowd: NOT_FOUND: workflow {wf.id} has no schedule: activate it with "
        "`workflowd schedule REF`\n"
    )
    path = tmp_path / "wf.yaml"
    path.write_text(spec(tasks=SET_TASK))
    code, _, err = await cli("apply", "-f", str(path), "--schedule", address=daemon.address)
    assert code == 1
    assert err.endswith("or create it without --schedule\n"), err
    assert "schedule_immediately" not in err


async def test_counts_and_durations_read_as_words(daemon: Daemon) -> None:
    await create(daemon, scheduled("every", "{every: {days: 2}}", SET_TASK))
    code, out, err = await cli(
        "schedule", "analytics/every", "--catchup-window", "PT4H30M", address=daemon.address
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "analytics/every version 1.0.0: every 2d (active)"
    assert lines[1] == "overlap SKIP, catch-up LATEST within 4h30m"
    await create(daemon, scheduled("daily", "{cron: '@daily'}", SET_TASK))
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    code, out, err = await cli(
        "backfill", "analytics/daily", "--start", (day - timedelta(days=1)).isoformat(),
        "--end", day.isoformat(), address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "1 instant, 1 new run"


async def test_schedules_list_columns_hold_a_cron_tz_schedule(daemon: Daemon) -> None:
    for name, schedule in [
        ("paris", "{cron: 'CRON_TZ=America/Argentina/Buenos_Aires 30 6 * * 1-5'}"),
        ("hourly", "{cron: '@hourly'}"),
    ]:
        await daemon.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(
                specification=scheduled(name, schedule, SET_TASK), schedule_immediately=True
            )
        )
    code, out, err = await cli("schedules", "list", address=daemon.address)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert len(rows) == 2
    for column in ("SCHEDULE", "ACTIVE", "NEXT FIRE (UTC)"):
        start = header.index(column)
        for row in rows:
            assert row[start - 2 : start] == "  ", (column, row)
            assert row[start] != " ", (column, row)
    assert "cron CRON_TZ=America/Argentina/Buenos_Aires 30 6 * * 1-5  yes" in out


def readme_defaults() -> dict[str, str]:
    """The README's settings table: flag → default."""
    found = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`--"):
            flag = cells[1].split("`")[1]
            found[flag] = cells[3].strip("`")
    return found


async def test_listen_defaults_say_what_the_readme_says() -> None:
    readme = readme_defaults()
    defaults = Settings.load({}, {})
    code, out, _ = await cli("serve", "--help")
    assert code == 0
    help_text = " ".join(out.partition("options:")[2].split())
    for flag, setting in [
        ("--listen", defaults.listen),
        ("--http-listen", defaults.http_listen),
        ("--dataplane-listen", defaults.dataplane_listen),
    ]:
        assert readme[flag] == setting, flag
        said = re.search(rf" {flag} [A-Z_]+ (?:(?! --).)*?\(default (\S+?)\)", help_text)
        assert said, flag
        assert said.group(1) == setting, flag
    code, out, _ = await cli("dataplane", "serve", "--help")
    assert f"(default {defaults.dataplane_listen})" in " ".join(out.split())


def test_the_license_is_an_spdx_expression() -> None:
    """setuptools deprecates the table form (and warns on every install); the string form
    needs setuptools 77."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]
