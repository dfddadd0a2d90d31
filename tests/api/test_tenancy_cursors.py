"""Cursors a company sees count nothing of other companies (issue 16, item 14), on SQLite and on
PostgreSQL: the `global_seq` of its events numbers its own events only (1, 2, 3… whatever the
others do), `WatchRuns` says "ahead" only past its own last event (so bisection finds its own
count, not the store's), and a page token is sealed: it shows no sequence, and one made up is
refused."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file
from tests.conftest import Daemon
from tests.postgres import fresh_schema
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

Who = tuple[tuple[str, str], ...]


@pytest.fixture(params=["sqlite", "postgresql"])
async def daemon(
    request: pytest.FixtureRequest,
    start_daemon: Callable[..., Awaitable[Daemon]],
    tmp_path: Path,
) -> AsyncIterator[Daemon]:
    tokens = str(tokens_file(tmp_path / "tokens.toml", TOKENS))
    if request.param == "sqlite":
        yield await start_daemon(tokens_file=tokens)
        return
    with fresh_schema() as url:
        daemon = await start_daemon(tokens_file=tokens, store=url)
        yield daemon
        await daemon.app.drain()  # before its schema is dropped


async def run(daemon: Daemon, who: Who, workflow_id: str) -> str:
    triggered = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=workflow_id), metadata=who
    )
    async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=triggered.run.id), metadata=who):
        pass
    return triggered.run.id


async def created(daemon: Daemon, who: Who, name: str) -> str:
    response = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name=name)), metadata=who
    )
    return response.workflow.id


async def events_from(daemon: Daemon, who: Who, after: int, until_run: str) -> list[pb.RunEvent]:
    """The caller's events after `after`, up to the end of `until_run`."""
    events = []
    request = pb.WatchRunsRequest(after_global_seq=after)
    async for response in daemon.stub.WatchRuns(request, metadata=who):
        events.append(response.event)
        if (
            response.event.run_id == until_run
            and response.event.type == pb.RUN_EVENT_TYPE_RUN_COMPLETED
        ):
            return events
    raise AssertionError("the stream ended early")


async def test_a_companys_sequence_counts_its_own_events_only(daemon: Daemon) -> None:
    acme_flow = await created(daemon, ACME, "acme-flow")
    globex_flow = await created(daemon, GLOBEX, "globex-flow")
    first = await run(daemon, ACME, acme_flow)
    for _ in range(3):
        await run(daemon, GLOBEX, globex_flow)
    second = await run(daemon, ACME, acme_flow)

    # All of acme's events since its first: numbered 1, 2, 3… with no gap where globex's went.
    start = await events_from(daemon, ACME, 1, second)
    seqs = [1] + [e.global_seq for e in start]
    assert seqs == list(range(1, len(seqs) + 1))
    assert {e.run_id for e in start} == {first, second}
    last = seqs[-1]

    # Resuming past the company's own last event is refused; at it, allowed. Where the line
    # falls says how many events acme has, and nothing about globex's.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in daemon.stub.WatchRuns(
            pb.WatchRunsRequest(after_global_seq=last + 1), metadata=ACME
        ):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ahead of the event log" in (info.value.details() or "")
    third = await run(daemon, ACME, acme_flow)
    resumed = await events_from(daemon, ACME, last, third)
    assert [e.global_seq for e in resumed] == list(range(last + 1, last + 1 + len(resumed)))


async def test_a_page_token_shows_no_sequence_and_a_made_up_one_is_refused(
    daemon: Daemon,
) -> None:
    acme_flow = await created(daemon, ACME, "acme-flow")
    globex_flow = await created(daemon, GLOBEX, "globex-flow")
    await run(daemon, ACME, acme_flow)
    for _ in range(3):
        await run(daemon, GLOBEX, globex_flow)
    await run(daemon, ACME, acme_flow)
    page = await daemon.stub.ListRuns(pb.ListRunsRequest(page_size=1), metadata=ACME)
    token = page.next_page_token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    with pytest.raises((UnicodeDecodeError, json.JSONDecodeError)):
        json.loads(raw)  # nothing readable in it: no sequence, no fingerprint
    rest = await daemon.stub.ListRuns(
        pb.ListRunsRequest(page_size=1, page_token=token), metadata=ACME
    )
    assert len(rest.runs) == 1
    assert rest.runs[0].id != page.runs[0].id

    # One made up, as one would to probe the store's sequence, and one with a byte changed.
    made_up = base64.urlsafe_b64encode(b'{"s":2,"f":"0123456789ab"}').decode().rstrip("=")
    changed = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for forged in (made_up, changed):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await daemon.stub.ListRuns(
                pb.ListRunsRequest(page_size=1, page_token=forged), metadata=ACME
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not a token this server issued" in (info.value.details() or "")
    # Another company's use of it: a token of another listing.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.stub.ListRuns(
            pb.ListRunsRequest(page_size=1, page_token=token), metadata=GLOBEX
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
