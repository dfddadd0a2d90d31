"""`JobsClient`: what the engine calls to run a task as a job.

One aiohttp session (connection-pooled) serves every call. Each company the engine acts for
has a *lane*: its calls carry the company's header, and one background task (the lane's
watcher) resolves every `wait()` of that company from one shared event stream, or by batched
polling when the jobs API has no stream. Lifecycle: `start()` once, then calls, then `aclose()`
(idempotent). Calls pending at `aclose()` and calls made after it raise `JobsClientClosed`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
from collections.abc import Sequence
from dataclasses import asdict

import aiohttp

from workflowd.domain.fairness import FairSlots
from workflowd.domain.jobs import JobInfo, JobRequest
from workflowd.domain.spans import SpanSink
from workflowd.jobs.config import JobsClientConfig
from workflowd.jobs.credential import Credential
from workflowd.jobs.errors import JobRejected, JobsClientClosed, JobsCommunicationError
from workflowd.jobs.parse import job_info_from_json, jobs_page_from_json
from workflowd.jobs.registry import WaiterRegistry
from workflowd.jobs.transport import ClientStats, Transport
from workflowd.jobs.urls import path
from workflowd.jobs.watcher import BATCH_SIZE, Watcher

logger = logging.getLogger("workflowd.jobs")

LOCAL_COMPANY = "local"
_PAGE = 500


class _Lane:
    """One company's calls and its shared event stream."""

    def __init__(
        self,
        config: JobsClientConfig,
        session: aiohttp.ClientSession,
        stats: ClientStats,
        company: str,
        credential: Credential,
        turns: FairSlots,
        spans: SpanSink | None,
    ) -> None:
        self._config = config
        self._session = session
        self._stats = stats
        self.transport = Transport(config, session, stats, company, credential, turns, spans)
        self.registry = WaiterRegistry()
        self.watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._company = company

    def ensure_watcher(self) -> None:
        # Started by the lane's first waiter and kept until aclose(): an idle stream costs one
        # socket, and keeping it spares a reconnect and a full reconciliation per burst of runs.
        if self._task is not None:
            return
        self.watcher = Watcher(
            self._config, self.transport, self._session, self.registry, self._stats
        )
        # A context of its own: it serves every waiter, not the one whose call started it
        # (whose trace span, `spans.CURRENT`, its calls would otherwise carry).
        self._task = asyncio.create_task(
            self.watcher.run(),
            name=f"workflowd.jobs.watcher.{self._company}",
            context=contextvars.Context(),
        )
        self._task.add_done_callback(self._watcher_done)

    def _watcher_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if task.cancelled():
            return
        error = task.exception()
        # The loops never return, so any end is a bug: fail the waiters rather than strand
        # them; the next wait() starts a fresh watcher.
        logger.error("jobs watcher stopped", exc_info=error)
        self.registry.fail_all(
            lambda: JobsCommunicationError(f"jobs event watcher stopped: {error!r}")
        )

    @property
    def watching(self) -> bool:
        return self._task is not None

    @property
    def live_since(self) -> float | None:
        """See `Watcher.live_since`; None without a running watcher."""
        return None if self._task is None or self.watcher is None else self.watcher.live_since

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel("jobs client closing")
            await asyncio.wait([task])
        self.registry.fail_all(JobsClientClosed)


