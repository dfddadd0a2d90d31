"""Live job changes fanned out to subscribers, on the event loop.

A change is published only after it committed, in event-id order. Each subscriber has a
bounded buffer; one that falls behind is closed rather than allowed to grow memory, and comes
back with `Last-Event-ID` to be served from the stored change log.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dataplane.model import Job


@dataclass(frozen=True)
class Event:
    event_id: int
    job: Job
    data: str = field(default="", compare=False)

    @classmethod
    def of(cls, event_id: int, job: Job) -> Event:
        return cls(event_id, job, json.dumps(job.to_json(), separators=(",", ":")))


class StreamClosed(Exception):
    """The subscription ended: the subscriber fell behind, or the data plane is closing."""


class Subscription:
    def __init__(self, wants: Callable[[Job], bool], max_buffered: int) -> None:
        self._wants = wants
        self._items: deque[Event] = deque()
        self._max = max_buffered
        self._wake = asyncio.Event()
        self._closed_because: str | None = None

    def offer(self, event: Event) -> None:
        if self._closed_because is not None or not self._wants(event.job):
            return
        if len(self._items) >= self._max:
            self.close("subscriber fell behind; reconnect with Last-Event-ID")
            return
        self._items.append(event)
        self._wake.set()

    def close(self, reason: str) -> None:
        if self._closed_because is None:
            self._closed_because = reason
            self._items.clear()
            self._wake.set()

    async def next(self, timeout_s: float) -> Event | None:
        """The next event, or None if none came within `timeout_s` (time for a keepalive)."""
        while not self._items:
            if self._closed_because is not None:
                raise StreamClosed(self._closed_because)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except TimeoutError:
                return None
        return self._items.popleft()


class Hub:
    def __init__(self, max_buffered: int) -> None:
        self._subscribers: set[Subscription] = set()
        self._max_buffered = max_buffered
        self._closed = False

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(event)

    @contextmanager
    def subscribe(self, wants: Callable[[Job], bool]) -> Iterator[Subscription]:
        subscription = Subscription(wants, self._max_buffered)
        if self._closed:
            subscription.close("the data plane is shutting down")
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def close(self) -> None:
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.close("the data plane is shutting down")
