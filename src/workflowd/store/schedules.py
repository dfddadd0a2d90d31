"""Schedule persistence (synchronous; runs on the store's threads).

A fire is one transaction: its decision, the run it creates (if any), the cancel requests it
makes and the schedule's next instant. The decision is unique per (workflow, instant) and so is
a run per (workflow, scheduled instant): a second scheduler, or one restarted after a crash
right after the commit, finds the instant decided and does nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from workflowd.domain.definition import Schedule
from workflowd.domain.errors import NotFound
from workflowd.domain.page import Page
from workflowd.domain.run import ACTIVE_RUN_STATUSES, NewRun, Run, RunEvent, RunStatus, RunTrigger
from workflowd.domain.schedule import (
    Activation,
    ActiveRun,
    CatchupPolicy,
    FireDecision,
    FireOutcome,
    FireRequest,
    FireResult,
    NextFire,
    OverlapDecision,
    OverlapPolicy,
    SchedulePolicies,
    WorkflowSchedule,
    cancel_other_reason,
    decide_overlap,
)
from workflowd.store.codec import parse_ts, parse_ts_required, ts
from workflowd.store.query import Select, keyset_page
from workflowd.store.runs import get_run, insert_run
from workflowd.store.runtx import RunTx

RECENT_DECISIONS = 20
_ACTIVE = tuple(s.value for s in ACTIVE_RUN_STATUSES)
KEPT_DECISIONS = 200


def get(conn: sqlite3.Connection, company: str, workflow_id: str) -> WorkflowSchedule:
    row = conn.execute(
        "SELECT * FROM schedules WHERE workflow_id = ? AND company = ?", (workflow_id, company)
    ).fetchone()
    if row is None:
        raise NotFound(f"workflow {workflow_id} has no schedule: activate it with ScheduleWorkflow")
    return _from_row(conn, row)


def get_any(conn: sqlite3.Connection, workflow_id: str) -> WorkflowSchedule | None:
    row = conn.execute("SELECT * FROM schedules WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return None if row is None else _from_row(conn, row)


def due(conn: sqlite3.Connection) -> list[tuple[str, datetime]]:
    """Every active schedule and its next instant."""
    rows = conn.execute(
        "SELECT workflow_id, next_fire_at FROM schedules"
        " WHERE active = 1 AND next_fire_at IS NOT NULL"
    ).fetchall()
    return [(r["workflow_id"], parse_ts_required(r["next_fire_at"])) for r in rows]


def list_page(
    conn: sqlite3.Connection, company: str, namespace: str, size: int, token: str
) -> Page[WorkflowSchedule]:
    filter_key = f"schedules|{company}|{namespace}"
    select = Select("schedules", "company = ?", company).where_if(
        namespace, "namespace = ?", namespace
    )
    return keyset_page(conn, select, size, token, filter_key, lambda rows: schedules_of(conn, rows))


def activate(conn: sqlite3.Connection, new: Activation, next_fire: NextFire) -> WorkflowSchedule:
    """Activate, or update the policies of an active schedule (its phase and next instant
    stay unless its spec changed)."""
    row = conn.execute(
        "SELECT * FROM schedules WHERE workflow_id = ?", (new.workflow_id,)
    ).fetchone()
    p = new.policies
    if row is None:
        next_at = next_fire(new.spec, new.now, new.now)
        conn.execute(
            "INSERT INTO schedules (workflow_id, company, namespace, name, version, cron,"
            " timezone, every_s, active, overlap, catchup, catchup_window_s, anchor,"
            " next_fire_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.workflow_id, new.company, new.namespace, new.name, new.version,
                new.spec.cron, new.spec.timezone, new.spec.every_s, p.overlap.value,
                p.catchup.value, p.catchup_window_s, ts(new.now), ts(next_at), ts(new.now),
                ts(new.now),
            ),
        )  # fmt: skip
        return get(conn, new.company, new.workflow_id)
    current = _from_row(conn, row)
    anchor = current.anchor if current.active else new.now
    next_at = current.next_fire_at
    if not current.active or current.spec != new.spec:
        after = max(new.now, current.last_fire_at or new.now)
        next_at = next_fire(new.spec, anchor, after)
    conn.execute(
        "UPDATE schedules SET version = ?, cron = ?, timezone = ?, every_s = ?, active = 1,"
        " overlap = ?, catchup = ?, catchup_window_s = ?, anchor = ?, next_fire_at = ?,"
        " updated_at = ? WHERE workflow_id = ?",
        (
            new.version, new.spec.cron, new.spec.timezone, new.spec.every_s, p.overlap.value,
            p.catchup.value, p.catchup_window_s, ts(anchor), ts(next_at), ts(new.now),
            new.workflow_id,
        ),
    )  # fmt: skip
    return get(conn, new.company, new.workflow_id)


def deactivate(
    conn: sqlite3.Connection, workflow_id: str, now: datetime, reason: str
) -> WorkflowSchedule | None:
    """Stop the schedule (recorded as a decision); None if the workflow never had one."""
    current = get_any(conn, workflow_id)
    if current is None:
        return None
    if current.active:
        conn.execute(
            "UPDATE schedules SET active = 0, next_fire_at = NULL, updated_at = ?"
            " WHERE workflow_id = ?",
            (ts(now), workflow_id),
        )
        _decide(conn, workflow_id, FireDecision(now, FireOutcome.STOPPED, reason, now))
    return get_any(conn, workflow_id)


def follow_version(
    conn: sqlite3.Connection,
    workflow_id: str,
    version: str,
    spec: Schedule | None,
    now: datetime,
    next_fire: NextFire,
) -> None:
    """A new current version: an active schedule takes its `schedule` block, in the same
    transaction as the version, or stops when it has none."""
    current = get_any(conn, workflow_id)
    if current is None or not current.active:
        return
    if spec is None:
        deactivate(conn, workflow_id, now, f"version {version} has no schedule block")
        return
    next_at = current.next_fire_at
    if spec != current.spec:
        next_at = next_fire(spec, current.anchor, max(now, current.last_fire_at or now))
    conn.execute(
        "UPDATE schedules SET version = ?, cron = ?, timezone = ?, every_s = ?,"
        " next_fire_at = ?, updated_at = ? WHERE workflow_id = ?",
        (version, spec.cron, spec.timezone, spec.every_s, ts(next_at), ts(now), workflow_id),
    )


def fire(conn: sqlite3.Connection, request: FireRequest, next_at: datetime | None) -> FireResult:
    """Decide `request.instant` and commit everything it implies; `next_at` is the schedule's
    next instant after this one."""
    current = get_any(conn, request.workflow_id)
    if (
        current is None
        or not current.active
        or current.version != request.version
        or _decided(conn, request.workflow_id, request.instant)
    ):
        return FireResult(None)
    existing = _run_at(conn, request.workflow_id, request.instant)
    if existing:
        overlap = OverlapDecision(FireOutcome.SKIPPED, f"run {existing} already covers it")
    else:
        active = _active_runs(conn, request.workflow_id)
        overlap = decide_overlap(current.policies.overlap, active, request.catching_up)
    decision = FireDecision(request.instant, overlap.outcome, overlap.reason, request.now)
    run: Run | None = None
    events: list[RunEvent] = []
    if overlap.outcome.creates_run:
        run, events = insert_run(conn, replace(request.run, after_run_id=overlap.after_run_id))
        decision = replace(decision, run_id=run.id)
        for run_id in overlap.cancel:
            events += _request_cancel(conn, run_id, request.now, request.instant)
    _decide(conn, request.workflow_id, decision)
    conn.execute(
        "UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, updated_at = ?"
        " WHERE workflow_id = ?",
        (ts(next_at), ts(request.instant), ts(request.now), request.workflow_id),
    )
    return FireResult(decision, run, tuple(events), overlap.cancel)


def record_decision(
    conn: sqlite3.Connection, workflow_id: str, decision: FireDecision, next_at: datetime | None
) -> None:
    """Record a decision that creates no run (instants missed, a refused fire) and move the
    schedule on."""
    if not _decided(conn, workflow_id, decision.instant):
        _decide(conn, workflow_id, decision)
    conn.execute(
        "UPDATE schedules SET next_fire_at = ?, updated_at = ? WHERE workflow_id = ?",
        (ts(next_at), ts(decision.decided_at), workflow_id),
    )


def create_backfill(
    conn: sqlite3.Connection, runs: list[NewRun], sequential: bool
) -> list[tuple[Run, list[RunEvent], bool]]:
    """A run per instant (an instant that already has one keeps it); in sequence, each run
    waits for the previous instant's run."""
    out: list[tuple[Run, list[RunEvent], bool]] = []
    previous = ""
    for new in runs:
        assert new.scheduled_at is not None
        existing = _run_at(conn, new.workflow_id, new.scheduled_at)
        if existing:
            out.append((get_run(conn, new.company, existing), [], False))
        else:
            after = previous if sequential else ""
            run, events = insert_run(conn, replace(new, after_run_id=after))
            out.append((run, events, True))
        previous = out[-1][0].id
    return out


