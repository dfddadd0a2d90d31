"""Structured logs and the HTTP side of the daemon: Prometheus metrics and /healthz."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from workflowd.address import Address

_CONTEXT_FIELDS = (
    "run_id", "workflow", "task", "task_ref", "job_id", "workflow_id", "title", "delivery_id",
)  # fmt: skip

log = logging.getLogger("workflowd.http")

# A request body the HTTP listener reads at most: the web page's forms, whose largest is a run's
# input (bounded by max_value_bytes, 1 MiB by default), percent-encoded.
MAX_BODY_BYTES = 4 * 1024 * 1024


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in _CONTEXT_FIELDS if hasattr(record, name)
        )
        return f"{text} [{context}]" if context else text


class _Enqueue(logging.handlers.QueueHandler):
    """Hands each record as it is to the log's thread, which formats and writes it: the event
    loop pays for the record, not for the formatting or a write to a slow stderr."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_writer: logging.handlers.QueueListener | None = None


def configure_logging(fmt: str, level: str) -> None:
    global _writer
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if _writer is not None:
        _writer.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _writer = logging.handlers.QueueListener(records, handler)
    _writer.start()
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(level.upper())
    # No line of ours names its source file or thread: a record need not find its caller's
    # frame (logging's documented switch) or look up the thread and process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


@atexit.register
def log_directly() -> None:
    """Write every queued record, then log on the caller's thread again: once the event loop
    has ended, so that nothing logged after it (an error on the way out) comes before what was
    logged while it ran; and at exit."""
    global _writer
    if _writer is None:
        return
    _writer.stop()  # drains the queue
    logging.getLogger().handlers[:] = list(_writer.handlers)
    _writer = None


class LoopLagProbe:
    """Measures how late the event loop wakes a sleeper: the lag every RPC and event also
    suffers. A tracked task, started and stopped by the composition root."""

    def __init__(self, observe: Callable[[float], None], interval_s: float = 0.1) -> None:
        self._observe = observe
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("probe already started")
        self._task = asyncio.create_task(self._run(), name="loop-lag-probe")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            self._observe(max(0.0, loop.time() - expected))

    async def aclose(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


class HttpEndpoint:
    """`/metrics` (Prometheus text format) and `/healthz` (200 while serving, else 503);
    `install` adds more routes (the web page's). `before_scrape` runs on the event loop before
    each rendering of the metrics, which runs on a thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        serving: Callable[[], bool],
        install: Callable[[web.Application], None] | None = None,
        before_scrape: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._serving = serving
        self._before_scrape = before_scrape
        self._rendering: asyncio.Future[bytes] | None = None
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        if install is not None:
            install(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._serves = (
            "/metrics and /healthz" if install is None else "the web page, /metrics and /healthz"
        )
        self.port = 0

    async def start(self, address: Address) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, address.host, address.port)
        await site.start()
        bound = self._runner.addresses[0]
        self.port = int(bound[1])
        # Names the bound port, which `--http-listen HOST:0` leaves to the system.
        log.info("serving %s on http://%s", self._serves, address.with_port(self.port))
        return self.port

    async def aclose(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        # With hundreds of workflows' series the text takes a hundred milliseconds and more to
        # render: on the event loop, every run, fire and stream would stall that long at each
        # scrape (docs/performance.md). On a thread the loop keeps its turns; scrapes that come
        # during a rendering share it, so a flood of them costs one rendering at a time.
        if self._rendering is None:
            self._before_scrape()
            self._rendering = asyncio.ensure_future(
                asyncio.to_thread(generate_latest, self._registry)
            )
            self._rendering.add_done_callback(self._rendered)
        body = await asyncio.shield(self._rendering)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _rendered(self, rendering: asyncio.Future[bytes]) -> None:
        self._rendering = None
        if not rendering.cancelled():
            rendering.exception()  # retrieved here too, should every scraper have gone

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._serving():
            return web.json_response({"status": "serving"})
        return web.json_response({"status": "draining"}, status=503)
