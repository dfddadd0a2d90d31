"""Screenshots of the web page for the docs: the runs page (docs/web-runs.png) and a failed
run's timeline with its loop, branches and retries (docs/web-run.png).

A daemon starts in a temporary data directory with its embedded data plane, runs a few
workflows to their end, and Debian's chromium (playwright) photographs the pages.
Usage: `.venv/bin/python scripts/web_screenshots.py`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from workflowd.app import App
from workflowd.domain.json import Json
from workflowd.domain.run import RunFilter
from workflowd.engine.definitions import WorkflowRef
from workflowd.engine.runs import TriggerRequest
from workflowd.engine.schedules import PolicyChange
from workflowd.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM = os.environ.get("WORKFLOWD_CHROMIUM", "/usr/bin/chromium")
NIGHTLY = """\
document: {dsl: '1.0.0', namespace: analytics, name: nightly-summary, version: '1.2.0'}
schedule:
  cron: CRON_TZ=Europe/Paris 0 2 * * *
do:
  - summarize:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: nightly_summary}
"""
PIPELINE = """\
document: {dsl: '1.0.0', namespace: analytics, name: regional-pipeline, version: '2.0.0'}
do:
  - regions:
      for: {each: region, in: .regions}
      do:
        - build:
            call: CreateMaterializedViewIfNotExists
            with: {nql: SELECT 1 AS one, datasetName: '${ "region_" + $region }'}
  - publish:
      fork:
        branches:
          - report:
              call: CreateMaterializedViewIfNotExists
              with: {nql: SELECT 2 AS two, datasetName: report}
          - pause: {wait: PT1S}
  - guarded:
      try:
        - load:
            call: CreateMaterializedViewIfNotExists
            with: {nql: SELECT COUNT(1) AS n FROM company_data.late_table, datasetName: late}
      catch:
        retry: {delay: {milliseconds: 300}, limit: {attempt: {count: 2}}}
"""


async def finish(app: App, workflow: str, run_input: Json) -> str:
    assert app.runs is not None
    assert app.definitions is not None
    found, _ = await app.definitions.create("local", workflow, ())
    run = await app.runs.trigger(
        "local", TriggerRequest(ref=WorkflowRef(workflow_id=found.id), input=run_input)
    )
    async for _ in app.runs.watch("local", run.id, 0):
        pass
    return run.id


async def main() -> None:
    from playwright.async_api import async_playwright

    root = Path(tempfile.mkdtemp(prefix="workflowd-screenshots-"))
    settings = Settings.load(
        {
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "dataplane_listen": "127.0.0.1:0",
            "data_dir": root,
            "jobs_retry_deadline_s": 5.0,
        },
        {},
    )
    app = App(settings)
    await app.start()
    try:
        assert app.schedules is not None
        assert app.runs is not None
        assert app.http is not None
        for _ in range(3):
            await finish(app, NIGHTLY, {})
        nightly = (await app.runs.list("local", RunFilter(), 1, "")).items[0]
        await app.schedules.activate("local", nightly.workflow_id, PolicyChange(), False)
        failed = await finish(app, PIPELINE, {"regions": ["emea", "apac", "amer"]})
        base = f"http://127.0.0.1:{app.http.port}"
        async with async_playwright() as driver:
            browser = await driver.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 720})
            await page.goto(f"{base}/runs")
            await page.screenshot(path=str(DOCS / "web-runs.png"))
            await page.goto(f"{base}/runs/{failed}")
            await page.locator("#timeline details").nth(0).locator("summary").click()
            await page.screenshot(path=str(DOCS / "web-run.png"), full_page=True)
            await browser.close()
    finally:
        await app.drain()
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {DOCS / 'web-runs.png'} and {DOCS / 'web-run.png'}")


if __name__ == "__main__":
    asyncio.run(main())
