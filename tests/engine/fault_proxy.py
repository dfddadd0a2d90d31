"""A fault-injecting reverse proxy for the jobs HTTP API: a test double for the *network*.

It sits between workflowd's jobs client and a real jobs API (the real data plane), forwards
every request with an aiohttp `ClientSession`, and streams server-sent-event responses through
line by line (so `GET /jobs/events` works through it, keepalives included). On command it
injects the faults a real network or a real remote jobs system produces:

- `fail_next(n, status=503)`: answer an error status (problem+json) instead of forwarding;
- `reset_next(n)`: abort the client's TCP connection (RST) with no response; by default after
  the request reached the data plane, so the effect happened but the answer was lost;
- `stall_next(n, seconds)`: hold the answer back for `seconds` (after forwarding, by default);
- `malformed_next(n)`: answer `200` with a body that is not JSON (after forwarding);
- `vanish(job_id)`: the job is gone: `404` problem+json for its GET, cancel and events, absent
  from `GET /jobs` lists (`?ids=` included) and from the shared event stream;
- `vanish_next_created(n)`: the next `n` jobs created through `POST /jobs` vanish as soon as
  their creation is answered;
- `drop_streams(reset=False)`: cut every open event stream; with `reset`, the next stream
  connection first gets a `reset` event (the jobs system forgot the client's `Last-Event-ID`);
- `cut_streams_after(events, times)`: cut each of the next `times` stream connections after
  it has forwarded `events` events (drops that land mid-run, deterministically).

`n=None` means "until `heal()`". Rules match by `method` (None: any), an exact `path` or a
`path_prefix` (the request path, without the query). `injected` counts every fault injected
(`fail`, `reset`, `stall`, `malformed`, `vanish`, `drop`, `reset_event`); `requests` records
what passed, for assertions. Nothing here changes what the data plane stores or answers: the
data plane behind it is real, only the wire between is unreliable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

# Headers that describe one hop's connection, never forwarded (RFC 9110 §7.6.1), plus the
# ones aiohttp recomputes for the body it actually sends.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)
_STREAM_PATHS = ("/jobs/events",)


@dataclass
class _Rule:
    kind: str  # fail | reset | stall | malformed | vanish_created
    remaining: int | None  # None: until heal()
    method: str | None
    path: str | None
    path_prefix: str
    forward: bool  # forward to the data plane before injecting the fault
    status: int = 503
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is not None:
            return path == self.path
        return path.startswith(self.path_prefix)

    def take(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it, and what it did with it."""

    method: str
    path: str
    query: str
    outcome: str  # "forwarded", or the fault injected
    status: int | None
    last_event_id: str | None = None


