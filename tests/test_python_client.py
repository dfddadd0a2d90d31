"""`workflowd.Client` and `workflowd.AsyncClient` against a real daemon: plain dataclasses out,
Python exceptions carrying the problem, pages iterated, watches that survive a restart, tokens
and TLS as the CLI has them."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

import workflowd
from tests.api.test_naming import create, nightly
from tests.api.test_tenancy import TOKENS, tokens_file
from tests.conftest import Daemon
from tests.engine.support import workflow
from tests.tls import make_pki
from workflowd.v1 import workflow_service_pb2 as pb

FAILING = (
    "  - ok:\n      set: {n: 5}\n"
    "  - boom:\n      raise:\n"
    "        error: {type: 'https://example.com/boom', status: 500, title: boom, detail: it broke}\n"
)
WAITING = "  - pause:\n      wait: PT1H\n"


def plain(value: Any) -> None:
    """No protobuf anywhere in what the client returns: dataclasses, enums and JSON data."""
    assert not isinstance(value, Message), value
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            plain(getattr(value, field.name))
    elif isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            plain(item)
    else:
        assert value is None or isinstance(value, str | int | float | bool | datetime | Enum)


async def in_thread(work: Callable[[], Any]) -> Any:
    """Blocking client code, off the test's event loop (which serves the daemon)."""
    return await asyncio.to_thread(work)


