"""The page in a real browser (Debian's chromium, driven by playwright): the runs page loads,
a run progresses live to its end, a cancel from the page stops its job in the data plane, a
failed run is re-run, a company sees none of another's runs, and no Content-Security-Policy
violation or script error shows in the console."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file
from tests.conftest import Daemon, eventually
from tests.engine.support import SLOW_NQL, Plane, apply, finished, trigger, workflow
from tests.web.support import BROKEN, base_url
from workflowd.v1 import workflow_service_pb2 as pb

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("WORKFLOWD_CHROMIUM", "/usr/bin/chromium")
_REQUIRED = os.environ.get("WORKFLOWD_REQUIRE_BROWSER") == "1"
_TIMEOUT_MS = 60_000

STEPPED = workflow(
    "stepped",
    "  - first: {wait: PT1S}\n"
    "  - build:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: stepped_view}\n",
)
SLOW = workflow(
    "slow",
    f"  - crunch:\n      call: CreateMaterializedViewIfNotExists\n"
    f'      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}\n',
)


def require_chromium() -> None:
    """Skip without chromium or playwright; fail instead where they are required (CI)."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        if _REQUIRED:
            raise
        pytest.skip("playwright is not installed")  # ok: CI requires it (fails above)
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        if _REQUIRED:
            pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium")
        pytest.skip(f"no chromium at {CHROMIUM}")  # ok: CI installs it and requires it


def _playwright() -> Any:
    require_chromium()
    from playwright.async_api import async_playwright

    return async_playwright