@dataclass(eq=False)  # hashed by identity: kept in a set of open streams
class _Stream:
    request: web.Request
    upstream: aiohttp.ClientResponse
    cut: asyncio.Event = field(default_factory=asyncio.Event)


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.injected: Counter[str] = Counter()
        self.requests: list[Seen] = []
        self.vanished: set[str] = set()
        self.errors: list[str] = []  # the proxy's own failures (bugs), never injected faults
        self._rules: list[_Rule] = []
        self._streams: set[_Stream] = set()
        self._reset_next_stream = False
        self._garble_events = 0
        self._garble_state: str | None = None
        self._cut_after: tuple[int, int] | None = None  # (events, connections left)
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 << 20, middlewares=[self._record_errors])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def aclose(self) -> None:
        self._closing.set()
        self.drop_streams(count=False)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- programming faults ------------------------------------------------------------------

    def fail_next(
        self,
        n: int | None,
        status: int = 503,
        *,
        method: str | None = None,
        path: str | None = None,
        path_prefix: str = "/jobs",
        forward: bool = False,
    ) -> None:
        self._rules.append(_Rule("fail", n, method, path, path_prefix, forward, status=status))

    def reset_next(
        self,
        n: int | None,
        *,
        method: str | None = None,
        path: str | None = None,
        path_prefix: str = "/jobs",
        forward: bool = True,
    ) -> None:
        self._rules.append(_Rule("reset", n, method, path, path_prefix, forward))

    def stall_next(
        self,
        n: int | None,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        path_prefix: str = "/jobs",
        forward: bool = True,
    ) -> None:
        self._rules.append(_Rule("stall", n, method, path, path_prefix, forward, seconds=seconds))

    def malformed_next(
        self,
        n: int | None,
        *,
        method: str | None = None,
        path: str | None = None,
        path_prefix: str = "/jobs",
        forward: bool = True,
    ) -> None:
        self._rules.append(_Rule("malformed", n, method, path, path_prefix, forward))

    def vanish(self, job_id: str) -> None:
        self.vanished.add(job_id)

    def vanish_next_created(self, n: int = 1) -> None:
        self._rules.append(_Rule("vanish_created", n, "POST", "/jobs", "/jobs", True))

    def drop_streams(self, *, reset: bool = False, count: bool = True) -> int:
        """Cut every open event stream; returns how many were cut."""
        if reset:
            self._reset_next_stream = True
        cut = 0
        for stream in list(self._streams):
            if not stream.cut.is_set():
                stream.cut.set()
                cut += 1
        if count:
            self.injected["drop"] += cut
        return cut

    def garble_events(self, n: int, *, state: str | None = None) -> None:
        """Replace the data of the next `n` job events on the shared stream (those of jobs in
        `state`, if given) with a truncated, non-JSON line; the event's id and type stay."""
        self._garble_events += n
        self._garble_state = state

    def cut_streams_after(self, events: int, times: int) -> None:
        self._cut_after = (events, times)

    def heal(self) -> None:
        """Stop injecting: pending rules are discarded (vanished jobs stay vanished)."""
        self._rules.clear()
        self._cut_after = None
        self._reset_next_stream = False
        self._garble_events = 0

    @property
    def open_streams(self) -> int:
        return sum(1 for s in self._streams if not s.cut.is_set())

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.requests
            if (method is None or s.method == method) and (path is None or s.path == path)
        ]

    # --- the proxy ---------------------------------------------------------------------------

    @web.middleware
    async def _record_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # A bug in the proxy would answer 500, which the client retries like any 5xx: record
        # it so that tests can assert the proxy itself never failed.
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except web.HTTPException:
            raise
        except Exception as exc:
            self.errors.append(f"{request.method} {request.path_qs}: {exc!r}")
            raise

    def _rule_for(self, method: str, path: str) -> _Rule | None:
        for rule in self._rules:
            if rule.matches(method, path):
                rule.take()
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        body = await request.read()
        vanished = self._vanished_target(path)
        if vanished is not None:
            self.injected["vanish"] += 1
            self._note(request, "vanish", 404)
            return _problem(404, "Not found", f"no job {vanished}")
        rule = self._rule_for(method, path)
        if rule is not None and not rule.forward:
            return await self._inject(request, rule, None)
        if path in _STREAM_PATHS and method == "GET":
            return await self._stream(request, rule)
        try:
            status, headers, data = await self._forward(request, body)
        except (aiohttp.ClientError, OSError) as exc:
            self._note(request, "upstream error", 502)
            return _problem(502, "Bad gateway", f"data plane: {exc!r}")
        data = self._filter_body(method, path, status, data)
        if rule is not None and rule.kind == "vanish_created" and status in (200, 201):
            self.vanished.add(json.loads(data)["job_id"])
            self.injected["vanish_created"] += 1
            rule = None
        if rule is not None:
            return await self._inject(request, rule, (status, headers, data))
        self._note(request, "forwarded", status)
        return web.Response(status=status, body=data, headers=headers)

    async def _inject(
        self,
        request: web.Request,
        rule: _Rule,
        answer: tuple[int, dict[str, str], bytes] | None,
    ) -> web.StreamResponse:
        self.injected[rule.kind] += 1
        if rule.kind == "fail":
            self._note(request, "fail", rule.status)
            return _problem(rule.status, "Injected fault", f"fault proxy: HTTP {rule.status}")
        if rule.kind == "reset":
            self._note(request, "reset", None)
            _reset(request)
            return web.Response(status=204)  # never written: the connection is gone
        if rule.kind == "malformed":
            self._note(request, "malformed", 200)
            return web.Response(
                status=200, body=b"<html>502 upstream hiccup{", content_type="application/json"
            )
        # stall: hold the answer back (the client may give up meanwhile)
        self._note(request, "stall", answer[0] if answer else None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), rule.seconds)
        if answer is None:
            status, headers, data = await self._forward(request, await request.read())
        else:
            status, headers, data = answer
        return web.Response(status=status, body=data, headers=headers)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream_url + request.rel_url.path_qs,
            data=body if body else None,
            headers=_forwardable(request.headers),
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            return upstream.status, _forwardable(upstream.headers), data

    async def _stream(self, request: web.Request, rule: _Rule | None) -> web.StreamResponse:
        assert self._session is not None
        if rule is not None and rule.kind == "stall":
            self.injected["stall"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), rule.seconds)
        elif rule is not None:  # reset or malformed instead of a stream
            return await self._inject(request, rule, None)
        try:
            upstream = await self._session.get(
                self.upstream_url + request.rel_url.path_qs,
                headers=_forwardable(request.headers),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None),
            )
        except (aiohttp.ClientError, OSError) as exc:
            self._note(request, "upstream error", 502)
            return _problem(502, "Bad gateway", f"data plane: {exc!r}")
        stream = _Stream(request, upstream)
        try:
            self._streams.add(stream)
            self._note(request, "stream", upstream.status)
            if upstream.status != 200:
                data = await upstream.read()
                return web.Response(
                    status=upstream.status, body=data, headers=_forwardable(upstream.headers)
                )
            response = web.StreamResponse(status=200, headers=_forwardable(upstream.headers))
            await response.prepare(request)
            if self._reset_next_stream:
                self._reset_next_stream = False
                self.injected["reset_event"] += 1
                reason = json.dumps({"reason": "fault proxy: event history lost"})
                await response.write(f"event: reset\ndata: {reason}\n\n".encode())
            cut_after = None
            if self._cut_after is not None and self._cut_after[1] > 0:
                cut_after = self._cut_after[0]
                self._cut_after = (self._cut_after[0], self._cut_after[1] - 1)
            await self._pump(stream, response, cut_after)
            return response
        finally:
            self._streams.discard(stream)
            upstream.close()

    async def _pump(
        self, stream: _Stream, response: web.StreamResponse, cut_after: int | None
    ) -> None:
        """Forward events one at a time until the data plane ends the stream or it is cut."""
        cut = asyncio.ensure_future(stream.cut.wait())
        lines: list[bytes] = []
        sent = 0
        try:
            while True:
                read = asyncio.ensure_future(stream.upstream.content.readline())
                done, _ = await asyncio.wait({read, cut}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                        await read
                    break
                try:
                    line = read.result()
                except (aiohttp.ClientError, OSError):
                    break
                if not line:
                    break  # the data plane ended the stream
                lines.append(line)
                if line.strip():
                    continue
                event, lines = b"".join(lines), []
                if self._hides(event):
                    self.injected["vanish"] += 1
                    continue
                if self._garble_events > 0 and self._garbles(event):
                    self._garble_events -= 1
                    self.injected["garbled_event"] += 1
                    event = _garble(event)
                try:
                    await response.write(event)
                except (ConnectionError, RuntimeError):
                    return  # the client left
                if event.startswith(b":"):
                    continue  # keepalive
                sent += 1
                if cut_after is not None and sent >= cut_after and not stream.cut.is_set():
                    self.injected["drop"] += 1
                    stream.cut.set()
                    break
        finally:
            cut.cancel()
        # Cut: drop the client's connection mid-stream, with no terminating chunk.
        if stream.cut.is_set():
            _reset(stream.request)

    def _hides(self, event: bytes) -> bool:
        if not self.vanished:
            return False
        data = _event_data(event)
        return isinstance(data, dict) and data.get("job_id") in self.vanished

    def _garbles(self, event: bytes) -> bool:
        data = _event_data(event)
        if not isinstance(data, dict):
            return False
        return self._garble_state is None or data.get("state") == self._garble_state

    def _vanished_target(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "jobs" and parts[1] in self.vanished:
            return parts[1]
        return None

    def _filter_body(self, method: str, path: str, status: int, data: bytes) -> bytes:
        """Drop vanished jobs from `GET /jobs` lists."""
        if not self.vanished or method != "GET" or path != "/jobs" or status != 200:
            return data
        page: dict[str, Any] = json.loads(data)
        records = page.get("records", [])
        kept = [r for r in records if r.get("job_id") not in self.vanished]
        if len(kept) == len(records):
            return data
        self.injected["vanish"] += len(records) - len(kept)
        page["records"] = kept
        if isinstance(page.get("total_records"), int):
            page["total_records"] -= len(records) - len(kept)
        return json.dumps(page).encode()

    def _note(self, request: web.Request, outcome: str, status: int | None) -> None:
        self.requests.append(
            Seen(
                request.method,
                request.path,
                request.query_string,
                outcome,
                status,
                request.headers.get("Last-Event-ID"),
            )
        )


def _forwardable(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {
        "type": "https://workflowd.dev/problems/" + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def _event_data(event: bytes) -> Any:
    lines = [raw[5:] for raw in event.split(b"\n") if raw.startswith(b"data:")]
    if not lines:
        return None
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


def _garble(event: bytes) -> bytes:
    """The same event (id and type kept) with a data line that is not JSON."""
    kept = [line for line in event.split(b"\n") if line and not line.startswith(b"data:")]
    return b"\n".join([*kept, b'data: {"job_id": "trunc']) + b"\n\n"


def _reset(request: web.Request) -> None:
    """Abort the client's connection with a TCP RST: no response, no orderly close."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