async def test_trigger_wait_and_watch(daemon: Daemon) -> None:
    await create(daemon, nightly())

    def use() -> tuple[workflowd.Run, workflowd.Run, list[workflowd.RunEvent]]:
        with workflowd.Client(daemon.address) as client:
            run = client.trigger("finance/nightly", input={"day": "2026-01-31", "n": 5})
            done = client.wait(run.id)
            return run, done, list(client.watch(run.id))

    run, done, events = await in_thread(use)
    assert run.status == workflowd.RunStatus.PENDING
    assert run.workflow == "finance/nightly"
    assert run.input == {"day": "2026-01-31", "n": 5}
    assert type(run.input["n"]) is int
    assert done.status == "completed"
    assert done.trigger == workflowd.Trigger.MANUAL
    assert [t.name for t in done.tasks] == ["note"]
    assert done.tasks[0].status == workflowd.TaskStatus.COMPLETED
    assert done.tasks[0].output == {"done": True}
    assert done.started_at is not None
    assert done.ended_at is not None
    assert done.ended_at >= done.started_at
    plain(done)
    plain(events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == workflowd.EventType.RUN_CREATED
    assert events[-1].type.ends_run
    assert events[-1].run_status == workflowd.RunStatus.COMPLETED


async def test_a_failed_run_raises_with_its_problem(daemon: Daemon) -> None:
    await create(daemon, workflow("failing", FAILING))

    def use() -> tuple[workflowd.RunFailed, workflowd.Run]:
        with workflowd.Client(daemon.address) as client:
            run = client.trigger("analytics/failing")
            with pytest.raises(workflowd.RunFailed) as info:
                client.wait(run.id)
            return info.value, client.wait(run.id, check=False)

    failed, run = await in_thread(use)
    assert failed.problem == workflowd.Problem(
        type="https://example.com/boom",
        status=500,
        title="boom",
        detail="it broke",
        instance="/do/1/boom",
    )
    assert failed.run == run
    assert str(failed) == f"run {run.id} of analytics/failing failed: boom"
    assert run.status == workflowd.RunStatus.FAILED
    assert run.error == failed.problem


FAILS_ON_ASK = (
    "  - ok:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: 'SELECT 5 AS n', datasetName: five}\n"
    "  - boom:\n      if: '$workflow.input.fail'\n      raise:\n"
    "        error: {type: 'https://example.com/boom', status: 500, title: boom}\n"
    "  - done:\n      set: {finished: true}\n"
)


async def test_rerun_from_the_failure_with_another_input(daemon: Daemon) -> None:
    await create(daemon, workflow("flaky", FAILS_ON_ASK))

    def use() -> tuple[workflowd.Run, workflowd.Run]:
        with workflowd.Client(daemon.address) as client:
            first = client.trigger("analytics/flaky", input={"fail": True})
            failed = client.wait(first.id, check=False)
            again = client.rerun(failed.id, input={"fail": False})
            return failed, client.wait(again.id)

    failed, again = await in_thread(use)
    plain(again)
    assert failed.status == workflowd.RunStatus.FAILED
    assert failed.rerun_of == ""
    assert again.trigger == workflowd.Trigger.RERUN
    assert again.rerun_of == failed.id
    assert again.status == workflowd.RunStatus.COMPLETED
    assert again.input == {"fail": False}
    assert again.output == {"finished": True}
    by_name = {task.name: task for task in again.tasks}
    assert by_name["ok"].reused  # its job is the original's, not sent again
    assert by_name["ok"].job_id == {task.name: task for task in failed.tasks}["ok"].job_id
    assert not by_name["done"].reused


async def test_cancel_and_a_cancelled_run(daemon: Daemon) -> None:
    await create(daemon, workflow("slow", WAITING))

    def use() -> tuple[workflowd.Run, workflowd.RunCancelled]:
        with workflowd.Client(daemon.address) as client:
            run = client.trigger("analytics/slow")
            for event in client.watch(run.id):
                if event.type == workflowd.EventType.TASK_WAITING:
                    break  # leaving early ends the stream on the daemon too
            asked = client.cancel(run.id, reason="not today")
            with pytest.raises(workflowd.RunCancelled) as info:
                client.wait(run.id)
            return asked, info.value

    asked, cancelled = await in_thread(use)
    assert asked.status in (workflowd.RunStatus.CANCELLING, workflowd.RunStatus.CANCELLED)
    assert cancelled.problem is None
    assert cancelled.run.cancel_reason == "cancelled on request: not today"


async def test_runs_iterates_every_page(daemon: Daemon) -> None:
    await create(daemon, nightly())
    await create(daemon, workflow("failing", FAILING))

    def use() -> dict[str, list[str]]:
        with workflowd.Client(daemon.address) as client:
            ids = [client.wait(client.trigger("finance/nightly").id).id for _ in range(5)]
            failed = client.wait(client.trigger("analytics/failing").id, check=False)
            hour_ago = datetime.now(UTC) - timedelta(hours=1)
            return {
                "made": ids,
                "all": [r.id for r in client.runs(page_size=2)],
                "nightly": [r.id for r in client.runs(workflow="finance/nightly", page_size=2)],
                "finance": [r.id for r in client.runs(namespace="finance", since=hour_ago)],
                "failed": [r.id for r in client.runs(status=["failed", "cancelled"])],
                "one": [r.id for r in client.runs(status=workflowd.RunStatus.FAILED)],
                "none": [r.id for r in client.runs(until=hour_ago)],
                "failed_id": [failed.id],
            }

    got = await in_thread(use)
    assert got["nightly"] == list(reversed(got["made"]))  # newest first, across three pages
    assert got["finance"] == got["nightly"]
    assert got["all"] == got["failed_id"] + got["nightly"]
    assert got["failed"] == got["one"] == got["failed_id"]
    assert got["none"] == []


async def test_refusals_are_exceptions_with_code_message_and_fields(daemon: Daemon) -> None:
    text = nightly().replace("do:\n", "input:\n  schema:\n    document: {required: [day]}\ndo:\n")
    await create(daemon, text)

    def use() -> list[workflowd.CallError]:
        errors: list[workflowd.CallError] = []
        with workflowd.Client(daemon.address) as client:
            for attempt in (
                lambda: client.trigger("finance/nightly", input={"n": 1}),
                lambda: client.run("0b0c0d0e-0000-4000-8000-00000000abcd"),
                lambda: client.trigger("finance"),
                lambda: client.apply("document: {}\n"),
                lambda: client.workflow("finance/missing"),
                lambda: list(client.runs(workflow="finance/nightly", namespace="ops")),
            ):
                with pytest.raises(workflowd.CallError) as info:
                    attempt()
                errors.append(info.value)
        return errors

    bad_input, no_run, bad_ref, bad_spec, no_workflow, two_names = await in_thread(use)
    assert isinstance(bad_input, workflowd.InvalidArgument)
    assert bad_input.code == "INVALID_ARGUMENT"
    assert bad_input.violations[0].field == "input"
    assert "'day' is a required property" in bad_input.violations[0].description
    assert isinstance(no_run, workflowd.NotFound)
    assert no_run.message == "run 0b0c0d0e-0000-4000-8000-00000000abcd not found"
    assert isinstance(bad_ref, workflowd.InvalidArgument)
    assert "name a workflow by its workflow_id, or by namespace and name" in bad_ref.message
    assert isinstance(bad_spec, workflowd.InvalidArgument)
    assert all(v.field.startswith("specification") for v in bad_spec.violations)
    assert isinstance(no_workflow, workflowd.NotFound)
    assert str(no_workflow) == "NOT_FOUND: workflow finance/missing not found"
    assert isinstance(two_names, workflowd.InvalidArgument)
    assert "give one of them" in two_names.message


async def test_an_unreachable_daemon_is_unavailable() -> None:
    def use() -> None:
        with workflowd.Client("127.0.0.1:1", timeout_s=5) as client:
            client.run("0b0c0d0e-0000-4000-8000-00000000abcd")

    with pytest.raises(workflowd.Unavailable):
        await in_thread(use)


async def test_the_async_client(daemon: Daemon) -> None:
    await create(daemon, nightly())
    async with workflowd.AsyncClient(daemon.address) as client:
        run = await client.trigger("finance/nightly", idempotency_key="k1")
        again = await client.trigger("finance/nightly", idempotency_key="k1")
        assert again.id == run.id
        kinds = [event.type async for event in client.watch(run.id)]
        assert kinds[-1] == workflowd.EventType.RUN_COMPLETED
        done = await client.wait(run.id)
        assert done.status == workflowd.RunStatus.COMPLETED
        assert [r.id async for r in client.runs(workflow="finance/nightly")] == [run.id]
        wf = await client.workflow("finance/nightly")
        assert wf.specification == nightly()
        assert wf.versions == ("1.0.0",)
        assert not wf.archived
        applied = await client.apply(nightly(name="second"), tags=["nightly"])
        assert (applied.namespace, applied.name, applied.tags) == (
            "finance",
            "second",
            ("nightly",),
        )
        slow = await client.apply(workflow("slow", WAITING))
        waiting = await client.trigger(f"{slow.namespace}/{slow.name}")
        with pytest.raises(TimeoutError):
            await client.wait(waiting.id, timeout_s=0.5)


async def test_a_watch_resumes_across_a_daemon_restart(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    daemon = await start_daemon(data_dir)
    await create(daemon, workflow("slow", WAITING))
    async with workflowd.AsyncClient(daemon.address, reconnect_s=60) as client:
        run = await client.trigger("analytics/slow")
        seen: list[workflowd.RunEvent] = []
        waiting = asyncio.Event()

        async def follow() -> None:
            async for event in client.watch(run.id):
                seen.append(event)
                if event.type == workflowd.EventType.TASK_WAITING:
                    waiting.set()

        watching = asyncio.create_task(follow())
        await asyncio.wait_for(waiting.wait(), 30)
        before = len(seen)
        await daemon.app.drain()  # the watch is ended with UNAVAILABLE
        again = await start_daemon(data_dir, listen=daemon.address)
        # The run waits an hour: only this ends it. (gRPC shares a connection between
        # channels to one address, and this one's was refused a moment ago: wait for it.)
        request = pb.CancelRunRequest(run_id=run.id)
        await again.stub.CancelRun(request, wait_for_ready=True, timeout=30)
        await asyncio.wait_for(watching, 60)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # nothing missed or repeated
    assert seen[before - 1].type == workflowd.EventType.TASK_WAITING
    assert [e.type for e in seen[before:]][-1] == workflowd.EventType.RUN_CANCELLED


async def test_tokens_and_tls_as_the_cli_has_them(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    daemon = await start_daemon(
        tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
    )
    token_path = tmp_path / "token"
    token_path.write_text("tok-acme\n")
    env = {
        "WORKFLOWD_ADDRESS": daemon.address,
        "WORKFLOWD_TOKEN_FILE": str(token_path),
        "WORKFLOWD_TLS_CA": str(pki.ca),
    }

    def use() -> tuple[str, workflowd.CallError]:
        with workflowd.Client.from_env(env) as client:
            applied = client.apply(nightly())
        other = workflowd.Client(daemon.address, tls_ca=pki.ca, token="tok-globex")
        with other, pytest.raises(workflowd.NotFound) as info:
            other.workflow(f"{applied.namespace}/{applied.name}")
        anonymous = workflowd.Client(daemon.address, tls_ca=pki.ca)
        with anonymous, pytest.raises(workflowd.Unauthenticated) as refused:
            anonymous.workflow(applied.id)
        assert info.value.code == "NOT_FOUND"
        return applied.name, refused.value

    name, refused = await in_thread(use)
    assert name == "nightly"
    assert "authorization: Bearer <token>" in refused.message


def test_importing_workflowd_loads_no_grpc() -> None:
    """The daemon and the CLI import `workflowd`; the client (and gRPC) loads on first use."""
    probe = (
        "import sys, workflowd\n"
        "assert 'grpc' not in sys.modules and 'workflowd.client' not in sys.modules\n"
        "workflowd.Client\n"
        "assert 'grpc' in sys.modules\n"
        "print(sorted(set(workflowd.__all__) - set(dir(workflowd.client))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['__version__']\n"
