"""The web page over plain HTTP: what it shows, its filters and keyset pages, its actions and
their CSRF guard, and its live streams (resumed with Last-Event-ID, with heartbeats)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from tests.conftest import Daemon, eventually
from tests.engine.support import apply, finished, jv, trigger, workflow
from tests.web.support import BROKEN, PAUSED, QUICK, Stream, Visitor, base_url, text_of
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.web.server import CSP


async def test_the_runs_page_lists_runs_with_their_columns(
    daemon: Daemon, visitor: Visitor
) -> None:
    wf = await apply(daemon, QUICK)
    run = await trigger(daemon, wf.id)
    done = await finished(daemon, run.id)
    status, page = await visitor.get("/runs")
    assert status == 200
    row = re.search(rf'<tr id="run-{run.id}">.*?</tr>', page)
    assert row is not None, page
    shown = text_of(row.group(0))
    assert "analytics/quick" in shown
    assert "completed" in shown
    assert "manual" in shown
    took = done.ended_at.ToDatetime() - done.started_at.ToDatetime()
    assert ("ms" in shown) == (took.total_seconds() < 1)


async def test_pages_carry_a_strict_content_security_policy(
    daemon: Daemon, visitor: Visitor
) -> None:
    async with visitor.session.get("/runs") as resp:
        assert resp.headers["Content-Security-Policy"] == CSP
        assert "'unsafe-inline'" not in CSP
        assert "'unsafe-eval'" not in CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        page = await resp.text()
    assert "<script>" not in page
    assert " style=" not in page
    assert " on" + "click" not in page
    for src in re.findall(r'<script src="([^"]+)"', page):
        async with visitor.session.get(src) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/javascript")
    status, _ = await visitor.get("/static/../app.py")
    assert status == 404


async def test_metrics_and_health_are_still_served(daemon: Daemon, visitor: Visitor) -> None:
    assert (await visitor.get("/healthz"))[0] == 200
    status, text = await visitor.get("/metrics")
    assert status == 200
    assert "workflowd_" in text


async def test_without_the_web_page_the_root_is_not_found(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(web_enabled=False)
    visitor = Visitor(daemon)
    try:
        assert (await visitor.get("/"))[0] == 404
        assert (await visitor.get("/metrics"))[0] == 200
    finally:
        await visitor.aclose()


async def test_filters_select_by_workflow_statuses_trigger_and_time(
    daemon: Daemon, visitor: Visitor
) -> None:
    quick = await apply(daemon, QUICK)
    broken = await apply(daemon, BROKEN)
    ok = await finished(daemon, (await trigger(daemon, quick.id)).id)
    bad = await finished(daemon, (await trigger(daemon, broken.id)).id)
    rerun = (await daemon.stub.RerunRun(pb.RerunRunRequest(run_id=bad.id))).run
    await finished(daemon, rerun.id)

    async def shown(**params: object) -> set[str]:
        status, page = await visitor.get("/runs", **params)
        assert status == 200, page
        return set(re.findall(r'<tr id="run-([0-9a-f-]+)">', page))

    assert await shown() == {ok.id, bad.id, rerun.id}
    assert await shown(workflow=quick.id) == {ok.id}
    assert await shown(status="failed") == {bad.id, rerun.id}
    assert await shown(status=["failed", "completed"]) == {ok.id, bad.id, rerun.id}
    assert await shown(trigger="rerun") == {rerun.id}
    assert await shown(trigger="manual", status="failed") == {bad.id}
    created = ok.created_at.ToDatetime().isoformat()
    assert await shown(after=created, tz="UTC") == {bad.id, rerun.id}
    assert await shown(before=created + "+00:00", tz="Europe/Kyiv") == set()
    assert await shown(before="2000-01-01T00:00", tz="Europe/Kyiv") == set()
    for params, field in (
        ({"status": "done"}, "status"),
        ({"trigger": "cron"}, "trigger"),
        ({"workflow": "nope"}, "workflow"),
        ({"after": "yesterday"}, "after"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"page": "forged"}, "page_token"),
    ):
        status, page = await visitor.get("/runs", **params)
        assert status == 400, (params, page)
        assert f"{field}:" in text_of(page)


async def test_runs_come_in_keyset_pages_that_hold_under_inserts(
    daemon: Daemon, visitor: Visitor
) -> None:
    wf = await apply(daemon, PAUSED)
    ids = [(await trigger(daemon, wf.id)).id for _ in range(55)]
    status, first = await visitor.get("/runs")
    assert status == 200
    on_first = re.findall(r'<tr id="run-([0-9a-f-]+)">', first)
    assert on_first == list(reversed(ids))[:50]
    older = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert older is not None
    newer = (await trigger(daemon, wf.id)).id  # a run created meanwhile moves no page
    status, second = await visitor.get(older.group(1).replace("&amp;", "&"))
    assert status == 200, (older.group(1), text_of(second))
    assert re.findall(r'<tr id="run-([0-9a-f-]+)">', second) == list(reversed(ids))[50:]
    assert 'rel="next"' not in second
    assert newer not in second


async def test_the_workflows_page_shows_versions_schedules_cells_and_last_success(
    daemon: Daemon, visitor: Visitor
) -> None:
    text = workflow(
        "nightly",
        "  - build:\n      call: CreateMaterializedViewIfNotExists\n"
        "      with: {nql: SELECT 1 AS one, datasetName: nightly_view}\n",
        extra="schedule:\n  cron: CRON_TZ=Europe/Paris 0 2 * * *\n",
    )
    wf = (
        await daemon.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(specification=text, schedule_immediately=True)
        )
    ).workflow
    good = await finished(daemon, (await trigger(daemon, wf.id)).id)
    status, page = await visitor.get("/")
    assert status == 200
    shown = text_of(page)
    assert "analytics/nightly" in shown
    assert "1.0.0" in shown
    assert "02:00:00 Europe/Paris" in shown  # the next fires, in the schedule's zone
    fires = re.findall(r'<ul class="fires".*?</ul>', page)
    assert len(fires) == 1
    assert fires[0].count("<time") == 3
    assert f'class="cell st-completed" href="/runs/{good.id}"' in page
    assert good.ended_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") in shown
    status, schedules = await visitor.get("/schedules")
    assert status == 200
    assert "analytics/nightly" in text_of(schedules)
    assert "No decision yet." in text_of(schedules)


async def test_a_run_page_shows_its_timeline_jobs_and_the_failing_lines(
    daemon: Daemon, visitor: Visitor
) -> None:
    quick = await apply(daemon, QUICK)
    ok = await finished(daemon, (await trigger(daemon, quick.id)).id)
    status, page = await visitor.get(f"/runs/{ok.id}")
    assert status == 200
    assert ok.tasks[0].job_id
    assert ok.tasks[0].job_id in page
    assert '<svg class="bar"' in page
    assert "fill-completed" in page
    assert "sse-connect" not in page  # an ended run has no live stream
    broken = await apply(daemon, BROKEN)
    bad = await finished(daemon, (await trigger(daemon, broken.id)).id)
    status, page = await visitor.get(f"/runs/{bad.id}")
    assert status == 200
    shown = text_of(page)
    assert "it broke" in shown
    assert "https://example.com/errors/boom" in shown
    highlighted = [
        text_of(line) for line in re.findall(r'<span class="line hl"[^>]*>.*?</span>', page)
    ]
    assert highlighted[0].strip() == "- boom:"
    assert any("it broke" in line for line in highlighted)
    assert not any("never" in line or "prepare" in line for line in highlighted)
    assert "Re-run from failure" in shown
    assert (await visitor.get("/runs/00000000-0000-4000-8000-000000000000"))[0] == 404
    status, said = await visitor.get("/runs/not-a-run")
    assert status == 400
    assert "run_id" in text_of(said)


async def test_actions_need_the_csrf_token_and_the_same_origin(
    daemon: Daemon, visitor: Visitor
) -> None:
    wf = await apply(daemon, PAUSED)
    run = await trigger(daemon, wf.id)
    csrf = await visitor.csrf()
    status, page, _ = await visitor.post(f"/runs/{run.id}/cancel", {})
    assert status == 403
    assert "CSRF" in page
    status, _, _ = await visitor.post(f"/runs/{run.id}/cancel", {"csrf": "0" * 64})
    assert status == 403
    status, page, _ = await visitor.post(
        f"/runs/{run.id}/cancel", {"csrf": csrf}, {"Origin": "http://evil.example"}
    )
    assert status == 403
    assert "origin" in page
    status, _, _ = await visitor.post(
        f"/runs/{run.id}/cancel", {"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403
    got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))
    assert got.run.status == pb.RUN_STATUS_RUNNING or got.run.status == pb.RUN_STATUS_PENDING
    # Another visitor's token is not this one's.
    other = Visitor(daemon)
    try:
        theirs = await other.csrf()
    finally:
        await other.aclose()
    assert theirs != csrf
    assert (await visitor.post(f"/runs/{run.id}/cancel", {"csrf": theirs}))[0] == 403
    status, _, location = await visitor.post(
        f"/runs/{run.id}/cancel", {}, {"X-CSRF-Token": csrf, "Origin": base_url(daemon)}
    )
    assert status == 303
    assert location == f"/runs/{run.id}"
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert "from the web page" in done.cancel_reason


async def test_rerun_from_failure_and_trigger_with_checked_input(
    daemon: Daemon, visitor: Visitor
) -> None:
    broken = await apply(daemon, BROKEN)
    bad = await finished(daemon, (await trigger(daemon, broken.id)).id)
    csrf = await visitor.csrf()
    status, _, location = await visitor.post(
        f"/runs/{bad.id}/rerun", {"csrf": csrf, "start": "failure"}
    )
    assert status == 303
    rerun_id = location.removeprefix("/runs/")
    rerun = await finished(daemon, rerun_id)
    assert rerun.rerun_of == bad.id
    assert rerun.status == pb.RUN_STATUS_FAILED
    assert any(t.reused for t in rerun.tasks)

    typed = workflow(
        "typed",
        "  - echo: {set: {n: '${ .n }'}}\n",
        extra=(
            "input:\n  schema:\n    format: json\n    document:\n      type: object\n"
            "      required: [n]\n      properties: {n: {type: integer}}\n"
        ),
    )
    wf = await apply(daemon, typed)
    check = f"/workflows/{wf.id}/check-input"
    status, said, _ = await visitor.post(check, {"input": '{"n": "x"}'}, {"X-CSRF-Token": csrf})
    assert status == 200
    assert "input/n" in said
    assert "input.schema" in said
    status, said, _ = await visitor.post(check, {"input": "{oops"}, {"X-CSRF-Token": csrf})
    assert status == 200
    assert "is not JSON" in said
    status, said, _ = await visitor.post(check, {"input": '{"n": 3}'}, {"X-CSRF-Token": csrf})
    assert status == 200
    assert "matches" in said
    before = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id))
    status, page, _ = await visitor.post(
        f"/workflows/{wf.id}/trigger", {"csrf": csrf, "input": '{"n": "x"}'}
    )
    assert status == 400
    assert "input/n" in text_of(page)
    assert '{"n": "x"}' in text_of(page)  # what was typed stays to be fixed
    after = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id))
    assert len(after.runs) == len(before.runs) == 0
    status, _, location = await visitor.post(
        f"/workflows/{wf.id}/trigger", {"csrf": csrf, "input": '{"n": 3}'}
    )
    assert status == 303
    done = await finished(daemon, location.removeprefix("/runs/"))
    assert done.status == pb.RUN_STATUS_COMPLETED
    assert done.input == jv({"n": 3})


async def test_a_run_streams_until_its_end_and_resumes_with_last_event_id(
    daemon: Daemon, visitor: Visitor
) -> None:
    wf = await apply(daemon, QUICK)
    run = await trigger(daemon, wf.id)
    status, page = await visitor.get(f"/runs/{run.id}")
    assert status == 200
    live = re.search(r'sse-connect="([^"]+)"', page)
    if live is None:  # it ended before the page was read
        assert "completed" in text_of(page)
        live_url = f"/live/runs/{run.id}"
    else:
        live_url = live.group(1)
    got = await visitor.stream(live_url, lambda s: any(m.event == "end" for m in s.messages))
    names = [m.event for m in got.messages]
    assert names[-1] == "end"
    timelines = [m for m in got.messages if m.event == "timeline"]
    assert "fill-completed" in timelines[-1].data
    ids = [m.id for m in got.messages if m.id is not None]
    assert ids == sorted(ids)
    done = await finished(daemon, run.id)
    last = ids[-1]
    # Resuming after the run's last event: only the end, at once.
    again = await visitor.stream(
        live_url,
        lambda s: any(m.event == "end" for m in s.messages),
        headers={"Last-Event-ID": str(last)},
    )
    assert [m.event for m in again.messages][-1] == "end"
    assert done.status == pb.RUN_STATUS_COMPLETED


async def test_the_runs_stream_resumes_after_last_event_id_and_sends_heartbeats(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    daemon = await start_daemon(web_heartbeat_s=0.2)
    visitor = Visitor(daemon)
    try:
        wf = await apply(daemon, QUICK)
        first = await finished(daemon, (await trigger(daemon, wf.id)).id)
        fresh = await visitor.stream("/live/runs", lambda s: bool(s.messages))
        seen = fresh.messages[0]
        assert seen.event == "runs"
        assert first.id in seen.data
        assert seen.id == 0
        second = await finished(daemon, (await trigger(daemon, wf.id)).id)
        # Resuming from before the second run's events replays them into one fresh rendering.
        resumed = await visitor.stream(
            "/live/runs", lambda s: bool(s.messages), headers={"Last-Event-ID": "1"}
        )
        message = resumed.messages[0]
        assert second.id in message.data
        assert first.id in message.data
        assert message.id is not None
        assert message.id > 1
        quiet = await visitor.stream(
            "/live/runs",
            lambda s: len(s.comments) >= 2,
            headers={"Last-Event-ID": str(message.id)},
        )
        assert quiet.comments[:2] == ["heartbeat", "heartbeat"]
        assert quiet.messages == []
        # A filtered stream renders the filtered page.
        failed_only = await visitor.stream("/live/runs?status=failed", lambda s: bool(s.messages))
        assert "No runs match." in failed_only.messages[0].data
    finally:
        await visitor.aclose()


async def test_the_runs_stream_sends_a_change_as_it_happens(
    daemon: Daemon, visitor: Visitor
) -> None:
    wf = await apply(daemon, PAUSED)
    status, _ = await visitor.get("/runs")
    assert status == 200

    async def watch() -> str:
        got = await visitor.stream(
            "/live/runs",
            lambda s: any("pending" in m.data or "running" in m.data for m in s.messages[1:]),
        )
        return got.messages[-1].data

    watching = asyncio.create_task(watch())
    await eventually(lambda: _has_watchers(daemon))
    run = await trigger(daemon, wf.id)
    data = await watching
    assert run.id in data


async def _has_watchers(daemon: Daemon) -> bool:
    return daemon.app.hub.watchers > 0


async def test_the_workflows_grid_follows_runs_live(daemon: Daemon, visitor: Visitor) -> None:
    wf = await apply(daemon, QUICK)
    status, page = await visitor.get("/")
    assert status == 200
    assert 'sse-connect="/live/workflows"' in page

    def completed_cell(stream: Stream) -> bool:
        return any("st-completed" in m.data for m in stream.messages)

    watching = asyncio.create_task(visitor.stream("/live/workflows", completed_cell))
    await eventually(lambda: _has_watchers(daemon))
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    got = await watching
    assert "analytics/quick" in got.messages[0].data
    assert f'class="cell st-completed" href="/runs/{run.id}"' in got.messages[-1].data
