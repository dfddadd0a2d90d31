"""Resolves every waiter of a client from ONE shared event stream, or by batched polling.

Three loops run in one task group:
- the stream loop holds `GET /jobs/events?tag=…`, resumes with `Last-Event-ID`, and resolves
  waiters from `job` events; it gives way to the poll loop when the API has no stream;
- the poll loop (only without a stream) re-reads every awaited job in batches, backing off while
  nothing changes;
- the fresh loop re-reads jobs no event may ever tell about: those just awaited (they may have
  ended before we listened) and all of them after a gap (first connect, `reset`).

Transport faults in any loop start an outage clock; a waiter whose job has been unobservable for
`retry_deadline_s` fails with `JobsCommunicationError`. Any success stops the clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import aiohttp

from workflowd.domain.retry import BackoffDelays
from workflowd.jobs.config import JobsClientConfig
from workflowd.jobs.errors import JobNotFound, JobRejected, JobsCommunicationError, JobsError
from workflowd.jobs.parse import job_info_from_json, jobs_page_from_json, problem_detail
from workflowd.jobs.registry import TERMINAL_STATES, WaiterRegistry
from workflowd.jobs.sse import EventTooLarge, SseEvent, StreamIdle, iter_events
from workflowd.jobs.transport import ClientStats, TransientFault, Transport, describe_fault
from workflowd.jobs.urls import path

logger = logging.getLogger("workflowd.jobs")

# `GET /jobs?ids=` takes up to 500 ids, but 500 UUIDs make an 18 KB request line and many HTTP
# servers (aiohttp's default among them) refuse lines over 8 KB: 150 ids stay near 5.5 KB.
BATCH_SIZE = 150
_NO_STREAM_STATUSES = frozenset({404, 405, 501})
_STREAM_FAULTS = (aiohttp.ClientError, OSError, TimeoutError, StreamIdle, EventTooLarge)


class _StreamUnavailable(Exception):
    """The jobs API does not serve `/jobs/events`."""


class Watcher:
    def __init__(
        self,
        config: JobsClientConfig,
        transport: Transport,
        session: aiohttp.ClientSession,
        registry: WaiterRegistry,
        stats: ClientStats,
    ) -> None:
        self._config = config
        self._transport = transport
        self._session = session
        self._registry = registry
        self._stats = stats
        self._last_event_id: str | None = None
        self._outage_since: float | None = None
        self.polling = False
        self.live_since: float | None = None
        """Loop time since which every change of this client's jobs reaches `_handle`: the
        stream has been connected since, or resumed after each drop without losing an event
        (the jobs API sends every change made after its answer's headers; docs/jobs-api.md).
        None while polling, or before the first connection."""
        # The stream may idle for as long as the server stays silent; `iter_events` times that.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.request_timeout_s, sock_read=None
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._fresh_loop(), name="workflowd.jobs.fresh")
            group.create_task(self._drive(), name="workflowd.jobs.stream")
            group.create_task(self._safety_net(), name="workflowd.jobs.safety-net")

    async def _safety_net(self) -> None:
        """Re-read every awaited job now and then, even while the stream looks healthy: a
        remote jobs system may lose an event or drop a job without a word, and no run should
        wait forever on that. One batched read per interval, whatever the number of jobs."""
        while True:
            await asyncio.sleep(self._config.reconcile_interval_s)
            if len(self._registry):
                self._registry.mark_all_fresh()

    async def _drive(self) -> None:
        await self._stream_loop()
        self.polling = True
        self.live_since = None
        logger.warning("jobs API serves no event stream: polling awaited jobs in batches")
        await self._poll_loop()

    # --- the shared stream -------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        backoff = self._config.backoff.delays()
        failures = 0
        while True:
            connects = self._stats.stream_connects
            try:
                await self._stream_once(backoff)
                fault = TransientFault("event stream ended by the server")
            except _StreamUnavailable:
                return
            except TransientFault as exc:
                fault = exc
            # Count consecutive attempts that never connected; a drop after a connect is one.
            failures = 1 if self._stats.stream_connects > connects else failures + 1
            self._transport.note_fault(fault, "GET /jobs/events", None)
            self._on_fault(fault)
            if failures > 1:
                # Not a blip that `Last-Event-ID` will cover but a stream outage: read the
                # awaited jobs at each reconnect attempt so they still end meanwhile.
                self._registry.mark_all_fresh()
            await asyncio.sleep(backoff.next())

    async def _stream_once(self, backoff: BackoffDelays) -> None:
        """One connection, until the server ends it; faults raise TransientFault."""
        headers, sent = self._transport.headers()
        headers["Accept"] = "text/event-stream"
        resumed = self._last_event_id is not None
        if self._last_event_id is not None:
            headers["Last-Event-ID"] = self._last_event_id
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                response = await self._session.get(
                    self._transport.url("/jobs/events"),
                    params={"tag": self._config.tag},
                    headers=headers,
                    timeout=self._stream_timeout,
                    raise_for_status=False,
                )
            async with response:
                await self._check_stream_status(response, sent)
                self._stats.stream_connects += 1
                self._on_success()
                backoff.reset()
                if not resumed:
                    self.live_since = asyncio.get_running_loop().time()
                    self._registry.mark_all_fresh()  # whatever ended before we listened
                await self._consume(response)
        except EventTooLarge as exc:
            # Resuming would replay the same oversized event forever: start afresh instead.
            self._last_event_id = None
            raise TransientFault(f"event larger than {self._config.max_event_bytes} bytes") from exc
        except _STREAM_FAULTS as exc:
            raise TransientFault(describe_fault(exc, self._config.request_timeout_s)) from exc

    async def _check_stream_status(
        self, response: aiohttp.ClientResponse, sent: str | None
    ) -> None:
        if response.status == 200:
            return
        if response.status in _NO_STREAM_STATUSES:
            raise _StreamUnavailable
        detail = problem_detail(await response.read(), response.status, response.reason)
        stale = self._transport.refused_stale(response.status, sent)
        if 400 <= response.status < 500 and response.status != 429 and not stale:
            # e.g. a wrong token: no waiter can ever be resolved, so tell them all now.
            self._registry.fail_all(lambda: JobRejected(response.status, detail))
        raise TransientFault(f"event stream answered HTTP {response.status}: {detail}")

    async def _consume(self, response: aiohttp.ClientResponse) -> None:
        events = iter_events(
            response.content,
            idle_timeout_s=self._config.stream_idle_timeout_s,
            max_line_bytes=self._config.max_event_bytes,
        )
        async for event in events:
            self._handle(event)

    def _handle(self, event: SseEvent) -> None:
        if event.id is not None:
            self._last_event_id = event.id
        if event.event == "reset":
            # Our Last-Event-ID was too old: events were lost, so re-read every awaited job.
            self._stats.stream_resets += 1
            logger.warning("jobs event stream reset (%s): reconciling", event.data)
            self.live_since = asyncio.get_running_loop().time()
            self._registry.mark_all_fresh()
            return
        if event.event not in ("job", "message") or not self._registry.listening:
            return
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            data = None
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if not isinstance(job_id, str):
            # An event we cannot read may have been the end of an awaited job, and resuming
            # after its id will never replay it: re-read every awaited job instead.
            logger.warning("jobs event stream sent an unreadable event (id %s)", event.id)
            self._registry.mark_all_fresh()
            return
        if job_id not in self._registry:
            # Its end may come before the answer to its POST, and so before its waiter.
            if data.get("state") in TERMINAL_STATES:
                now = asyncio.get_running_loop().time()
                self._registry.keep_end(job_id, data, len(event.data), now)
            return
        try:
            self._registry.observe(job_info_from_json(data))
        except JobsError as exc:
            logger.warning("bad job event: %s", exc, extra={"job_id": job_id})
            self._registry.mark_fresh((job_id,))  # read it properly instead

    # --- polling and reconciliation ------------------------------------------------------------

    async def _poll_loop(self) -> None:
        interval = self._config.poll_interval_initial_s
        while True:
            await self._registry.nonempty.wait()
            self._stats.poll_rounds += 1
            try:
                changed = await self._reconcile(self._registry.ids())
            except TransientFault as fault:
                self._on_fault(fault)
                changed = False
            if changed:
                interval = self._config.poll_interval_initial_s
            else:
                interval = min(interval * 2, self._config.poll_interval_max_s)
            await asyncio.sleep(interval)

    async def _fresh_loop(self) -> None:
        backoff = self._config.backoff.delays()
        while True:
            await self._registry.fresh_added.wait()
            job_ids = self._registry.take_fresh()
            try:
                await self._reconcile(job_ids)
            except TransientFault as fault:
                self._registry.mark_fresh(job_ids)
                self._on_fault(fault)
                await asyncio.sleep(backoff.next())
            else:
                backoff.reset()

    async def _reconcile(self, job_ids: Sequence[str]) -> bool:
        """Re-read awaited jobs in batches; resolve the ended ones. True if any state moved."""
        changed = False
        for start in range(0, len(job_ids), BATCH_SIZE):
            chunk = [
                job_id for job_id in job_ids[start : start + BATCH_SIZE] if job_id in self._registry
            ]
            if chunk:
                changed |= await self._reconcile_batch(chunk)
        return changed

    async def _reconcile_batch(self, chunk: list[str]) -> bool:
        self._stats.reconcile_requests += 1
        params = {"ids": ",".join(chunk), "per_page": str(len(chunk))}
        try:
            infos = await self._transport.attempt(
                "GET", "/jobs", jobs_page_from_json, params=params
            )
        except JobRejected as exc:
            for job_id in chunk:
                self._registry.fail(job_id, exc)
            return True
        self._on_success()
        changed = False
        for info in infos:
            changed |= self._registry.observe(info)
        seen = {info.job_id for info in infos}
        for job_id in chunk:
            if job_id not in seen and job_id in self._registry:
                changed |= await self._confirm_missing(job_id)
        return changed

    async def _confirm_missing(self, job_id: str) -> bool:
        # Absent from a batch read: confirm one by one, so that a server paging or capping
        # `ids` differently from us never makes a live job look vanished.
        try:
            info = await self._transport.attempt(
                "GET", path("jobs", job_id), job_info_from_json, job_id=job_id
            )
        except (JobNotFound, JobRejected) as exc:
            self._registry.fail(job_id, exc)
            return True
        return self._registry.observe(info)

    # --- the outage clock ---------------------------------------------------------------------

    def _on_success(self) -> None:
        self._outage_since = None

    def _on_fault(self, fault: TransientFault) -> None:
        now = asyncio.get_running_loop().time()
        if self._outage_since is None:
            self._outage_since = now
        cutoff = now - self._config.retry_deadline_s
        if self._outage_since > cutoff:
            return
        deadline = self._config.retry_deadline_s
        failed = self._registry.fail_awaited_since(
            cutoff,
            lambda: JobsCommunicationError(f"jobs API unreachable for {deadline:g} s: {fault}"),
        )
        if failed:
            logger.warning("failed %d waiters: jobs API unreachable for %g s", failed, deadline)