class Console:
    """What the page said in its console: a CSP violation or a script error is a failure."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def watch(self, page: Any) -> None:
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _message(self, message: Any) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(f"{message.type}: {message.text}")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async_playwright = _playwright()
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page_of(browser: Any) -> AsyncIterator[Callable[[], Awaitable[tuple[Any, Console]]]]:
    contexts: list[Any] = []
    consoles: list[Console] = []

    async def open_page() -> tuple[Any, Console]:
        context = await browser.new_context()
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        console = Console()
        console.watch(page)
        consoles.append(console)
        return page, console

    yield open_page
    for context in contexts:
        await context.close()
    for console in consoles:
        assert console.problems == []


async def test_the_runs_page_loads_and_follows_new_runs(daemon: Daemon, page_of: Any) -> None:
    wf = await apply(daemon, STEPPED)
    first = await trigger(daemon, wf.id)
    page, _ = await page_of()
    await page.goto(f"{base_url(daemon)}/runs")
    await page.locator(f"#run-{first.id}").wait_for()
    assert await page.title() == "Runs · workflowd"
    # A run triggered after the page loaded appears without a reload, and so does its end.
    second = await trigger(daemon, wf.id)
    await page.locator(f"#run-{second.id} .st-completed").wait_for()
    await page.locator(f"#run-{first.id} .st-completed").wait_for()


async def test_a_run_progresses_live_to_completion(daemon: Daemon, page_of: Any) -> None:
    wf = await apply(daemon, STEPPED)
    run = await trigger(daemon, wf.id)
    page, _ = await page_of()
    await page.goto(f"{base_url(daemon)}/runs/{run.id}")
    header = page.locator("#run-header .badge").first
    assert await header.inner_text() in ("pending", "running")
    await page.locator("#run-header .st-completed").wait_for()
    await page.locator("#timeline svg .fill-completed").nth(1).wait_for()
    done = await finished(daemon, run.id)
    job_id = next(t.job_id for t in done.tasks if t.job_id)
    await page.locator("#timeline details").nth(1).locator("summary").click()
    await page.get_by_text(job_id).wait_for()
    assert page.url.endswith(f"/runs/{run.id}")  # no reload, no navigation


async def test_cancel_from_the_page_cancels_the_job(daemon: Daemon, page_of: Any) -> None:
    plane = Plane.of(daemon)
    try:
        wf = await apply(daemon, SLOW)
        run = await trigger(daemon, wf.id)

        async def submitted() -> str:
            got = await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))
            return next((t.job_id for t in got.run.tasks if t.job_id), "")

        job_id = await eventually(submitted, timeout_s=60)
        page, _ = await page_of()
        await page.goto(f"{base_url(daemon)}/runs/{run.id}")
        await page.get_by_role("button", name="Cancel run").click()
        await page.locator("#run-header .st-cancelled").wait_for()
        job = await plane.job(job_id)
        assert job["state"] == "cancelled"
    finally:
        await plane.aclose()


async def test_a_failed_run_is_re_run_from_the_page(daemon: Daemon, page_of: Any) -> None:
    wf = await apply(daemon, BROKEN)
    failed = await finished(daemon, (await trigger(daemon, wf.id)).id)
    page, _ = await page_of()
    await page.goto(f"{base_url(daemon)}/runs/{failed.id}")
    await page.locator("#failing").wait_for()
    await page.get_by_role("button", name="Re-run from failure").click()
    await page.wait_for_url(lambda url: f"/runs/{failed.id}" not in url)
    rerun_id = page.url.rsplit("/", 1)[1]
    await page.locator("#run-header .st-failed").wait_for()
    await page.locator(f'#run-header a[href="/runs/{failed.id}"]').wait_for()
    rerun = await finished(daemon, rerun_id)
    assert rerun.rerun_of == failed.id
    assert any(t.reused for t in rerun.tasks)


async def test_times_switch_to_the_viewers_zone_and_stay(daemon: Daemon, browser: Any) -> None:
    wf = await apply(daemon, BROKEN)
    await finished(daemon, (await trigger(daemon, wf.id)).id)
    context = await browser.new_context(timezone_id="Asia/Tokyo")
    try:
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)
        await page.goto(f"{base_url(daemon)}/runs")
        toggle = page.locator("#tz-toggle")
        assert await toggle.inner_text() == "Times: UTC"
        utc = await page.locator("#runs-body time").first.inner_text()
        await toggle.focus()
        await page.keyboard.press("Enter")
        assert await toggle.inner_text() == "Times: Asia/Tokyo"
        local = await page.locator("#runs-body time").first.inner_text()
        assert local != utc
        assert "UTC" not in local
        await page.reload()
        assert await page.locator("#tz-toggle").inner_text() == "Times: Asia/Tokyo"
        assert await page.locator("input.tz-field").input_value() == "Asia/Tokyo"
    finally:
        await context.close()


async def test_a_company_sees_none_of_anothers_runs(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path, page_of: Any
) -> None:
    daemon = await start_daemon(tokens_file=str(tokens_file(tmp_path / "tokens.toml", TOKENS)))
    quick = workflow("mine", "  - x: {set: {a: 1}}\n")
    secret = workflow("secret", "  - x: {set: {a: 2}}\n")
    ours = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=quick), metadata=ACME
    )
    theirs = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=secret), metadata=GLOBEX
    )
    my_run = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=ours.workflow.id), metadata=ACME
    )
    their_run = await daemon.stub.TriggerWorkflow(
        pb.TriggerWorkflowRequest(workflow_id=theirs.workflow.id), metadata=GLOBEX
    )
    page, _ = await page_of()
    await page.goto(f"{base_url(daemon)}/runs")
    assert page.url.endswith("/login")
    await page.get_by_label("API token").fill("tok-acme")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: not url.endswith("/login"))
    await page.goto(f"{base_url(daemon)}/runs")
    await page.locator(f"#run-{my_run.run.id}").wait_for()
    assert await page.locator(f"#run-{their_run.run.id}").count() == 0
    assert "secret" not in await page.content()
    assert "tok-acme" not in page.url
    cookies = await page.context.cookies()
    assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]


async def test_an_input_is_checked_against_the_schema_as_it_is_typed(
    daemon: Daemon, page_of: Any
) -> None:
    typed = workflow(
        "typed",
        "  - echo: {set: {n: '${ .n }'}}\n",
        extra=(
            "input:\n  schema:\n    format: json\n    document:\n      type: object\n"
            "      required: [n]\n      properties: {n: {type: integer}}\n"
        ),
    )
    wf = await apply(daemon, typed)
    page, _ = await page_of()
    await page.goto(f"{base_url(daemon)}/workflows/{wf.id}")
    field = page.get_by_label("Input (JSON", exact=False)
    await field.fill('{"n": "three"}')
    await page.locator("#input-check .error").wait_for()
    assert "input/n" in await page.locator("#input-check").inner_text()
    await field.fill('{"n": 3}')
    await page.locator("#input-check .ok").wait_for()
    await page.get_by_role("button", name="Trigger a run").click()
    await page.wait_for_url(lambda url: "/runs/" in url)
    await page.locator("#run-header .st-completed").wait_for()
