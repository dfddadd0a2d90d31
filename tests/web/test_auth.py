"""Signing in to the web page with a token: an HttpOnly, SameSite=Strict cookie for that
company, never a token in a URL; each company sees only its own objects; a token revoked by a
reload stops its cookies and its live streams."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file
from tests.conftest import Daemon
from tests.engine.support import workflow
from tests.web.support import PAUSED, QUICK, Stream, Visitor, text_of
from workflowd.v1 import workflow_service_pb2 as pb


@pytest.fixture
async def daemon(start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path) -> Daemon:
    return await start_daemon(
        tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)), web_heartbeat_s=0.2
    )


@pytest.fixture
async def acme(daemon: Daemon) -> AsyncIterator[Visitor]:
    seen = Visitor(daemon)
    assert await seen.sign_in("tok-acme") == 303
    yield seen
    await seen.aclose()


async def test_pages_ask_to_sign_in_first(daemon: Daemon, visitor: Visitor) -> None:
    for path in ("/", "/runs", "/schedules"):
        status, _ = await visitor.get(path)
        assert status == 303
    async with visitor.session.get("/runs", allow_redirects=False) as resp:
        assert resp.headers["Location"] == "/login"
        assert "Set-Cookie" not in resp.headers
    status, page = await visitor.get("/login")
    assert status == 200
    assert 'type="password"' in page
    assert 'method="post"' in page
    assert (await visitor.get("/live/runs"))[0] == 401
    status, _, _ = await visitor.post("/runs/00000000-0000-4000-8000-000000000000/cancel", {})
    assert status == 401


async def test_a_known_token_signs_in_with_a_strict_http_only_cookie(
    daemon: Daemon, visitor: Visitor
) -> None:
    status, page, _ = await visitor.post("/login", {"token": "tok-nobody"})
    assert status == 401
    assert "not one this daemon knows" in page
    assert "tok-nobody" not in page
    async with visitor.session.post(
        "/login", data={"token": "tok-acme"}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/"
        cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert "tok-acme" not in cookie
    status, page = await visitor.get("/")
    assert status == 200
    assert "company acme" in text_of(page)
    # A sign-in form posted from another site is refused.
    other = Visitor(daemon)
    try:
        status, _, _ = await other.post(
            "/login", {"token": "tok-acme"}, {"Origin": "http://evil.example"}
        )
        assert status == 403
    finally:
        await other.aclose()


async def test_a_token_in_the_url_signs_no_one_in(daemon: Daemon, visitor: Visitor) -> None:
    for path in ("/?token=tok-acme", "/login?token=tok-acme"):
        _status, page = await visitor.get(path)
        assert "company acme" not in text_of(page)
    assert (await visitor.get("/runs"))[0] == 303


async def test_a_company_sees_none_of_another_companys_objects(
    daemon: Daemon, acme: Visitor
) -> None:
    mine = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=QUICK), metadata=ACME
    )
    theirs_wf = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=workflow("secret", "  - x: {set: {a: 1}}\n")),
        metadata=GLOBEX,
    )
    my_run = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=mine.workflow.id), metadata=ACME
    )
    their_run = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=theirs_wf.workflow.id), metadata=GLOBEX
    )
    status, runs = await acme.get("/runs")
    assert status == 200
    assert my_run.run.id in runs
    assert their_run.run.id not in runs
    assert "secret" not in runs
    status, home = await acme.get("/")
    assert "analytics/quick" in text_of(home)
    assert "secret" not in home
    assert (await acme.get(f"/runs/{their_run.run.id}"))[0] == 404
    assert (await acme.get(f"/workflows/{theirs_wf.workflow.id}"))[0] == 404
    assert (await acme.get("/runs", workflow=theirs_wf.workflow.id))[0] == 200
    csrf = await acme.csrf()
    status, _, _ = await acme.post(f"/runs/{their_run.run.id}/cancel", {"csrf": csrf})
    assert status == 404
    status, _, _ = await acme.post(
        f"/workflows/{theirs_wf.workflow.id}/trigger", {"csrf": csrf, "input": "{}"}
    )
    assert status == 404
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=their_run.run.id), metadata=GLOBEX)
    assert got.run.status != pb.RUN_STATUS_CANCELLED
    assert (await acme.get(f"/live/runs/{their_run.run.id}"))[0] == 404
    stream = await acme.stream("/live/runs", lambda s: bool(s.messages))
    assert their_run.run.id not in stream.messages[0].data
    assert my_run.run.id in stream.messages[0].data
    await events_until_end_for(daemon, their_run.run.id)


async def events_until_end_for(daemon: Daemon, run_id: str) -> None:
    async with asyncio.timeout(60):
        async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=GLOBEX):
            pass


async def test_a_revoked_token_stops_its_cookie_and_its_streams(
    daemon: Daemon, acme: Visitor, tmp_path: Path
) -> None:
    wf = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=PAUSED), metadata=ACME
    )
    run = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=wf.workflow.id), metadata=ACME
    )
    status, page = await acme.get(f"/runs/{run.run.id}")
    assert status == 200
    live = re.search(r'sse-connect="([^"]+)"', page)
    assert live is not None
    opened = asyncio.Event()

    def ended(stream: object) -> bool:
        opened.set()
        return False

    watching = asyncio.create_task(
        acme.stream(live.group(1), lambda s: ended(s) or any(m.event == "end" for m in s.messages))
    )
    await asyncio.wait_for(opened.wait(), 60)
    tokens_file(tmp_path / "tokens.toml", {"tok-globex": TOKENS["tok-globex"]})
    assert await daemon.app.reload_tokens()
    got = await watching
    assert got.messages[-1].event == "end"
    assert got.messages[-1].data == "signed out"
    assert (await acme.get("/runs"))[0] == 303
    status, _, _ = await acme.post(f"/runs/{run.run.id}/cancel", {"csrf": "x"})
    assert status == 401


async def test_a_reload_ends_a_revoked_tokens_idle_streams_at_once(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path
) -> None:
    # No heartbeat for 10 minutes: only the reload itself can end the idle stream in time.
    tokens = tokens_file(tmp_path / "tokens.toml", TOKENS)
    daemon = await start_daemon(tokens_file=str(tokens), web_heartbeat_s=600.0)
    visitor = Visitor(daemon)
    try:
        assert await visitor.sign_in("tok-acme") == 303
        status, page = await visitor.get("/runs")
        assert status == 200
        live = re.search(r'sse-connect="([^"]+)"', page)
        assert live is not None
        opened = asyncio.Event()

        def done(stream: Stream) -> bool:
            opened.set()  # the first rendering came: the stream is open and idle
            return any(m.event == "end" for m in stream.messages)

        watching = asyncio.create_task(visitor.stream(live.group(1), done, timeout_s=120))
        await asyncio.wait_for(opened.wait(), 60)
        tokens_file(tokens, {"tok-globex": TOKENS["tok-globex"]})
        assert await daemon.app.reload_tokens()
        got = await watching
        assert got.comments == []  # no heartbeat came: the reload ended it
        assert got.messages[-1].event == "end"
        assert got.messages[-1].data == "signed out"
    finally:
        await visitor.aclose()


async def test_signing_out_ends_the_session(daemon: Daemon, acme: Visitor) -> None:
    csrf = await acme.csrf("/")
    status, _, _ = await acme.post("/logout", {})
    assert status == 403  # no CSRF token: not even a sign-out
    status, _, location = await acme.post("/logout", {"csrf": csrf})
    assert status == 303
    assert location == "/login"
    assert (await acme.get("/runs"))[0] == 303