def _request_cancel(
    conn: sqlite3.Connection, run_id: str, now: datetime, instant: datetime
) -> list[RunEvent]:
    tx = RunTx(conn, run_id, now)
    tx.request_cancel(cancel_other_reason(instant))
    return tx.close()


def _active_runs(conn: sqlite3.Connection, workflow_id: str) -> list[ActiveRun]:
    rows = conn.execute(
        "SELECT id, status, after_run_id FROM runs WHERE workflow_id = ? AND trigger = ?"
        f" AND status IN ({', '.join('?' * len(_ACTIVE))}) ORDER BY seq",
        (workflow_id, RunTrigger.SCHEDULE.value, *_ACTIVE),
    ).fetchall()
    return [
        ActiveRun(r["id"], waiting=r["status"] == RunStatus.PENDING and bool(r["after_run_id"]))
        for r in rows
    ]


def _run_at(conn: sqlite3.Connection, workflow_id: str, instant: datetime) -> str:
    row = conn.execute(
        "SELECT id FROM runs WHERE workflow_id = ? AND scheduled_at = ?",
        (workflow_id, ts(instant)),
    ).fetchone()
    return str(row["id"]) if row else ""


def _decided(conn: sqlite3.Connection, workflow_id: str, instant: datetime) -> bool:
    row = conn.execute(
        "SELECT 1 FROM schedule_decisions WHERE workflow_id = ? AND instant = ?",
        (workflow_id, ts(instant)),
    ).fetchone()
    return row is not None


