"""Server-Sent Events for the page: one stream per page, fed by the event hub through the same
watches gRPC's WatchRun and WatchRuns use, with no polling.

Updates are coalesced on the server: the events that arrive while a fragment is being sent,
or within `interval_s` of the last one, become one fresh rendering of the page's live part
(the runs table, a run's header and timeline). Each message holds the whole of that part, as
it stands after the event it is numbered with, so a background tab that missed messages, a
burst of 500 events a second, or a reconnection shows the right state at the next message,
never a timeline patched out of order. Each message's `id` is the position of its last event
(a run's `seq`, or the company's `global_seq`); a browser that reconnects sends it back as
`Last-Event-ID`, and the stream resumes from the events after it. A comment line every
`heartbeat_s` keeps proxies from closing an idle stream. Every stream checks that its
session still holds after each burst, each heartbeat and each reload of the tokens
(`Reloads`), so a revoked token's streams end at its reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp.web as aioweb

from workflowd.domain.errors import WorkflowdError
from workflowd.domain.run import RunEvent

Render = Callable[[], Awaitable[dict[str, str]]]
"""The live part's fragments now, by SSE event name."""


def subscriber() -> tuple[asyncio.Event, Callable[[], Awaitable[None]]]:
    """An event, and the `on_subscribed` callback of a watch that sets it."""
    subscribed = asyncio.Event()

    async def ready() -> None:
        subscribed.set()

    return subscribed, ready


class Reloads:
    """Wakes every live stream when the tokens are reloaded, so that each checks its session
    then rather than at its next event or heartbeat."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def happened(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def next(self) -> Awaitable[bool]:
        """Done at the next reload (bound now: a reload before the first await counts)."""
        return self._event.wait()


@dataclass(frozen=True, slots=True)
class LiveTiming:
    heartbeat_s: float = 15.0
    interval_s: float = 0.05
    """The least time between two messages: what a burst of events is coalesced into."""


def last_event_id(request: aioweb.Request) -> int:
    """The position a reconnecting browser resumes from (0: none, or not one we sent)."""
    text = request.headers.get("Last-Event-ID", "")
    return int(text) if text.isdigit() and len(text) < 19 else 0


def message(event: str, data: str, event_id: int | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


async def open_stream(request: aioweb.Request) -> aioweb.StreamResponse:
    response = aioweb.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def stream(
    response: aioweb.StreamResponse,
    events: AsyncIterator[RunEvent],
    position: Callable[[RunEvent], int],
    render: Render,
    still_valid: Callable[[], bool],
    timing: LiveTiming,
    reloads: Reloads,
    *,
    subscribed: asyncio.Event,
    render_first: bool,
    start: int,
) -> None:
    """Send `render`'s fragments after each burst of `events` until they end (then an `end`
    message, which closes the page's EventSource), the client leaves, or the session stops
    holding. `render_first`: send the current state as soon as `subscribed` is set (the
    watch sets it once no later event can be missed), for a stream that resumes from nothing
    and may have missed events since the page was rendered."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    last = start
    ended = False

    async def pump() -> None:
        nonlocal last, ended
        async for event in events:
            last = max(last, position(event))
            changed.set()
        ended = True
        changed.set()

    feeder = asyncio.create_task(pump(), name="web-live-events")
    sent_at = loop.time() - timing.interval_s
    try:
        if render_first:
            ready = asyncio.create_task(subscribed.wait())
            await asyncio.wait({ready, feeder}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            changed.set()
        while True:
            waiter = asyncio.create_task(changed.wait())
            reloaded = asyncio.ensure_future(reloads.next())
            done, _ = await asyncio.wait(
                {waiter, feeder, reloaded},
                timeout=timing.heartbeat_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            reloaded.cancel()
            if feeder in done and feeder.exception() is not None and not changed.is_set():
                await _end(response, feeder.exception())
                return
            if not still_valid():
                await response.write(message("end", "signed out"))
                return
            if not changed.is_set():
                await response.write(b": heartbeat\n\n")
                continue
            wait = sent_at + timing.interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # coalesce a burst into one message
            changed.clear()
            through = last
            try:
                fragments = await render()
            except WorkflowdError as exc:
                await _end(response, exc)
                return
            for name, fragment in fragments.items():
                await response.write(message(name, fragment, through))
            sent_at = loop.time()
            if ended and not changed.is_set():
                await response.write(message("end", "the run has ended", through))
                return
    except ConnectionResetError:
        return  # the browser left (a closed tab, a navigation, a daemon that drains)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, WorkflowdError):
            await feeder


async def _end(response: aioweb.StreamResponse, error: BaseException | None) -> None:
    said = error.message if isinstance(error, WorkflowdError) else "the stream stopped"
    await response.write(message("end", said))
