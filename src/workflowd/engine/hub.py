"""The in-process event hub: committed RunEvents fan out to live watchers.

Each subscriber has a bounded queue. One that falls behind is marked lagging and stops receiving;
its watcher then reads what it missed from the store, so a slow client never slows the engine or
grows memory without bound.

Alone on its store, the daemon publishes the events it commits as it commits them. Among
replicas sharing a store, events are delivered only by the follower of the shared event log
(`engine/replicas.py`), this replica's included: one order for every watcher, the log's.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from workflowd.domain.run import RunEvent


class HubClosed(Exception):
    """The hub is shutting down; the watcher should end its stream."""


_LAGGED = object()
_CLOSED = object()


@dataclass(eq=False)
class Subscription:
    accepts: Callable[[RunEvent], bool]
    capacity: int
    queue: asyncio.Queue[object] = field(init=False)
    lagging: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        # One slot more than the capacity so the lag or close marker always fits.
        self.queue = asyncio.Queue(self.capacity + 1)

    def offer(self, event: RunEvent) -> None:
        if self.lagging or self.closed or not self.accepts(event):
            return
        if self.queue.qsize() < self.capacity:
            self.queue.put_nowait(event)
            return
        self.lagging = True
        self._replace_with(_LAGGED)

    async def next(self) -> RunEvent | None:
        """The next live event, or None when the subscriber lagged and must re-read the store."""
        item = await self.queue.get()
        if item is _CLOSED:
            self.queue.put_nowait(_CLOSED)
            raise HubClosed
        if item is _LAGGED:
            self.lagging = False
            return None
        assert isinstance(item, RunEvent)
        return item

    def close(self) -> None:
        self.closed = True
        self._replace_with(_CLOSED)

    def _replace_with(self, marker: object) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(marker)


class EventHub:
    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._follows_log = False
        self._by_run: dict[str, set[Subscription]] = defaultdict(set)
        self._global: set[Subscription] = set()
        self._closed = False
        # Kept as subscriptions come and go: read on every subscribe, it must not walk them.
        self._count = 0

    @property
    def watchers(self) -> int:
        return self._count

    def subscribe_run(self, run_id: str) -> Subscription:
        self._check_open()
        sub = Subscription(lambda _: True, self._capacity)
        self._by_run[run_id].add(sub)
        self._count += 1
        return sub

    def subscribe(self, accepts: Callable[[RunEvent], bool]) -> Subscription:
        self._check_open()
        sub = Subscription(accepts, self._capacity)
        self._global.add(sub)
        self._count += 1
        return sub

    def unsubscribe(self, sub: Subscription, run_id: str = "") -> None:
        if sub in self._global:
            self._global.discard(sub)
            self._count -= 1
        subs = self._by_run.get(run_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            self._count -= 1
            if not subs:
                del self._by_run[run_id]

    def follow_log(self) -> None:
        """From now on only `deliver` fans events out (replicas: the log's order for all)."""
        self._follows_log = True

    def publish(self, events: Iterable[RunEvent]) -> None:
        """Events this process has just committed."""
        if not self._follows_log:
            self.deliver(events)

    def deliver(self, events: Iterable[RunEvent]) -> None:
        for event in events:
            for sub in self._by_run.get(event.run_id, ()):
                sub.offer(event)
            for sub in self._global:
                sub.offer(event)

    def close(self) -> None:
        self._closed = True
        for sub in [*self._global, *(s for subs in self._by_run.values() for s in subs)]:
            sub.close()

    def _check_open(self) -> None:
        if self._closed:
            raise HubClosed
