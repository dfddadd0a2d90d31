"""Observability on a running daemon: `/healthz`, `/metrics` values that move with runs, and the
JSON log format of `workflowd serve --log-format json` (a real subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tests.conftest import Daemon, eventually, venv_bin
from tests.engine.support import (
    SLOW_NQL,
    Plane,
    apply,
    finished,
    trigger,
    workflow,
)
from workflowd.address import Address
from workflowd.observability import HttpEndpoint, JsonFormatter
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

TWO_TASKS = workflow(
    "two-tasks",
    """\
  - make:
      call: CreateMaterializedViewIfNotExists
      with: {nql: SELECT 1 AS one, datasetName: v_one}
  - refresh:
      call: RefreshMaterializedView
      with: {datasetName: v_one}
""",
)
SLOW = workflow(
    "slow",
    f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL}", datasetName: slow_view}}
""",
)
CREATE = "CreateMaterializedViewIfNotExists"
REFRESH = "RefreshMaterializedView"


@dataclass
class Scrape:
    families: dict[str, str]  # name -> type, e.g. workflowd_runs_started -> counter
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; a labelled child never touched is absent from the text, i.e. 0."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> Scrape:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    result = Scrape({}, {})
    for family in text_string_to_metric_families(text):
        result.families[family.name] = family.type
        for sample in family.samples:
            result.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def http_port(daemon: Daemon) -> int:
    assert daemon.app.http is not None
    return daemon.app.http.port


async def test_healthz_answers_200_while_serving(daemon: Daemon) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{http_port(daemon)}/healthz") as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == {"status": "serving"}
    # Its 503 while draining is checked, during the drain, in tests/engine/test_drain.py.


async def test_metrics_move_with_runs_tasks_and_watchers(daemon: Daemon) -> None:
    port = http_port(daemon)
    before = await scrape(port)
    assert {
        "workflowd_runs_started": "counter",
        "workflowd_runs_ended": "counter",
        "workflowd_active_runs": "gauge",
        "workflowd_watchers": "gauge",
        "workflowd_task_duration_seconds": "histogram",
        "workflowd_job_wait_seconds": "histogram",
        "workflowd_event_loop_lag_seconds": "histogram",
    }.items() <= before.families.items()
    assert before.value("workflowd_runs_started_total") == 0
    assert before.value("workflowd_active_runs") == 0
    assert (
        before.value("workflowd_task_duration_seconds_count", call=CREATE, status="completed") == 0
    )

    # A quick run of two tasks: counters, the task-duration and job-wait histograms move.
    wf = await apply(daemon, TWO_TASKS)
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error

    async def after_quick_run() -> Scrape:
        s = await scrape(port)
        assert s.value("workflowd_active_runs") == 0
        return s

    after = await eventually(after_quick_run)
    assert after.value("workflowd_runs_started_total") == 1
    assert after.value("workflowd_runs_ended_total", status="completed") == 1
    for call in (CREATE, REFRESH):
        labels = {"call": call, "status": "completed"}
        assert after.value("workflowd_task_duration_seconds_count", **labels) == 1
        assert after.value("workflowd_task_duration_seconds_bucket", le="+Inf", **labels) == 1
        assert after.value("workflowd_task_duration_seconds_sum", **labels) > 0
        assert after.value("workflowd_job_wait_seconds_count", call=call) == 1

    # A slow run, watched: it is an active run and its stream a watcher while they last.
    slow = await apply(daemon, SLOW)
    slow_run = await trigger(daemon, slow.id)
    watch = daemon.stub.WatchRun(pb.WatchRunRequest(run_id=slow_run.id))
    events = aiter(watch)
    async with asyncio.timeout(30):
        while (await anext(events)).event.type != pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED:
            pass
    during = await scrape(port)
    assert during.value("workflowd_runs_started_total") == 2
    assert during.value("workflowd_active_runs") == 1
    assert during.value("workflowd_watchers") == 1

    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=slow_run.id))
    async with asyncio.timeout(30):
        last = [response.event async for response in events][-1]
    assert last.run_status == pb.RUN_STATUS_CANCELLED

    async def after_cancel() -> Scrape:
        s = await scrape(port)
        assert s.value("workflowd_active_runs") == 0
        assert s.value("workflowd_watchers") == 0
        return s

    ended = await eventually(after_cancel)
    assert ended.value("workflowd_runs_ended_total", status="cancelled") == 1
    assert (
        ended.value("workflowd_task_duration_seconds_count", call=CREATE, status="cancelled") == 1
    )
    job_id = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=slow_run.id))).run.tasks[0].job_id
    plane = Plane.of(daemon)
    try:

        async def job_cancelled() -> bool:
            return (await plane.job(job_id))["state"] == "cancelled"

        await eventually(job_cancelled)
    finally:
        await plane.aclose()

    async def loop_lag_observed() -> bool:
        return (await scrape(port)).value("workflowd_event_loop_lag_seconds_count") > 0

    await eventually(loop_lag_observed)


