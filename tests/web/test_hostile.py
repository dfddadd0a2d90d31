"""Whatever a visitor sends gets a clear answer (what and where), never a 500 or a traceback."""

from __future__ import annotations

import io

from tests.conftest import Daemon
from tests.engine.support import apply, finished, trigger
from tests.web.support import BROKEN, Visitor, text_of


async def test_hostile_requests_get_clear_refusals(daemon: Daemon, visitor: Visitor) -> None:
    wf = await apply(daemon, BROKEN)
    failed = await finished(daemon, (await trigger(daemon, wf.id)).id)
    csrf = await visitor.csrf()
    for path, said in (
        ("/runs?status=%FF", "status:"),
        ("/runs?after=2026-13-40T99:99", "after:"),
        ("/runs?tz=../../etc/passwd", "tz:"),
        ("/workflows/not-a-workflow", "workflow_id:"),
        ("/live/runs/not-a-run", "run_id:"),
        ("/?page=AAAA", "page_token:"),
        ("/schedules?page=%00", "page_token:"),
    ):
        status, page = await visitor.get(path)
        assert status == 400, (path, page)
        assert said in text_of(page), path
        assert "Traceback" not in page
    posts = (
        (f"/runs/{failed.id}/rerun", {"csrf": csrf, "start": "nowhere"}, 400, "start"),
        (f"/workflows/{wf.id}/trigger", {"csrf": csrf, "input": "[" * 100_000}, 400, "input"),
        (f"/workflows/{wf.id}/trigger", {"csrf": csrf, "input": "1e999999"}, 400, "input"),
        ("/runs/00000000-0000-4000-8000-000000000000/cancel", {"csrf": csrf}, 404, "not found"),
    )
    for path, data, code, said in posts:
        status, page, _ = await visitor.post(path, data)
        assert status == code, (path, page[:300])
        assert said in text_of(page), (path, text_of(page)[:300])
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, code in (
        (b"csrf=" + csrf.encode() + b"&input=%FF%FE", 400),
        (b"csrf=" + csrf.encode() + b"&input=" + b"x" * 3_500_000, 413),
    ):
        async with visitor.session.post(
            f"/workflows/{wf.id}/trigger",
            data=io.BytesIO(body),
            headers=form,
            allow_redirects=False,
        ) as resp:
            assert resp.status == code, (await resp.text())[:300]
    # A forged cookie is no session: the visitor gets a fresh one, and nothing else.
    visitor.session.cookie_jar.update_cookies({"workflowd_session": "forged.cookie"})
    status, _ = await visitor.get("/runs")
    assert status == 200
    got = await visitor.stream(
        f"/live/runs/{failed.id}",
        lambda s: any(m.event == "end" for m in s.messages),
        headers={"Last-Event-ID": "not-a-number"},
    )
    assert got.messages[-1].event == "end"
