"""The web page: time to the first render of the runs page with 1,000,000 runs stored, and
event latency to a real browser at 500 run events a second.

- First render: `--runs` runs (1,000,000; `--quick` 20,000) are inserted in bulk straight
  through the store's writer (one workflow, 1 % failed, a third scheduled), then the daemon
  starts on that store and the runs page is fetched: the first request, then `--samples`
  more of the first page, of the second page (its keyset token), of `status=failed` and of
  `trigger=schedule`. Server time is the page's `Server-Timing` (the engine's reads and the
  rendering, no network); the client's round trip on loopback is given beside it.
- Event latency: a daemon (in this process, on its embedded data plane) and Debian's
  chromium (playwright) showing the runs page. Runs of a workflow of one `set` task are
  triggered at the pace that makes `--events-per-s` run events a second (each run commits
  5) for `--seconds`. Each event's publication in the hub is timed here; the browser records
  when each SSE message was swapped into the page, and the message's id says through which
  event it shows. An event's latency is the first message at or after it minus its
  publication (one machine clock).

Usage: `.venv/bin/python scripts/bench/web.py [--quick]`; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from instant_jobs_api import percentile
from overhead import NO_QUOTAS

from workflowd.app import STORE_FILE, App
from workflowd.domain.run import RunEvent
from workflowd.domain.workflow import NewWorkflowVersion
from workflowd.engine.definitions import WorkflowRef
from workflowd.engine.runs import TriggerRequest
from workflowd.settings import Settings
from workflowd.store import make_store
from workflowd.store.codec import ts
from workflowd.store.sql import Conn

CHROMIUM = os.environ.get("WORKFLOWD_CHROMIUM", "/usr/bin/chromium")
TARGETS = {"first_render_server_ms": 200.0, "event_latency_ms_p99": 250.0}
EVENTS_PER_RUN = 5  # created, started, task started, task completed, completed
BATCH = 20_000
SPEC = (
    "document: {dsl: '1.0.0', namespace: bench, name: %s, version: '1.0.0'}\n"
    "do:\n  - note: {set: {done: true}}\n"
)
ROWS_PER_STATEMENT = 200
INSERT = (
    "INSERT INTO runs (id, company, workflow_id, namespace, name, version, status, trigger,"
    " input, created_at, started_at, ended_at, scheduled_at) VALUES "
)
ROW = "(?, 'local', ?, 'bench', 'stored', '1.0.0', ?, ?, '{}', ?, ?, ?, ?)"


def settings(data_dir: Path) -> Settings:
    return Settings.load(
        {
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "dataplane_listen": "127.0.0.1:0",
            "data_dir": data_dir,
            **NO_QUOTAS,
        },
        {},
    )


async def fill(data_dir: Path, runs: int) -> float:
    """`runs` ended runs of one workflow, inserted in batches by the store's writer."""
    await asyncio.to_thread(data_dir.mkdir, parents=True)
    store = make_store("", data_dir / STORE_FILE)
    await store.open()
    began = time.perf_counter()
    try:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        workflow, _ = await store.save_version(
            NewWorkflowVersion("local", "bench", "stored", "1.0.0", SPEC % "stored", (), start),
            lambda *_: None,
        )
        for first in range(0, runs, BATCH):
            rows = []
            for i in range(first, min(first + BATCH, runs)):
                at = start + timedelta(seconds=i)
                scheduled = i % 3 == 0
                rows.append(
                    (
                        str(uuid.uuid4()),
                        workflow.id,
                        "failed" if i % 100 == 7 else "completed",
                        "schedule" if scheduled else "manual",
                        ts(at),
                        ts(at),
                        ts(at + timedelta(seconds=2)),
                        ts(at) if scheduled else None,
                    )
                )

            def insert(conn: Conn, rows: list[tuple[Any, ...]] = rows) -> None:
                for at in range(0, len(rows), ROWS_PER_STATEMENT):
                    chunk = rows[at : at + ROWS_PER_STATEMENT]
                    values = ", ".join([ROW] * len(chunk))
                    conn.execute(INSERT + values, [v for row in chunk for v in row])

            await store.db.writer.submit(insert)
    finally:
        await store.aclose()
    return time.perf_counter() - began


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, float, str]:
    began = time.perf_counter()
    async with session.get(url) as resp:
        text = await resp.text()
        assert resp.status == 200, text[:500]
        timing = resp.headers["Server-Timing"]
    wall = (time.perf_counter() - began) * 1000
    return float(timing.split("dur=")[1]), wall, text


