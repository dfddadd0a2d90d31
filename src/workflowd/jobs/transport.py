"""One HTTP exchange with the jobs API, its error mapping, and the retry loop around it.

Everything aiohttp raises is translated here: transient faults (refused, reset, timeouts, 5xx,
429, a 2xx whose body is not JSON) become `TransientFault`, retried by `call()` with capped
exponential backoff and full jitter until the deadline; definite answers become `JobsError`s.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import yarl

from workflowd.domain.fairness import FairSlots
from workflowd.domain.json import JsonObject
from workflowd.domain.spans import CURRENT, SpanKind, SpanRecord, SpanSink, new_span_id, traceparent
from workflowd.jobs.config import JobsClientConfig
from workflowd.jobs.credential import Credential
from workflowd.jobs.errors import (
    IdempotencyConflict,
    JobRejected,
    JobsCommunicationError,
    MalformedResponse,
    job_not_found,
)
from workflowd.jobs.parse import decode_json, problem_detail
from workflowd.jobs.urls import Base

logger = logging.getLogger("workflowd.jobs")

T = TypeVar("T")

COMPANY_HEADER = "X-Workflowd-Company"

# Statuses that say "the server is there but not now": worth retrying.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_STALE = "HTTP 401 to a token replaced since (the local data plane restarted)"


class TransientFault(Exception):
    """A fault that a later attempt may not meet; `str()` says what happened, for humans."""


@dataclass
class ClientStats:
    stream_connects: int = 0
    stream_resets: int = 0
    api_errors: int = 0
    poll_rounds: int = 0
    reconcile_requests: int = 0


class Transport:
    def __init__(
        self,
        config: JobsClientConfig,
        session: aiohttp.ClientSession,
        stats: ClientStats,
        company: str,
        credential: Credential,
        turns: FairSlots,
        spans: SpanSink | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._stats = stats
        self._company = company
        self._credential = credential
        # The pool's connections, shared by every company's lane: companies take turns, so
        # one company's burst of calls delays another's call by one turn, not the whole burst.
        self._turns = turns
        self._spans = spans
        self._base = Base(config.base_url)
        # Bounds on the exchange itself (connecting, then each wait for bytes), not on the wait
        # for a pooled connection: a burst of calls queueing for the pool is not a fault.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=config.request_timeout_s,
            sock_read=config.request_timeout_s,
        )

    def headers(self) -> tuple[dict[str, str], str | None]:
        """The headers of a request now, and the token they carry (for `refused_stale`)."""
        # Every call acts for one company: a jobs system that trusts workflowd's (service)
        # token keeps each company's jobs apart by this header.
        headers = {COMPANY_HEADER: self._company}
        token = self._credential.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers, token

    def refused_stale(self, status: int, sent: str | None) -> bool:
        """A 401 to a request whose token was replaced since it was sent: worth a retry."""
        return status == 401 and self._credential.replaced(sent)

    def url(self, path: str) -> yarl.URL:
        """`path` must be built with `urls.path`: it is placed under the base as encoded."""
        return self._base.join(path)

    async def call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, str] | None = None,
        body: JsonObject | None = None,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        retry_deadline_s: float | None = None,
    ) -> T:
        """`attempt()` until it answers, retrying transient faults until the deadline (the
        configured one unless `retry_deadline_s` says otherwise)."""
        loop = asyncio.get_running_loop()
        patience = self._config.retry_deadline_s if retry_deadline_s is None else retry_deadline_s
        deadline = loop.time() + patience
        delays = self._config.backoff.delays()
        while True:
            try:
                return await self.attempt(
                    method,
                    path,
                    parse,
                    params=params,
                    body=body,
                    job_id=job_id,
                    idempotency_key=idempotency_key,
                )
            except TransientFault as fault:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise JobsCommunicationError(
                        f"jobs API unreachable for {patience:g} s: {fault}"
                    ) from fault
                await asyncio.sleep(min(delays.next(), remaining))

    async def attempt(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, str] | None = None,
        body: JsonObject | None = None,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> T:
        """One exchange: `parse` of the JSON of a 2xx, else `TransientFault` or a `JobsError`."""
        what = f"{method} {path}"
        headers, sent = self.headers()
        try:
            status, reason, data = await self._traced(method, path, params, body, headers, job_id)
            if 200 <= status < 300:
                return self._parse(parse, data)
            detail = problem_detail(data, status, reason)
            if status in _RETRY_STATUSES:
                raise TransientFault(f"HTTP {status}: {detail}")
            if self.refused_stale(status, sent):
                raise TransientFault(_STALE)
        except TransientFault as exc:
            self.note_fault(exc, what, job_id, idempotency_key)
            raise
        self._stats.api_errors += 1
        raise _definite_error(status, detail, method, path, job_id)

    @staticmethod
    def _parse(parse: Callable[[Any], T], data: bytes) -> T:
        try:
            return parse(decode_json(data))
        except MalformedResponse as exc:
            # A garbled 2xx is most likely a truncated or proxied reply: retry it.
            raise TransientFault(str(exc)) from None

    def note_fault(
        self, fault: Exception, what: str, job_id: str | None, idempotency_key: str | None = None
    ) -> None:
        self._stats.api_errors += 1
        extra = {"job_id": job_id, "idempotency_key": idempotency_key}
        logger.warning("jobs API fault on %s: %s", what, fault, extra=extra)

    async def _traced(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: JsonObject | None,
        headers: dict[str, str],
        job_id: str | None,
    ) -> tuple[int, str | None, bytes]:
        """The exchange, as a client span carrying `traceparent` when it is made for a task
        instance (`spans.CURRENT`); as it is otherwise."""
        current = CURRENT.get()
        if self._spans is None or current is None:
            return await self._exchange(method, path, params, body, headers)
        trace_id, parent_id = current
        span_id = new_span_id()
        headers["traceparent"] = traceparent(trace_id, span_id)
        began = time.time_ns()
        status, error = 0, ""
        try:
            status, reason, data = await self._exchange(method, path, params, body, headers)
        except TransientFault as fault:
            error = str(fault)
            raise
        finally:
            attributes: dict[str, str | int | bool] = {
                "http.request.method": method,
                "url.full": str(self.url(path)),
            }
            if status:
                attributes["http.response.status_code"] = status
                error = error or (f"HTTP {status}" if status >= 400 else "")
            if job_id:
                attributes["workflowd.job.id"] = job_id
            route = path.replace(job_id, "{job_id}") if job_id else path
            self._spans.record(
                SpanRecord(
                    f"{method} {route}", trace_id, span_id, parent_id, began, time.time_ns(),
                    attributes, SpanKind.CLIENT, error,
                )
            )  # fmt: skip
        return status, reason, data

    async def _exchange(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: JsonObject | None,
        headers: Mapping[str, str],
    ) -> tuple[int, str | None, bytes]:
        try:
            async with (
                self._turns.slot(self._company),
                self._session.request(
                    method,
                    self.url(path),
                    params=params,
                    json=body,
                    headers=headers,
                    timeout=self._timeout,
                    raise_for_status=False,  # statuses are ours to map, whatever the session says
                ) as response,
            ):
                return response.status, response.reason, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientFault(describe_fault(exc, self._config.request_timeout_s)) from exc


def _definite_error(
    status: int, detail: str, method: str, path: str, job_id: str | None
) -> Exception:
    if status == 404 and job_id is not None:
        return job_not_found(job_id)
    if status == 409 and method == "POST" and path == "/jobs":
        return IdempotencyConflict(f"idempotency conflict: {detail}")
    return JobRejected(status, detail)


def describe_fault(exc: BaseException, timeout_s: float) -> str:
    """A short human phrase for a transport exception ("connection refused", …)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the server"
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET:
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return f"no response within {timeout_s:g} s"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
