"""How the CLI reads what people type for a workflow or a run, against a real daemon: a name
without its namespace is answered with what would work (and the namespace that holds it), a
refusal names its field once, a run is found by the start of its id as git finds a commit."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from tests.api.test_naming import SET_TASK, create, nightly
from tests.conftest import Daemon
from tests.engine.schedule_support import scheduled, ts
from tests.engine.support import finished
from tests.test_cli import cli
from workflowd.v1 import workflow_service_pb2 as pb

FORMS = "write NAMESPACE/NAME (as analytics/daily-summary) or the workflow's id"


async def test_a_name_without_its_namespace_gets_the_namespace_suggested(daemon: Daemon) -> None:
    await create(daemon, nightly(name="daily-revenue"))
    for args in (("trigger", "daily-revenue"), ("runs", "list", "--workflow", "daily-revenue")):
        code, out, err = await cli(*args, address=daemon.address)
        assert code == 1, out
        assert err == (
            "workflowd: 'daily-revenue' is not a workflow reference: did you mean "
            "finance/daily-revenue? Write NAMESPACE/NAME or the workflow's id\n"
        ), args
    code, _, err = await cli("trigger", "nope", address=daemon.address)
    assert code == 1
    assert err == (
        f"workflowd: 'nope' is not a workflow reference, and no workflow has that name: {FORMS} "
        "(`workflowd workflows list` lists them)\n"
    )
    await create(daemon, nightly(namespace="sales", name="daily-revenue"))
    code, _, err = await cli("schedules", "get", "daily-revenue", address=daemon.address)
    assert code == 1
    assert "workflows of that name are " in err
    assert "finance/daily-revenue" in err
    assert "sales/daily-revenue" in err
    code, _, err = await cli("trigger", "a/b/c", address=daemon.address)
    assert err == f"workflowd: 'a/b/c' is not a workflow reference: {FORMS}\n"


async def test_a_refusal_names_its_field_once(daemon: Daemon) -> None:
    await create(daemon, nightly())
    code, _, err = await cli(
        "trigger", "finance/nightly", "--version", "x" * 70, address=daemon.address
    )
    assert code == 1
    assert err.count("--version") == 1, err
    assert err.startswith("workflowd: INVALID_ARGUMENT: --version: 'xxx"), err
    assert len(err.splitlines()) == 1
    code, _, err = await cli(
        "schedule", "finance/nightly", "--catchup-window", "400d", address=daemon.address
    )
    assert err == (
        "workflowd: INVALID_ARGUMENT: --catchup-window: must be between 0 and 366 days\n"
    )


async def test_runs_list_takes_a_namespace(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    other = await create(daemon, scheduled("other", "{cron: '@daily'}", SET_TASK))
    run = await finished(
        daemon,
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id))).run.id,
    )
    await finished(
        daemon,
        (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=other.id))).run.id,
    )
    code, out, err = await cli(
        "runs", "list", "--namespace", "finance", "-o", "json", address=daemon.address
    )
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["runs"]] == [run.id]
    code, _, err = await cli(
        "runs", "list", "--namespace", "finance", "--workflow", "finance/nightly",
        address=daemon.address,
    )  # fmt: skip
    assert code == 2
    assert "give --workflow or --namespace" in err
    # An option a command does not know is refused by that command, with its own usage.
    code, _, err = await cli("runs", "list", "--bogus", "1", address=daemon.address)
    assert code == 2
    assert err.startswith("usage: workflowd runs list ")
    assert "workflowd runs list: error: unrecognized arguments: --bogus 1" in err


async def test_a_run_is_found_by_the_start_of_its_id(daemon: Daemon) -> None:
    wf = await create(daemon, nightly())
    run = (await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id))).run
    await finished(daemon, run.id)
    code, out, err = await cli("runs", "get", run.id[:8], address=daemon.address)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"run {run.id}  finance/nightly")
    code, out, err = await cli("runs", "watch", run.id[:8].upper(), address=daemon.address)
    assert code == 0, err
    assert f"run {run.id} completed" in out
    code, _, err = await cli("runs", "get", run.id[:3], address=daemon.address)
    assert code == 1
    assert err == (
        f"workflowd: '{run.id[:3]}' is not a run id: give the id, or its first 4 characters or "
        "more\n"
    )
    absent = "0000" if not run.id.startswith("0000") else "ffff"
    code, _, err = await cli("runs", "get", absent, address=daemon.address)
    assert code == 1
    assert f"no run has an id starting with {absent}" in err


async def test_an_ambiguous_start_lists_the_runs_it_could_be(daemon: Daemon) -> None:
    # A backfill of 1000 hourly instants (runs that wait their turn, so nothing executes)
    # gives ids that share 4-character starts: with 1000 random ids, a pair does with
    # probability 1 - e^-7.6; a second backfill, should the first have none, makes it certain
    # in practice.
    text = scheduled("hourly", "{cron: '@hourly'}", "  - pause:\n      wait: PT1H\n")
    await create(daemon, text)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ids: list[str] = []
    for batch in range(4):
        end = hour - timedelta(hours=1000 * batch)
        filled = await daemon.stub.BackfillWorkflow(
            pb.BackfillWorkflowRequest(
                namespace="analytics", name="hourly",
                start_time=ts(end - timedelta(hours=1000)), end_time=ts(end),
            )
        )  # fmt: skip
        ids += filled.run_ids
        starts: dict[str, list[str]] = {}
        for run_id in ids:
            starts.setdefault(run_id[:4], []).append(run_id)
        shared = [group for group in starts.values() if len(group) > 1]
        if shared:
            break
    assert shared, "no two of 4000 run ids share their first 4 characters"
    group = shared[0]
    code, _, err = await cli("runs", "cancel", group[0][:4], address=daemon.address)
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == f"workflowd: {group[0][:4]} starts more than one run id; give more of it:"
    listed = [line.split()[0] for line in lines[1:] if re.match(r"  [0-9a-f]{8}-", line)]
    assert set(group) <= set(listed)
    assert all(line.endswith("analytics/hourly") for line in lines[1:] if line != "  …")
    # Nothing was cancelled: an ambiguous id stops the command before it acts.
    for run_id in group:
        got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))
        assert got.run.status in (pb.RUN_STATUS_PENDING, pb.RUN_STATUS_RUNNING)