class JobsClient:
    def __init__(
        self,
        config: JobsClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        credential: Credential | None = None,
        spans: SpanSink | None = None,
    ) -> None:
        """`credential`: a token its owner may replace (the local data plane's supervisor);
        by default `config.token`, for good. `spans`: each call made for a task instance
        (`spans.CURRENT`) is a client span of its own and carries its `traceparent`."""
        self._config = config
        self._spans = spans
        self._credential = credential or Credential(config.token)
        self._given_session = session
        self._session: aiohttp.ClientSession | None = None
        self._stats = ClientStats()
        self._lanes: dict[str, _Lane] = {}
        # Requests (not the lanes' event streams, which hold a connection each for as long as
        # they last) take turns by company for the pool's connections.
        self._turns = FairSlots(config.max_connections)
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
            connector=aiohttp.TCPConnector(
                limit=self._config.max_connections, ssl=server_trust(self._config)
            )
        )

    async def submit(self, request: JobRequest, company: str = LOCAL_COMPANY) -> JobInfo:
        """`POST /jobs`. Safe to repeat: the same key and body return the same job."""
        body = request.to_json()
        if self._config.tag not in request.tags:
            # Deterministic, so a re-submission still sends a byte-identical body.
            body["tags"] = [*request.tags, self._config.tag]
        lane = self._lane(company)
        sent = asyncio.get_running_loop().time()
        info: JobInfo | None = None
        lane.registry.sending()
        try:
            info = await lane.transport.call(
                "POST", "/jobs", job_info_from_json, body=body,
                idempotency_key=request.idempotency_key,
            )  # fmt: skip
        finally:
            lane.registry.sent(sent, info)
        return info

    async def get(self, job_id: str, company: str = LOCAL_COMPANY) -> JobInfo:
        return await self._lane(company).transport.call(
            "GET", path("jobs", job_id), job_info_from_json, job_id=job_id
        )

    async def get_many(
        self, job_ids: Sequence[str], company: str = LOCAL_COMPANY
    ) -> dict[str, JobInfo]:
        """The jobs that exist among `job_ids` (unknown ids are absent), in batches."""
        transport = self._lane(company).transport
        unique = list(dict.fromkeys(job_ids))
        found: dict[str, JobInfo] = {}
        for start in range(0, len(unique), BATCH_SIZE):
            chunk = unique[start : start + BATCH_SIZE]
            params = {"ids": ",".join(chunk), "per_page": str(len(chunk))}
            for info in await transport.call("GET", "/jobs", jobs_page_from_json, params=params):
                found[info.job_id] = info
        return found

    async def cancel(
        self,
        job_id: str,
        company: str = LOCAL_COMPANY,
        retry_deadline_s: float | None = None,
    ) -> JobInfo:
        """Ask the job to stop. A job already ended (409) is returned as it stands. Transport
        faults are retried for `retry_deadline_s` (default: the configured deadline)."""
        transport = self._lane(company).transport
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
        return await self.get(job_id, company)

    async def find(
        self,
        workflow_run_id: str,
        idempotency_key: str,
        company: str = LOCAL_COMPANY,
        retry_deadline_s: float | None = None,
    ) -> JobInfo | None:
        """The job submitted under `idempotency_key` for the run, if one exists: it is looked
        up, never created (`GET /jobs?workflow_run_id=`, page by page)."""
        transport = self._lane(company).transport
        offset = 0
        while True:
            params = {
                "workflow_run_id": workflow_run_id,
                "per_page": str(_PAGE),
                "offset": str(offset),
            }
            page = await transport.call(
                "GET", "/jobs", jobs_page_from_json, params=params,
                retry_deadline_s=retry_deadline_s,
            )  # fmt: skip
            found = next((job for job in page if job.idempotency_key == idempotency_key), None)
            if found is not None or len(page) < _PAGE:
                return found
            offset += len(page)

    async def wait(self, job_id: str, company: str = LOCAL_COMPANY) -> JobInfo:
        """Return the job once it is completed, failed or cancelled.

        Raises `JobNotFound` if the job vanished, `JobsCommunicationError` if the jobs API stayed
        unreachable past the deadline, `JobsClientClosed` if the client closed meanwhile.
        Cancelling the caller removes its registration.
        """
        lane = self._lane(company)
        future = lane.registry.add(job_id, asyncio.get_running_loop().time(), lane.live_since)
        lane.ensure_watcher()
        try:
            return await future
        finally:
            lane.registry.discard(job_id, future)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(lane.aclose() for lane in self._lanes.values()))
        if self._session is not None and self._given_session is None:
            await self._session.close()

    @property
    def stats(self) -> dict[str, int]:
        """Counters for metrics; `awaited` is the number of distinct jobs being waited for."""
        counters = asdict(self._stats)
        lanes = self._lanes.values()
        counters["awaited"] = sum(len(lane.registry) for lane in lanes)
        counters["polling"] = sum(
            int(lane.watcher is not None and lane.watcher.polling) for lane in lanes
        )
        counters["watching"] = sum(int(lane.watching) for lane in lanes)
        return counters

    def _lane(self, company: str) -> _Lane:
        if self._closed:
            raise JobsClientClosed()
        if self._session is None:
            raise RuntimeError("JobsClient used before start()")
        lane = self._lanes.get(company)
        if lane is None:
            lane = self._lanes[company] = _Lane(
                self._config,
                self._session,
                self._stats,
                self._config.company or company,
                self._credential,
                self._turns,
                self._spans,
            )
        return lane


def server_trust(config: JobsClientConfig) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
    """How the jobs API's certificate is checked: pinned (its exact certificate, whatever its
    name or issuer: the local data plane's), chained to a given CA, or to the system's."""
    if config.pinned_sha256 is not None:
        return aiohttp.Fingerprint(config.pinned_sha256)
    if config.ca_file:
        return ssl.create_default_context(cafile=config.ca_file)
    return True
