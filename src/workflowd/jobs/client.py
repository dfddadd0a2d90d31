"""`JobsClient`: what the engine calls to run a task as a job.

One aiohttp session (connection-pooled) serves every call; one background task (the watcher)
resolves every `wait()` from one shared event stream, or by batched polling when the jobs API
has no stream. Lifecycle: `start()` once, then calls, then `aclose()` (idempotent). Calls pending
at `aclose()` and calls made after it raise `JobsClientClosed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict

import aiohttp

from workflowd.domain.jobs import JobInfo, JobRequest
from workflowd.jobs.config import JobsClientConfig
from workflowd.jobs.errors import JobRejected, JobsClientClosed, JobsCommunicationError
from workflowd.jobs.parse import job_info_from_json, jobs_page_from_json
from workflowd.jobs.registry import WaiterRegistry
from workflowd.jobs.transport import ClientStats, Transport
from workflowd.jobs.urls import path
from workflowd.jobs.watcher import BATCH_SIZE, Watcher

logger = logging.getLogger("workflowd.jobs")


class JobsClient:
    def __init__(
        self, config: JobsClientConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._config = config
        self._given_session = session
        self._session: aiohttp.ClientSession | None = None
        self._transport: Transport | None = None
        self._stats = ClientStats()
        self._registry: WaiterRegistry | None = None
        self._watcher: Watcher | None = None
        self._watcher_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    async def __aenter__(self) -> JobsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("JobsClient.start() called twice")
        self._started = True
        self._session = self._given_session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._config.max_connections)
        )
        self._transport = Transport(self._config, self._session, self._stats)
        # Created here, not in __init__, so its asyncio.Events bind to the running loop.
        self._registry = WaiterRegistry()

    async def submit(self, request: JobRequest) -> JobInfo:
        """`POST /jobs`. Safe to repeat: the same key and body return the same job."""
        body = request.to_json()
        if self._config.tag not in request.tags:
            # Deterministic, so a re-submission still sends a byte-identical body.
            body["tags"] = [*request.tags, self._config.tag]
        return await self._open_transport().call(
            "POST", "/jobs", job_info_from_json, body=body, idempotency_key=request.idempotency_key
        )

    async def get(self, job_id: str) -> JobInfo:
        return await self._open_transport().call(
            "GET", path("jobs", job_id), job_info_from_json, job_id=job_id
        )

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """The jobs that exist among `job_ids` (unknown ids are absent); 500 ids per request."""
        transport = self._open_transport()
        unique = list(dict.fromkeys(job_ids))
        found: dict[str, JobInfo] = {}
        for start in range(0, len(unique), BATCH_SIZE):
            chunk = unique[start : start + BATCH_SIZE]
            params = {"ids": ",".join(chunk), "per_page": str(len(chunk))}
            for info in await transport.call("GET", "/jobs", jobs_page_from_json, params=params):
                found[info.job_id] = info
        return found

    async def cancel(self, job_id: str, retry_deadline_s: float | None = None) -> JobInfo:
        """Ask the job to stop. A job already ended (409) is returned as it stands. Transport
        faults are retried for `retry_deadline_s` (default: the configured deadline)."""
        transport = self._open_transport()
        try:
            return await transport.call(
                "POST",
                path("jobs", job_id, "cancel"),
                job_info_from_json,
                job_id=job_id,
                retry_deadline_s=retry_deadline_s,
            )
        except JobRejected as exc:
            if exc.status != 409:
                raise
        return await self.get(job_id)

    async def find(
        self, workflow_run_id: str, idempotency_key: str, retry_deadline_s: float | None = None
    ) -> JobInfo | None:
        """The job submitted under `idempotency_key` for the run, if one exists: it is looked
        up, never created (`GET /jobs?workflow_run_id=`, page by page)."""
        transport = self._open_transport()
        offset = 0
        while True:
            params = {"workflow_run_id": workflow_run_id, "per_page": "500", "offset": str(offset)}
            page = await transport.call(
                "GET", "/jobs", jobs_page_from_json, params=params,
                retry_deadline_s=retry_deadline_s,
            )  # fmt: skip
            found = next((job for job in page if job.idempotency_key == idempotency_key), None)
            if found is not None or len(page) < 500:
                return found
            offset += len(page)

    async def wait(self, job_id: str) -> JobInfo:
        """Return the job once it is completed, failed or cancelled.

        Raises `JobNotFound` if the job vanished, `JobsCommunicationError` if the jobs API stayed
        unreachable past the deadline, `JobsClientClosed` if the client closed meanwhile.
        Cancelling the caller removes its registration.
        """
        self._open_transport()
        assert self._registry is not None
        future = self._registry.add(job_id, asyncio.get_running_loop().time())
        self._ensure_watcher()
        try:
            return await future
        finally:
            self._registry.discard(job_id, future)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._watcher_task = self._watcher_task, None
        if task is not None:
            task.cancel("jobs client closing")
            await asyncio.wait([task])
        if self._registry is not None:
            self._registry.fail_all(JobsClientClosed)
        if self._session is not None and self._given_session is None:
            await self._session.close()

    @property
    def stats(self) -> dict[str, int]:
        """Counters for metrics; `awaited` is the number of distinct jobs being waited for."""
        counters = asdict(self._stats)
        counters["awaited"] = len(self._registry) if self._registry is not None else 0
        counters["polling"] = int(self._watcher is not None and self._watcher.polling)
        counters["watching"] = int(self._watcher_task is not None)
        return counters

    def _open_transport(self) -> Transport:
        if self._closed:
            raise JobsClientClosed()
        if self._transport is None:
            raise RuntimeError("JobsClient used before start()")
        return self._transport

    def _ensure_watcher(self) -> None:
        # Started by the first waiter and kept until aclose(): an idle stream costs one socket,
        # and keeping it spares a reconnect and a full reconciliation per burst of runs.
        if self._watcher_task is not None:
            return
        assert self._session is not None
        assert self._transport is not None
        assert self._registry is not None
        self._watcher = Watcher(
            self._config, self._transport, self._session, self._registry, self._stats
        )
        self._watcher_task = asyncio.create_task(self._watcher.run(), name="workflowd.jobs.watcher")
        self._watcher_task.add_done_callback(self._watcher_done)

    def _watcher_done(self, task: asyncio.Task[None]) -> None:
        if self._watcher_task is task:
            self._watcher_task = None
        if task.cancelled():
            return
        error = task.exception()
        # The loops never return, so any end is a bug: fail the waiters rather than strand
        # them; the next wait() starts a fresh watcher.
        logger.error("jobs watcher stopped", exc_info=error)
        if self._registry is not None:
            self._registry.fail_all(
                lambda: JobsCommunicationError(f"jobs event watcher stopped: {error!r}")
            )
