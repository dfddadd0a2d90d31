"""The data plane as one object: an aiohttp server over per-company DuckDB databases.

`python -m dataplane serve` runs it, alone or as the child of a workflowd daemon. Companies are
opened at start (so interrupted jobs resume) or on first request.

Its files are its companies' data: the data directory is made 0700 and every file in it 0600
at start (files it creates later are private through the process's umask, see `__main__`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from opentelemetry.trace import Tracer
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dataplane.auth import TokenTable
from dataplane.company import Company, Limits
from dataplane.errors import BadRequest, Unusable, readable
from dataplane.http_common import COMPANY_KEY, ClientCerts, auth_middleware, problems_middleware
from dataplane.http_datasets import DatasetRoutes
from dataplane.http_events import EventRoutes, OpenStreams
from dataplane.http_jobs import JobRoutes
from dataplane.metrics import Load, PlaneMetrics
from dataplane.model import COMPANY_RE

log = logging.getLogger(__name__)

_DB_SUFFIX = ".duckdb"
# A company whose database would not open is tried again on a request at most this often.
REOPEN_S = 10.0


class DataPlane:
    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        tokens: TokenTable | None = None,
        keepalive_s: float = 15.0,
        retain_changes: int = 10_000,
        subscriber_buffer: int = 1_000,
        max_body_bytes: int = 1 << 20,
        max_upload_bytes: int = 256 << 20,
        max_queued_jobs: int = 100_000,
        query_threads: int | None = None,
        job_timeout_s: float = 3600.0,
        memory_limit: str = "1GiB",
        max_batch: int = 32,
        batch_window_s: float = 0.05,
        client_certs: ClientCerts | None = None,
        dataset_quota_bytes: int = 0,
        tracer: Tracer | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._tracer = tracer
        self._tokens = tokens
        self._client_certs = client_certs or ClientCerts()
        self._streams = OpenStreams(lambda: self._tokens)
        self._keepalive_s = keepalive_s
        self._max_body_bytes = max_body_bytes
        self._max_upload_bytes = max_upload_bytes
        self._limits = Limits(
            workers=workers,
            retain_changes=retain_changes,
            subscriber_buffer=subscriber_buffer,
            max_queued_jobs=max_queued_jobs,
            query_threads=query_threads,
            job_timeout_s=job_timeout_s,
            memory_limit=memory_limit,
            max_batch=max_batch,
            batch_window_s=batch_window_s,
            dataset_quota_bytes=dataset_quota_bytes,
        )
        self._companies: dict[str, Company] = {}
        # Companies whose database would not open: why, and when it was last tried.
        self._unusable: dict[str, tuple[str, float]] = {}
        self._metrics = PlaneMetrics(self._loads)
        self._opening = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._started = False
        self._closed = False

    async def start(
        self,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> int:
        """Opens the existing company databases, resumes their jobs, and serves HTTP (HTTPS
        with `tls`) on `host:port`, or on `sock`, a listening socket bound by whoever started
        this process. Returns the bound port (useful with port 0)."""
        if self._started:
            raise RuntimeError("DataPlane.start() was already called")
        self._started = True
        _make_private(self._data_dir)
        for path in sorted(self._data_dir.glob(f"*{_DB_SUFFIX}")):
            if COMPANY_RE.fullmatch(path.stem):
                # One company's damaged file is that company's problem: the rest are served.
                with contextlib.suppress(Unusable):
                    await self.company(path.stem)
        # 500 ids in `GET /jobs?ids=` (the documented maximum) need a request line of ~18 KB.
        self._runner = web.AppRunner(
            self._build_app(), access_log=None, shutdown_timeout=2.0, max_line_size=32768
        )
        await self._runner.setup()
        site: web.BaseSite
        if sock is None:
            site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        else:
            site = web.SockSite(self._runner, sock, ssl_context=tls)
        await site.start()
        return int(self._runner.addresses[0][1])

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._max_body_bytes,
            middlewares=[
                problems_middleware,
                auth_middleware(lambda: self._tokens, self._client_certs),
            ],
        )
        events = EventRoutes(self._company_of, self._keepalive_s, self._streams)
        jobs = JobRoutes(self._company_of)
        upload_dir = self._data_dir / ".uploads"
        datasets = DatasetRoutes(self._company_of, upload_dir, self._max_upload_bytes)
        app.add_routes(
            [web.get("/healthz", self._healthz), web.get("/metrics", self._metrics_page)]
        )
        app.add_routes(events.routes() + jobs.routes() + datasets.routes())
        return app

    def set_tokens(self, tokens: TokenTable) -> None:
        """Replaces the tokens (e.g. reloaded on SIGHUP): a removed token stops working for
        new requests, and the event streams it opened end; so do those of a token now given to
        another company."""
        self._tokens = tokens
        self._streams.revoke(tokens)

    async def _company_of(self, request: web.Request) -> Company:
        return await self.company(request[COMPANY_KEY])

    async def company(self, name: str) -> Company:
        """The company's open data plane, opening its database on first use."""
        if not COMPANY_RE.fullmatch(name):
            raise BadRequest(f"company name {name!r} must match {COMPANY_RE.pattern}")
        async with self._opening:
            if self._closed:
                raise RuntimeError("the data plane is closed")
            company = self._companies.get(name)
            if company is None:
                company = await self._open(name)
                self._companies[name] = company
            return company

    async def _open(self, name: str) -> Company:
        """The company's database, opened; `Unusable` when it cannot be (tried again at most
        every `REOPEN_S`, so a restored file is picked up without a restart)."""
        failed = self._unusable.get(name)
        loop = asyncio.get_running_loop()
        if failed is not None and loop.time() - failed[1] < REOPEN_S:
            raise Unusable(failed[0])
        path = self._data_dir / f"{name}{_DB_SUFFIX}"
        company = Company(name, path, self._limits, self._metrics, self._tracer)
        try:
            await company.open()
        except Exception as exc:  # DuckDB's errors, or the file system's
            await company.aclose()
            log.error("company %s: its database %s cannot be opened: %s", name, path, exc)
            # The caller learns what is wrong, not where the file lives.
            what = readable(str(exc).replace(str(path), path.name), limit=300)
            reason = (
                f"company {name}'s database cannot be opened ({what}); its jobs and datasets"
                " are unavailable until an operator restores it"
            )
            self._unusable[name] = (reason, loop.time())
            raise Unusable(reason) from exc
        self._unusable.pop(name, None)
        return company

    async def aclose(self) -> None:
        """Ends streams, stops serving, then interrupts jobs and closes the databases.
        Interrupted jobs keep their `running` record and run again on the next start."""
        async with self._opening:
            if self._closed:
                return
            self._closed = True
        for company in self._companies.values():
            company.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.gather(*(c.aclose() for c in self._companies.values()))

    def _loads(self) -> Iterator[tuple[str, Load]]:
        for name, company in list(self._companies.items()):
            yield name, company.workload()

    async def _healthz(self, _: web.Request) -> web.Response:
        """Alive (200) while serving, with how saturated the workers of all companies are."""
        loads = [load for _, load in self._loads()]
        return web.json_response(
            {
                "status": "ok",
                "workers": {
                    "busy": sum(load.busy for load in loads),
                    "total": sum(load.workers for load in loads),
                },
                "queued_jobs": sum(load.queued for load in loads),
                "saturated": any(load.saturated for load in loads),
                "unusable_companies": sorted(self._unusable),
            }
        )

    async def _metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _make_private(data_dir: Path) -> None:
    """The data directory 0700, every directory in it 0700 and every file 0600 (symbolic
    links are left alone: their targets are not ours to change)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(path, 0o700)
            elif stat.S_ISREG(mode):
                os.chmod(path, 0o600)