class _HeldCollector(Collector):
    """A collector whose collection, on the rendering thread, waits until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(60)
        yield GaugeMetricFamily("held", "held by the test", value=self.calls)


async def test_metrics_render_off_the_event_loop_and_scrapes_meanwhile_share_the_rendering() -> (
    None
):
    registry = CollectorRegistry()
    held = _HeldCollector()
    registry.register(held)
    refreshed: list[int] = []
    arrived = [asyncio.Event() for _ in range(3)]

    @web.middleware
    async def count_scrapes(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/metrics":
            next(e for e in arrived if not e.is_set()).set()
        return cast(web.StreamResponse, await handler(request))

    endpoint = HttpEndpoint(
        registry,
        lambda: True,
        lambda app: app.middlewares.append(count_scrapes),
        before_scrape=lambda: refreshed.append(held.calls),
    )
    port = await endpoint.start(Address.parse("127.0.0.1:0", "http_listen"))
    try:
        first = asyncio.create_task(scrape(port))
        await asyncio.to_thread(held.entered.wait, 60)
        # The rendering is held on its thread, and the loop still answers.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        second = asyncio.create_task(scrape(port))
        await arrived[1].wait()
        held.release.set()
        shared = await asyncio.gather(first, second)
        assert [s.value("held") for s in shared] == [1, 1]
        assert held.calls == 1
        assert refreshed == [0]
        # A scrape after it renders afresh.
        assert (await scrape(port)).value("held") == 2
        assert refreshed == [0, 1]
    finally:
        held.release.set()
        await endpoint.aclose()


def test_the_json_formatter_lifts_context_fields_to_the_top_level() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "workflowd.engine", logging.WARNING, __file__, 1, "task %s: %s", ("t", "x"), exc_info
    )
    for name, given in {"run_id": "r-1", "task": "t", "job_id": "j-1"}.items():
        setattr(record, name, given)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning"
    assert entry["logger"] == "workflowd.engine"
    assert entry["message"] == "task t: x"
    assert (entry["run_id"], entry["task"], entry["job_id"]) == ("r-1", "t", "j-1")
    assert "workflow_id" not in entry
    assert "ValueError: boom" in entry["exception"]
    assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)


@dataclass
class JsonDaemon:
    """`workflowd serve --log-format json` as a subprocess: stdout carries the ready line,
    stderr the log, kept line by line."""

    proc: asyncio.subprocess.Process
    address: str
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def http_port(self) -> int:
        async def announced() -> int:
            for line in self.stderr:
                found = re.search(r"/healthz on http://127\.0\.0\.1:(\d+)", line)
                if found:
                    return int(found.group(1))
            raise AssertionError("no line names the metrics port")

        return await eventually(announced)

    def entries(self) -> list[dict[str, Any]]:
        parsed = []
        for line in self.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"a log line is not JSON: {line!r}") from exc
            assert isinstance(entry, dict), line
            parsed.append(entry)
        return parsed


@contextlib.asynccontextmanager
async def json_daemon(data_dir: Path) -> AsyncIterator[JsonDaemon]:
    proc = await asyncio.create_subprocess_exec(
        venv_bin("workflowd"),
        "serve",
        "--log-format",
        "json",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--dataplane-listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    daemon: JsonDaemon | None = None
    try:
        async with asyncio.timeout(30):
            ready = (await stdout.readline()).decode()
        found = re.search(r"serving gRPC on (\S+:\d+) ", ready)
        assert found, f"no ready line: {ready!r}"
        daemon = JsonDaemon(proc, found.group(1))
        lines = daemon.stderr

        async def keep_stderr() -> None:
            while line := await stderr.readline():
                lines.append(line.decode().rstrip("\n"))

        async def discard_stdout() -> None:
            while await stdout.read(65536):
                pass

        daemon.readers += [
            asyncio.create_task(keep_stderr()),
            asyncio.create_task(discard_stdout()),
        ]
        yield daemon
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if daemon is not None:
            await asyncio.gather(*daemon.readers)


async def run_two_tasks(address: str) -> pb.Run:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.WorkflowServiceStub(channel)
        client = Daemon(None, address, channel, stub, Path())  # type: ignore[arg-type]
        wf = await apply(client, TWO_TASKS)
        run = await finished(client, (await trigger(client, wf.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    return run


@pytest.mark.slow
async def test_json_logs_of_a_serving_daemon(tmp_path: Path) -> None:
    async with json_daemon(tmp_path / "state") as served:
        port = await served.http_port()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 200
        run = await run_two_tasks(served.address)
        assert (await scrape(port)).value("workflowd_runs_started_total") == 1
    assert served.proc.returncode == 0
    entries = served.entries()

    assert entries, "the daemon logged nothing"
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0), entry
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}, entry
        # A line that names the run (or one of its jobs) carries it as a field too.
        if run.id in entry["message"]:
            assert entry.get("run_id") == run.id, entry
        for task in run.tasks:
            if task.job_id and task.job_id in entry["message"]:
                assert entry.get("job_id") == task.job_id, entry
    messages = [(e["logger"], e["level"], e["message"]) for e in entries]
    assert any(
        logger == "workflowd" and level == "info" and re.match(r"workflowd \S+ started", message)
        for logger, level, message in messages
    ), messages
    assert not any(level in ("error", "critical") for _, level, _ in messages), messages


@pytest.mark.slow
async def test_json_logs_name_the_run_task_and_job_of_each_task_end(tmp_path: Path) -> None:
    async with json_daemon(tmp_path / "state") as served:
        run = await run_two_tasks(served.address)
    entries = served.entries()
    for task in run.tasks:
        about = [
            e
            for e in entries
            if e.get("run_id") == run.id
            and e.get("task") == task.name
            and e.get("job_id") == task.job_id
        ]
        assert about, f"no log line with run_id, task and job_id for task {task.name}"
