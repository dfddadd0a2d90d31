"""Delivering the webhooks' outbox: due deliveries are claimed from the store, sent in their own
tasks (at most `max_concurrent` at once, so a receiver that hangs holds a few slots and never
a run), and their outcome recorded: DELIVERED on a 2xx, PENDING again after the shared backoff,
FAILED once the next attempt would pass the delivery's deadline.

A delivery whose outcome was never recorded (the process died while sending) comes due again
when its claim runs out, and is sent again under the same delivery id: the receiver, which
deduplicates by that id, hears each notice once. The loop sleeps until the next delivery is
due, or until a transaction adds one (the store calls `wake`, from its writer's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from workflowd.domain import ids
from workflowd.domain.errors import InvalidRequest, WorkflowdError
from workflowd.domain.json import JsonObject
from workflowd.domain.notify import (
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    Destination,
    NotifyPolicy,
    Sent,
)
from workflowd.domain.page import Page
from workflowd.domain.retry import Backoff
from workflowd.engine.clock import Clock
from workflowd.engine.metrics import EngineMetrics

log = logging.getLogger("workflowd.webhooks")

_MAX_NAME_CHARS = 64


class OutboxStore(Protocol):
    def watch_outbox(self, wake: Callable[[], None]) -> None: ...

    async def claim_deliveries(
        self, now: datetime, lease_s: float, limit: int
    ) -> list[Delivery]: ...

    async def settle_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        status: DeliveryStatus,
        next_at: datetime | None = None,
        error: str = "",
        http_status: int = 0,
    ) -> None: ...

    async def prune_deliveries(self, before: datetime) -> None: ...

    async def next_delivery_at(self) -> datetime | None: ...


class DeliveryReads(Protocol):
    async def list_deliveries(
        self, company: str, filt: DeliveryFilter, size: int, token: str
    ) -> Page[Delivery]: ...


class DeliveryLog:
    """What became of a company's notices (ListDeliveries)."""

    def __init__(self, store: DeliveryReads) -> None:
        self._store = store

    async def list(
        self, company: str, filt: DeliveryFilter, size: int, token: str
    ) -> Page[Delivery]:
        if filt.run_id:
            ids.check_uuid("run_id", filt.run_id, "run")
        if len(filt.destination) > _MAX_NAME_CHARS:
            raise InvalidRequest("destination", f"is at most {_MAX_NAME_CHARS} characters")
        return await self._store.list_deliveries(company, filt, size, token)


class Sender(Protocol):
    async def send(
        self, destination: Destination, delivery_id: str, payload: JsonObject, timestamp: int
    ) -> Sent: ...


@dataclass(frozen=True, slots=True)
class DeliveryLimits:
    max_concurrent: int = 8
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, max_delay_s=600.0, spread=0.5))
    # A claim outlives the longest attempt (a destination's timeout is at most 60 s); one
    # left by a process that died is let go at once by the next (alone on its store), or runs
    # out for another replica.
    lease_s: float = 90.0
    # The outbox is looked at this often even when nothing woke the loop: rows another
    # replica committed, and the pruning of old ones.
    idle_s: float = 30.0
    keep_s: float = 7 * 86400.0
    batch: int = 64