def _decide(conn: sqlite3.Connection, workflow_id: str, decision: FireDecision) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO schedule_decisions"
        " (workflow_id, instant, outcome, run_id, reason, decided_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            workflow_id, ts(decision.instant), decision.outcome.value, decision.run_id,
            decision.reason, ts(decision.decided_at),
        ),
    )  # fmt: skip
    # The history is bounded: a minute schedule would otherwise grow it by 525,600 rows a year.
    conn.execute(
        "DELETE FROM schedule_decisions WHERE workflow_id = ? AND id <= ("
        " SELECT id FROM schedule_decisions WHERE workflow_id = ? ORDER BY id DESC"
        " LIMIT 1 OFFSET ?)",
        (workflow_id, workflow_id, KEPT_DECISIONS),
    )


def schedules_of(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[WorkflowSchedule]:
    """The schedules of these rows with their recent decisions, read in one query for the lot."""
    ids = [row["workflow_id"] for row in rows]
    recent: dict[str, list[FireDecision]] = {workflow_id: [] for workflow_id in ids}
    found = conn.execute(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER"
        " (PARTITION BY workflow_id ORDER BY id DESC) AS n FROM schedule_decisions"
        f" WHERE workflow_id IN ({', '.join('?' * len(ids))})) WHERE n <= ? ORDER BY id DESC",
        [*ids, RECENT_DECISIONS],
    )
    for d in found.fetchall():
        recent[d["workflow_id"]].append(
            FireDecision(
                instant=parse_ts_required(d["instant"]),
                outcome=FireOutcome(d["outcome"]),
                reason=d["reason"],
                decided_at=parse_ts_required(d["decided_at"]),
                run_id=d["run_id"],
            )
        )
    return [_schedule(row, recent[row["workflow_id"]]) for row in rows]


def _from_row(conn: sqlite3.Connection, row: sqlite3.Row) -> WorkflowSchedule:
    return schedules_of(conn, [row])[0]


def _schedule(row: sqlite3.Row, decisions: list[FireDecision]) -> WorkflowSchedule:
    return WorkflowSchedule(
        workflow_id=row["workflow_id"],
        company=row["company"],
        namespace=row["namespace"],
        name=row["name"],
        version=row["version"],
        spec=Schedule(row["cron"], row["timezone"], row["every_s"]),
        policies=SchedulePolicies(
            OverlapPolicy(row["overlap"]), CatchupPolicy(row["catchup"]), row["catchup_window_s"]
        ),
        active=bool(row["active"]),
        anchor=parse_ts_required(row["anchor"]),
        next_fire_at=parse_ts(row["next_fire_at"]),
        last_fire_at=parse_ts(row["last_fire_at"]),
        created_at=parse_ts_required(row["created_at"]),
        updated_at=parse_ts_required(row["updated_at"]),
        decisions=tuple(decisions),
    )