async def first_render(data_dir: Path, samples: int) -> dict[str, Any]:
    app = App(settings(data_dir))
    await app.start()
    try:
        assert app.http is not None
        base = f"http://127.0.0.1:{app.http.port}"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base, cookie_jar=jar) as session:
            server, wall, page = await timed_get(session, "/runs")
            older = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
            figures: dict[str, Any] = {
                "first_render_server_ms": round(server, 1),
                "first_render_wall_ms": round(wall, 1),
            }
            for name, url in (
                ("runs_page", "/runs"),
                ("second_page", older.replace("&amp;", "&")),
                ("failed_only", "/runs?status=failed"),
                ("scheduled_only", "/runs?trigger=schedule"),
            ):
                times = [await timed_get(session, url) for _ in range(samples)]
                figures[f"{name}_server_ms_p50"] = round(percentile([t[0] for t in times], 50), 1)
                figures[f"{name}_server_ms_p99"] = round(percentile([t[0] for t in times], 99), 1)
                figures[f"{name}_wall_ms_p50"] = round(percentile([t[1] for t in times], 50), 1)
            return figures
    finally:
        await app.drain()


async def event_latency(data_dir: Path, per_s: float, seconds: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    app = App(settings(data_dir))
    await app.start()
    published: dict[int, float] = {}

    def note(event: RunEvent) -> bool:
        published[event.global_seq] = time.time() * 1000
        return False

    sub = app.hub.subscribe(note)
    try:
        assert app.http is not None
        assert app.definitions is not None
        assert app.runs is not None
        workflow, _ = await app.definitions.create("local", SPEC % "live", ())
        ref = WorkflowRef(workflow_id=workflow.id)
        async with async_playwright() as driver:
            browser = await driver.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page()
            # Before the page's own scripts; playwright's, so the page's CSP does not apply.
            await page.add_init_script(
                "window.received = []; document.addEventListener('htmx:sseMessage', (e) =>"
                " window.received.push([Date.now(), Number(e.detail.lastEventId)]));"
            )
            await page.goto(f"http://127.0.0.1:{app.http.port}/runs")
            # The first message comes once the stream has subscribed: no event is missed.
            await page.wait_for_function("() => window.received.length > 0", timeout=30_000)
            runs_per_s = per_s / EVENTS_PER_RUN
            loop = asyncio.get_running_loop()
            began = loop.time()
            triggered = 0
            load_before = os.getloadavg()[0]
            while loop.time() - began < seconds:
                due = int((loop.time() - began) * runs_per_s) + 1
                while triggered < due:
                    await app.runs.trigger("local", TriggerRequest(ref=ref))
                    triggered += 1
                await asyncio.sleep(0.01)  # ok: the bench's pacing tick
            sent_s = loop.time() - began
            last = max(published) if published else 0
            await page.wait_for_function(
                f"() => window.received.some(([, id]) => id >= {last})", timeout=60_000
            )
            received: list[list[int]] = await page.evaluate("() => window.received")
            await browser.close()
        return _latencies(published, received, triggered, sent_s, load_before)
    finally:
        app.hub.unsubscribe(sub)
        await app.drain()


def _latencies(
    published: dict[int, float],
    received: list[list[int]],
    triggered: int,
    sent_s: float,
    load_before: float,
) -> dict[str, Any]:
    shown = sorted((seq, at) for at, seq in received if seq > 0)
    latencies: list[float] = []
    index = 0
    for seq in sorted(published):
        while index < len(shown) and shown[index][0] < seq:
            index += 1
        if index == len(shown):
            break
        latencies.append(max(0.0, shown[index][1] - published[seq]))
    return {
        "runs_triggered": triggered,
        "events_published": len(published),
        "events_per_s": round(len(published) / sent_s, 1),
        "sse_messages": len(shown),
        "event_latency_ms_p50": round(percentile(latencies, 50), 1),
        "event_latency_ms_p99": round(percentile(latencies, 99), 1),
        "event_latency_ms_max": round(max(latencies, default=0.0), 1),
        "latency_samples": len(latencies),
        "load_avg_1m_at_start": round(load_before, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20,000 runs, 3 s of events")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--events-per-s", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.samples, args.seconds = 20_000, 5, 3.0
    root = Path(tempfile.mkdtemp(prefix="workflowd-bench-web-"))
    try:
        filled_s = await fill(root / "stored", args.runs)
        print(f"inserted {args.runs} runs in {filled_s:.1f} s", flush=True)
        render = await first_render(root / "stored", args.samples)
        print(json.dumps(render), flush=True)
        live = await event_latency(root / "live", args.events_per_s, args.seconds)
        print(json.dumps(live), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "runs_stored": args.runs,
        "insert_s": round(filled_s, 1),
        **render,
        **live,
        "cpus": os.cpu_count(),
        "targets": TARGETS,
        "met": {
            "first_render_server_ms": render["first_render_server_ms"]
            <= TARGETS["first_render_server_ms"],
            "event_latency_ms_p99": live["event_latency_ms_p99"] <= TARGETS["event_latency_ms_p99"],
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