class Deliverer:
    """`start()` once, `aclose()` to stop (idempotent); `policy` is read at each attempt, so a
    reload applies to the deliveries still pending."""

    def __init__(
        self,
        store: OutboxStore,
        sender: Sender,
        clock: Clock,
        metrics: EngineMetrics,
        policy: Callable[[], NotifyPolicy],
        limits: DeliveryLimits | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._metrics = metrics
        self._policy = policy
        self._limits = limits or DeliveryLimits()
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._pruned_at: datetime | None = None

    def start(self) -> None:
        if self._loop_task is not None:
            raise RuntimeError("the deliverer is already started")
        loop = asyncio.get_running_loop()

        def wake() -> None:  # on the store's writer thread
            loop.call_soon_threadsafe(self._wake.set)

        self._store.watch_outbox(wake)
        self._loop_task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def aclose(self) -> None:
        """Stop sending; a delivery cut short stays claimed and is sent again after its claim
        runs out (by the next process, or another replica)."""
        tasks = [*self._sending]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
            self._loop_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim()
                wait_s = await self._idle_for()
            except WorkflowdError as exc:  # the store refuses for now: try again later
                log.warning("webhook deliveries wait: %s", exc.message)
                wait_s = self._limits.idle_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def _claim(self) -> None:
        limits = self._limits
        free = limits.max_concurrent - len(self._sending)
        now = self._clock.now()
        if free > 0:
            for delivery in await self._store.claim_deliveries(
                now, limits.lease_s, min(free, limits.batch)
            ):
                task = asyncio.create_task(self._deliver(delivery), name="webhook-delivery")
                self._sending.add(task)
                task.add_done_callback(self._sent)
        if self._pruned_at is None or now - self._pruned_at > timedelta(hours=1):
            await self._store.prune_deliveries(now - timedelta(seconds=limits.keep_s))
            self._pruned_at = now

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook delivery failed unexpectedly", exc_info=task.exception())

    async def _idle_for(self) -> float:
        """Seconds until the next delivery is due (at most `idle_s`)."""
        if len(self._sending) >= self._limits.max_concurrent:
            return self._limits.idle_s  # a finished delivery wakes the loop
        due = await self._store.next_delivery_at()
        if due is None:
            return self._limits.idle_s
        return min(max((due - self._clock.now()).total_seconds(), 0.0), self._limits.idle_s)

    async def _deliver(self, delivery: Delivery) -> None:
        destination = self._policy().destination(delivery.destination)
        if destination is None:
            said = f"destination {delivery.destination!r} is no longer configured"
            await self._settle(delivery, Sent(False, error=said), give_up=True)
            return
        now = self._clock.now()
        sent = await self._sender.send(
            destination, delivery.delivery_id, delivery.payload, int(now.timestamp())
        )
        await self._settle(delivery, sent)

    async def _settle(self, delivery: Delivery, sent: Sent, give_up: bool = False) -> None:
        now = self._clock.now()
        next_at = now + timedelta(seconds=self._limits.backoff.delay(delivery.attempts))
        if sent.delivered:
            status = DeliveryStatus.DELIVERED
        elif give_up or next_at > delivery.deadline_at:
            status = DeliveryStatus.FAILED
        else:
            status = DeliveryStatus.PENDING
        self._observe(delivery, sent, status)
        try:
            await self._store.settle_delivery(
                delivery.delivery_id,
                now,
                status=status,
                next_at=next_at if status == DeliveryStatus.PENDING else None,
                error=sent.error,
                http_status=sent.http_status,
            )
        except WorkflowdError as exc:
            # Its claim runs out and it is sent again, under the same delivery id.
            log.warning("webhook %s not settled: %s", delivery.delivery_id, exc.message)

    def _observe(self, delivery: Delivery, sent: Sent, status: DeliveryStatus) -> None:
        outcome = {
            DeliveryStatus.DELIVERED: "delivered",
            DeliveryStatus.PENDING: "retried",
            DeliveryStatus.FAILED: "failed",
        }[status]
        labels = self._metrics.workflow(delivery.company, delivery.namespace, delivery.name)
        self._metrics.webhook_deliveries.labels(delivery.destination, outcome, *labels).inc()
        fields = {"run_id": delivery.run_id, "delivery_id": delivery.delivery_id}
        what = f"webhook {delivery.event} for {delivery.namespace}/{delivery.name}"
        where = f"to {delivery.destination} (attempt {delivery.attempts})"
        if status == DeliveryStatus.FAILED:
            log.warning("%s %s given up: %s", what, where, sent.error, extra=fields)
        elif status == DeliveryStatus.PENDING:
            log.info("%s %s failed, to be retried: %s", what, where, sent.error, extra=fields)
