"""The webhooks' outbox (synchronous writes on the store's writer; reads on a pooled reader).

A notice is written in the transaction of the event it tells of: `Outbox.run_event` from
`RunTx` (every writer of a run's events goes through it), `Outbox.decision` with a schedule's
decision. One row per destination that wants it, under a delivery id derived from the event,
so recording an event twice (a fire retried after a crash) never delivers it twice. The
deliverer claims due rows for a while (`claim`), sends them, and records the outcome; a claim
that was never settled (the process died) comes due again when it runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from workflowd.domain.notify import (
    NOTIFY_FOR_DECISION,
    NOTIFY_FOR_RUN_EVENT,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    Destination,
    Notice,
    NotifyEvent,
    NotifyPolicy,
)
from workflowd.domain.page import Page
from workflowd.domain.run import RunEvent
from workflowd.domain.schedule import FireDecision
from workflowd.store.codec import dump, load, parse_ts, parse_ts_required, ts
from workflowd.store.paging import PageTokens
from workflowd.store.query import Reader, Select, keyset_page
from workflowd.store.sql import Conn, Row

_MAX_ERROR_CHARS = 500


class Outbox:
    """The operator's policy as the store's transactions see it. `policy` is replaced whole on
    a reload; `on_added` is called (on the writer's thread) when a transaction added rows."""

    def __init__(self) -> None:
        self.policy = NotifyPolicy()
        self.on_added: Callable[[], None] | None = None

    def run_event(self, conn: Conn, event: RunEvent) -> None:
        policy = self.policy  # one policy for the whole event, whatever a reload does meanwhile
        kind = NOTIFY_FOR_RUN_EVENT.get(event.type)
        if kind is None or kind not in policy.events:
            return
        run = conn.execute(
            "SELECT name, version, scheduled_at FROM runs WHERE id = ?", (event.run_id,)
        ).fetchone()
        found = policy.matching(kind, event.company, event.namespace, run["name"])
        if not found:
            return
        notice = Notice(
            event=kind,
            time=event.time,
            company=event.company,
            workflow_id=event.workflow_id,
            namespace=event.namespace,
            name=run["name"],
            version=run["version"],
            run_id=event.run_id,
            status=event.run_status.value,
            problem=event.error,
            scheduled_at=parse_ts(run["scheduled_at"]),
            reason=event.reason,
            task_reference=event.task_reference,
            attempt=event.attempt,
            retry_at=event.until,
            origin=f"{event.run_id}:{event.seq}",
        )
        self._add(conn, policy, notice, found)

    def decision(self, conn: Conn, workflow_id: str, decision: FireDecision | None) -> None:
        policy = self.policy
        kind = None if decision is None else NOTIFY_FOR_DECISION.get(decision.outcome)
        if decision is None or kind is None or kind not in policy.events:
            return
        schedule = conn.execute(
            "SELECT company, namespace, name, version FROM schedules WHERE workflow_id = ?",
            (workflow_id,),
        ).fetchone()
        if schedule is None:
            return
        company, namespace, name = schedule["company"], schedule["namespace"], schedule["name"]
        found = policy.matching(kind, company, namespace, name)
        if not found:
            return
        notice = Notice(
            event=kind,
            time=decision.decided_at,
            company=company,
            workflow_id=workflow_id,
            namespace=namespace,
            name=name,
            version=schedule["version"],
            run_id=decision.run_id,
            status=decision.outcome.value,
            scheduled_at=decision.instant,
            reason=decision.reason,
            origin=f"{workflow_id}:{ts(decision.instant)}",
        )
        self._add(conn, policy, notice, found)

    def _add(
        self, conn: Conn, policy: NotifyPolicy, notice: Notice, found: Sequence[Destination]
    ) -> None:
        deadline = notice.time + timedelta(seconds=policy.deadline_s)
        link = policy.link(notice.run_id)
        for destination in found:
            delivery_id = notice.delivery_id(destination.name)
            conn.execute(
                "INSERT INTO webhook_outbox (delivery_id, company, destination, event,"
                " workflow_id, namespace, name, run_id, payload, status, created_at, next_at,"
                " deadline_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (delivery_id) DO NOTHING",
                (
                    delivery_id, notice.company, destination.name, notice.event.value,
                    notice.workflow_id, notice.namespace, notice.name, notice.run_id,
                    dump(notice.payload(delivery_id, link)), DeliveryStatus.PENDING.value,
                    ts(notice.time), ts(notice.time), ts(deadline),
                ),
            )  # fmt: skip
        if self.on_added is not None:
            self.on_added()


def claim(conn: Conn, now: datetime, lease_s: float, limit: int) -> list[Delivery]:
    """Up to `limit` due deliveries, earliest first, each held for `lease_s` (not due again
    meanwhile, for this process or another replica), its attempt counted."""
    found = conn.execute(
        "UPDATE webhook_outbox SET claimed_until = ?, attempts = attempts + 1,"
        " last_attempt_at = ? WHERE seq IN (SELECT seq FROM webhook_outbox WHERE status = ?"
        " AND next_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
        f" ORDER BY next_at LIMIT ?{conn.dialect.lock_rows}) RETURNING *",
        (
            ts(now + timedelta(seconds=lease_s)), ts(now), DeliveryStatus.PENDING.value,
            ts(now), ts(now), limit,
        ),
    ).fetchall()  # fmt: skip
    return sorted((delivery(row) for row in found), key=lambda d: d.created_at)


def release(conn: Conn) -> None:
    """Every claim is let go: the only daemon on its store, starting, holds none (a claim left
    by a process that died is sent again at once, under the same delivery id)."""
    conn.execute(
        "UPDATE webhook_outbox SET claimed_until = NULL WHERE status = ?"
        " AND claimed_until IS NOT NULL",
        (DeliveryStatus.PENDING.value,),
    )


def settle(
    conn: Conn,
    delivery_id: str,
    now: datetime,
    *,
    status: DeliveryStatus,
    next_at: datetime | None = None,
    error: str = "",
    http_status: int = 0,
) -> None:
    """A delivery's attempt is over: DELIVERED, FAILED (given up), or PENDING again at
    `next_at`. Nothing changes for one settled already."""
    ended = None if status == DeliveryStatus.PENDING else ts(now)
    conn.execute(
        "UPDATE webhook_outbox SET status = ?, next_at = COALESCE(?, next_at),"
        " claimed_until = NULL, last_error = ?, last_http_status = ?, ended_at = ?"
        " WHERE delivery_id = ? AND status = ?",
        (
            status.value, ts(next_at), error[:_MAX_ERROR_CHARS], http_status, ended,
            delivery_id, DeliveryStatus.PENDING.value,
        ),
    )  # fmt: skip


def prune(conn: Conn, before: datetime) -> None:
    """Settled deliveries that ended before `before` go (the outbox keeps a recent history)."""
    conn.execute(
        "DELETE FROM webhook_outbox WHERE status != ? AND ended_at < ?",
        (DeliveryStatus.PENDING.value, ts(before)),
    )


async def next_due(reader: Reader) -> datetime | None:
    found = await reader.fetch(
        "SELECT MIN(CASE WHEN claimed_until > next_at THEN claimed_until ELSE next_at END)"
        " AS due FROM webhook_outbox WHERE status = ?",
        (DeliveryStatus.PENDING.value,),
    )
    return parse_ts(found[0]["due"]) if found else None


async def list_deliveries(
    reader: Reader,
    company: str,
    filt: DeliveryFilter,
    size: int,
    token: str,
    tokens: PageTokens,
) -> Page[Delivery]:
    """The company's deliveries, newest first."""
    statuses = [s.value for s in filt.statuses]
    filter_key = "|".join(["deliveries", company, filt.run_id, filt.destination, *statuses])
    select = (
        Select("webhook_outbox", "company = ?", company)
        .where_if(filt.run_id, "run_id = ?", filt.run_id)
        .where_if(filt.destination, "destination = ?", filt.destination)
        .where_in("status", statuses)
    )

    async def build(rows: Sequence[Any]) -> list[Delivery]:
        return [delivery(row) for row in rows]

    return await keyset_page(reader, select, size, token, filter_key, build, tokens)


def delivery(row: Row) -> Delivery:
    payload = load(row["payload"])
    return Delivery(
        delivery_id=row["delivery_id"],
        company=row["company"],
        destination=row["destination"],
        event=NotifyEvent(row["event"]),
        workflow_id=row["workflow_id"],
        namespace=row["namespace"],
        name=row["name"],
        run_id=row["run_id"],
        payload=payload if isinstance(payload, dict) else {},
        created_at=parse_ts_required(row["created_at"]),
        deadline_at=parse_ts_required(row["deadline_at"]),
        status=DeliveryStatus(row["status"]),
        attempts=int(row["attempts"]),
        next_at=parse_ts(row["next_at"]),
        last_attempt_at=parse_ts(row["last_attempt_at"]),
        last_error=row["last_error"],
        last_http_status=int(row["last_http_status"]),
        ended_at=parse_ts(row["ended_at"]),
    )


async def last_successes(reader: Reader, limit: int) -> list[tuple[str, str, str, datetime]]:
    """(company, namespace, name, ended at) of each workflow's last completed run, for the
    per-workflow metrics a restart starts from (the most recent `limit` workflows)."""
    found = await reader.fetch(
        "SELECT company, namespace, name, MAX(ended_at) AS ended FROM runs WHERE status = ?"
        " GROUP BY company, namespace, name ORDER BY ended DESC LIMIT ?",
        ("completed", limit),
    )
    return [
        (row["company"], row["namespace"], row["name"], parse_ts_required(row["ended"]))
        for row in found
    ]
