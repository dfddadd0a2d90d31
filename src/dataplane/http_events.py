"""Server-sent event streams of job changes.

`GET /jobs/{id}/events`: the job's current state first, then each change, closed after the
terminal one. `GET /jobs/events`: every matching change; with `Last-Event-ID` the stored
changes after that id are replayed before live ones, or a `reset` event says the id is older
than what is retained. Both subscribe to the hub *before* reading the store, and skip live
events they already sent, so nothing falls between the stored and the live part.

A stream lives no longer than the token that opened it: when a reload removes that token, or
gives it to another company, the stream ends (`OpenStreams.revoke`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from dataplane.auth import TokenTable
from dataplane.company import Company
from dataplane.errors import BadRequest, NotFound
from dataplane.http_common import CALLER_KEY, Caller, parse_int
from dataplane.http_jobs import CompanyOf, job_filter, job_id_of
from dataplane.hub import Event, StreamClosed, Subscription
from dataplane.model import MAX_INT64
from dataplane.store import JobFilter

log = logging.getLogger(__name__)

_REPLAY_PAGE = 1000
_REVOKED = "the token this stream was opened with was revoked, or now belongs to another company"


class OpenStreams:
    """The event streams open now, by the token that opened them."""

    def __init__(self, tokens: Callable[[], TokenTable | None]) -> None:
        self._tokens = tokens
        self._open: dict[Subscription, Caller] = {}

    @contextmanager
    def held(self, request: web.Request, subscription: Subscription) -> Iterator[None]:
        caller = request.get(CALLER_KEY)
        if caller is None:  # no tokens at all: nothing can be revoked
            yield
            return
        self._open[subscription] = caller
        table = self._tokens()
        if table is not None and not table.grants(caller.sha256, caller.principal):
            subscription.close(_REVOKED)  # revoked while the request was on its way here
        try:
            yield
        finally:
            self._open.pop(subscription, None)

    def revoke(self, table: TokenTable) -> int:
        """Ends the streams whose token `table` no longer grants their company; how many."""
        ended = 0
        for subscription, caller in list(self._open.items()):
            if not table.grants(caller.sha256, caller.principal):
                subscription.close(_REVOKED)
                ended += 1
        if ended:
            log.info("ended %d event streams whose token was revoked or moved", ended)
        return ended


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event_id: int, data: str) -> None:
    await response.write(f"id: {event_id}\nevent: job\ndata: {data}\n\n".encode())


class EventRoutes:
    def __init__(self, company_of: CompanyOf, keepalive_s: float, streams: OpenStreams) -> None:
        self._company_of = company_of
        self._keepalive_s = keepalive_s
        self._streams = streams

    def routes(self) -> list[web.RouteDef]:
        # Registered before `/jobs/{job_id}` so that "events" is not taken for a job id.
        return [
            web.get("/jobs/events", self.all_events),
            web.get("/jobs/{job_id}/events", self.job_events),
        ]

    async def job_events(self, request: web.Request) -> web.StreamResponse:
        job_id = job_id_of(request)
        company = await self._company_of(request)
        with (
            company.hub.subscribe(lambda job: job.job_id == job_id) as subscription,
            self._streams.held(request, subscription),
        ):
            found = await company.get(job_id)
            if found is None:
                raise NotFound(f"no job {job_id}")
            job, last_sent = found
            response = await _open(request)
            try:
                await _send(response, last_sent, Event.of(last_sent, job).data)
                if not job.state.terminal:
                    await self._follow(response, subscription, last_sent, until_terminal=True)
            except (ConnectionResetError, StreamClosed):
                pass  # the client left, or the data plane is closing: just end the stream
            return response

    async def all_events(self, request: web.Request) -> web.StreamResponse:
        where = job_filter(request)
        if where.states or where.ids:
            raise BadRequest("event streams filter by tag, type and workflow_run_id only")
        after = _last_event_id(request)
        company = await self._company_of(request)
        with (
            company.hub.subscribe(where.matches) as subscription,
            self._streams.held(request, subscription),
        ):
            response = await _open(request)
            try:
                last_sent = 0
                if after is not None:
                    last_sent = await self._replay(response, company, where, after)
                await self._follow(response, subscription, last_sent, until_terminal=False)
            except (ConnectionResetError, StreamClosed):
                pass
            return response

    async def _replay(
        self, response: web.StreamResponse, company: Company, where: JobFilter, after: int
    ) -> int:
        """Sends the stored changes after `after`; returns the last id sent (or 0 after a reset)."""
        while True:
            (oldest, newest), changes = await company.changes_after(after, where, _REPLAY_PAGE)
            if after > newest or (oldest and after < oldest - 1):
                reason = f"event id {after} is not retained (retained: {oldest}..{newest})"
                data = json.dumps({"reason": reason})
                await response.write(f"event: reset\ndata: {data}\n\n".encode())
                return 0
            for event_id, data in changes:
                await _send(response, event_id, data)
                after = event_id
            if len(changes) < _REPLAY_PAGE:
                return after

    async def _follow(
        self,
        response: web.StreamResponse,
        subscription: Subscription,
        last_sent: int,
        *,
        until_terminal: bool,
    ) -> None:
        while True:
            event = await subscription.next(self._keepalive_s)
            if event is None:
                await response.write(b": keepalive\n\n")
                continue
            if event.event_id <= last_sent:
                continue
            await _send(response, event.event_id, event.data)
            last_sent = event.event_id
            if until_terminal and event.job.state.terminal:
                return


def _last_event_id(request: web.Request) -> int | None:
    header = request.headers.get("Last-Event-ID")
    if header:
        return parse_int(header, "the Last-Event-ID header", 0, MAX_INT64)
    raw = request.query.get("last_event_id")
    if not raw:
        return None
    return parse_int(raw, "query parameter last_event_id", 0, MAX_INT64)
