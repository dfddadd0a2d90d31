"""Schedule persistence (synchronous; runs on the store's threads).

A fire is one transaction: its decision, the run it creates (if any), the cancel requests it
makes and the schedule's next instant. The decision is unique per (workflow, instant) and so is
a run per (workflow, scheduled instant): a second scheduler, or one restarted after a crash
right after the commit, finds the instant decided and does nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from workflowd.domain.definition import Schedule
from workflowd.domain.errors import QuotaExceeded
from workflowd.domain.quotas import Quotas
from workflowd.domain.run import ACTIVE_RUN_STATUSES, NewRun, RunEvent, RunStatus, RunTrigger
from workflowd.domain.schedule import (
    Activation,
    ActiveRun,
    FireDecision,
    FireOutcome,
    FireRequest,
    FireResult,
    NextFire,
    OverlapDecision,
    WorkflowSchedule,
    cancel_other_reason,
    decide_overlap,
)
from workflowd.store import reads, rows, usage
from workflowd.store.codec import dump, ts
from workflowd.store.runs import insert_run
from workflowd.store.runtx import RunTx
from workflowd.store.sql import Conn

_ACTIVE = tuple(s.value for s in ACTIVE_RUN_STATUSES)
KEPT_DECISIONS = 200


def current(conn: Conn, workflow_id: str) -> WorkflowSchedule | None:
    """The schedule as stored (without its decisions), inside the writer's transaction."""
    row = conn.execute("SELECT * FROM schedules WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return None if row is None else rows.schedule(row)


def activate(conn: Conn, new: Activation, next_fire: NextFire, quotas: Quotas) -> None:
    """Activate, or update the policies of an active schedule (its phase and next instant
    stay unless its spec changed). A schedule that was not active takes one of the company's
    active schedules (its quota)."""
    row = conn.execute(
        "SELECT * FROM schedules WHERE workflow_id = ?", (new.workflow_id,)
    ).fetchone()
    p = new.policies
    quotas.check_every(new.spec.every_s)
    if row is None or not row["active"]:
        quotas.check_active_schedules(usage.active_schedules(conn, new.company))
    if row is None:
        next_at = next_fire(new.spec, new.now, new.now)
        conn.execute(
            "INSERT INTO schedules (workflow_id, company, namespace, name, version, cron,"
            " timezone, every_s, active, overlap, catchup, catchup_window_s, anchor,"
            " next_fire_at, created_at, updated_at, input)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.workflow_id, new.company, new.namespace, new.name, new.version,
                new.spec.cron, new.spec.timezone, new.spec.every_s, p.overlap.value,
                p.catchup.value, p.catchup_window_s, ts(new.now), ts(next_at), ts(new.now),
                ts(new.now), dump(new.input),
            ),
        )  # fmt: skip
        return
    stored = rows.schedule(row)
    anchor = stored.anchor if stored.active else new.now
    next_at = stored.next_fire_at
    if not stored.active or stored.spec != new.spec:
        after = max(new.now, stored.last_fire_at or new.now)
        next_at = next_fire(new.spec, anchor, after)
    conn.execute(
        "UPDATE schedules SET version = ?, cron = ?, timezone = ?, every_s = ?, active = 1,"
        " overlap = ?, catchup = ?, catchup_window_s = ?, anchor = ?, next_fire_at = ?,"
        " updated_at = ?, input = ? WHERE workflow_id = ?",
        (
            new.version, new.spec.cron, new.spec.timezone, new.spec.every_s, p.overlap.value,
            p.catchup.value, p.catchup_window_s, ts(anchor), ts(next_at), ts(new.now),
            dump(new.input), new.workflow_id,
        ),
    )  # fmt: skip


def deactivate(conn: Conn, workflow_id: str, now: datetime, reason: str) -> bool:
    """Stop the schedule (recorded as a decision); False if the workflow never had one."""
    stored = current(conn, workflow_id)
    if stored is None:
        return False
    if stored.active:
        conn.execute(
            "UPDATE schedules SET active = 0, next_fire_at = NULL, updated_at = ?"
            " WHERE workflow_id = ?",
            (ts(now), workflow_id),
        )
        _decide(conn, workflow_id, FireDecision(now, FireOutcome.STOPPED, reason, now))
    return True


def stop(
    conn: Conn, company: str, workflow_id: str, now: datetime, reason: str
) -> WorkflowSchedule:
    """Stop the company's schedule of the workflow (NotFound for another company's) and return
    it as this transaction leaves it, with its recent decisions: an unschedule is one write
    and no read, so it waits for nothing but its own commit."""
    row = conn.execute(
        "SELECT 1 FROM schedules WHERE workflow_id = ? AND company = ?", (workflow_id, company)
    ).fetchone()
    if row is None:
        raise reads.no_schedule(workflow_id)
    deactivate(conn, workflow_id, now, reason)
    decided = conn.execute(
        "SELECT * FROM schedule_decisions WHERE workflow_id = ? ORDER BY id DESC LIMIT ?",
        (workflow_id, reads.RECENT_DECISIONS),
    ).fetchall()
    stored = conn.execute("SELECT * FROM schedules WHERE workflow_id = ?", (workflow_id,))
    return rows.schedule(stored.fetchone(), [rows.decision(d) for d in decided])


def follow_version(
    conn: Conn,
    workflow_id: str,
    version: str,
    spec: Schedule | None,
    now: datetime,
    next_fire: NextFire,
    quotas: Quotas,
) -> None:
    """A new current version: an active schedule takes its `schedule` block, in the same
    transaction as the version, or stops when it has none. A block that would fire more often
    than the company's quota refuses the version."""
    stored = current(conn, workflow_id)
    if stored is None or not stored.active:
        return
    if spec is None:
        deactivate(conn, workflow_id, now, f"version {version} has no schedule block")
        return
    quotas.check_every(spec.every_s)
    next_at = stored.next_fire_at
    if spec != stored.spec:
        next_at = next_fire(spec, stored.anchor, max(now, stored.last_fire_at or now))
    conn.execute(
        "UPDATE schedules SET version = ?, cron = ?, timezone = ?, every_s = ?,"
        " next_fire_at = ?, updated_at = ? WHERE workflow_id = ?",
        (version, spec.cron, spec.timezone, spec.every_s, ts(next_at), ts(now), workflow_id),
    )


def fire(conn: Conn, request: FireRequest, next_at: datetime | None, quotas: Quotas) -> FireResult:
    """Decide `request.instant` and commit everything it implies; `next_at` is the schedule's
    next instant after this one. The result names the run it created (the caller reads it).
    A run the company's quotas refuse is not created: the instant is skipped, saying why."""
    stored = current(conn, request.workflow_id)
    if (
        stored is None
        or not stored.active
        or stored.version != request.version
        or _decided(conn, request.workflow_id, request.instant)
    ):
        return FireResult(None)
    existing = _run_at(conn, request.workflow_id, request.instant)
    if existing:
        overlap = OverlapDecision(FireOutcome.SKIPPED, f"run {existing} already covers it")
    else:
        active = _active_runs(conn, request.workflow_id)
        overlap = decide_overlap(stored.policies.overlap, active, request.catching_up)
    if overlap.outcome.creates_run:
        overlap = _within_quotas(conn, quotas, stored, request.run, overlap)
    decision = FireDecision(request.instant, overlap.outcome, overlap.reason, request.now)
    run_id = ""
    events: list[RunEvent] = []
    if overlap.outcome.creates_run:
        events = insert_run(conn, replace(request.run, after_run_id=overlap.after_run_id))
        run_id = request.run.id
        decision = replace(decision, run_id=run_id)
        for cancelled in overlap.cancel:
            events += _request_cancel(conn, cancelled, request.now, request.instant)
    _decide(conn, request.workflow_id, decision)
    conn.execute(
        "UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, updated_at = ?"
        " WHERE workflow_id = ?",
        (ts(next_at), ts(request.instant), ts(request.now), request.workflow_id),
    )
    return FireResult(decision, run_id, tuple(events), overlap.cancel)


def record_decision(
    conn: Conn, workflow_id: str, decision: FireDecision, next_at: datetime | None
) -> None:
    """Record a decision that creates no run (instants missed, a refused fire) and move the
    schedule on."""
    if not _decided(conn, workflow_id, decision.instant):
        _decide(conn, workflow_id, decision)
    # Never backwards: another scheduler (a replica) may have moved the schedule past this
    # instant already.
    conn.execute(
        "UPDATE schedules SET next_fire_at = ?, updated_at = ? WHERE workflow_id = ?"
        " AND (next_fire_at IS NULL OR next_fire_at <= ?)",
        (ts(next_at), ts(decision.decided_at), workflow_id, ts(decision.instant)),
    )


def create_backfill(
    conn: Conn, news: list[NewRun], sequential: bool, now: datetime
) -> list[tuple[str, list[RunEvent], bool]]:
    """(run id, events, created) per instant (an instant that already has a run keeps it,
    unless `news` re-runs it: a re-run is made while the run it re-runs is still the instant's
    latest, and the instant's decision says so); in sequence, each run waits for the previous
    instant's run."""
    out: list[tuple[str, list[RunEvent], bool]] = []
    previous = ""
    for new in news:
        assert new.scheduled_at is not None
        existing = _run_at(conn, new.workflow_id, new.scheduled_at)
        if new.rerun_of and _latest_at(conn, new.workflow_id, new.scheduled_at) == new.rerun_of:
            after = previous if sequential else ""
            out.append((new.id, insert_run(conn, replace(new, after_run_id=after)), True))
            _decided_again(conn, new, now)
        elif new.rerun_of or existing:
            out.append((_latest_at(conn, new.workflow_id, new.scheduled_at), [], False))
        else:
            after = previous if sequential else ""
            out.append((new.id, insert_run(conn, replace(new, after_run_id=after)), True))
        previous = out[-1][0]
    return out


def _within_quotas(
    conn: Conn,
    quotas: Quotas,
    schedule: WorkflowSchedule,
    run: NewRun,
    overlap: OverlapDecision,
) -> OverlapDecision:
    """The overlap decision, or a skip when the company's quotas refuse the run (a schedule
    activated before the shortest interval's quota was raised past its own skips every
    instant, saying why)."""
    try:
        quotas.check_every(schedule.spec.every_s)
        usage.admit_runs(conn, quotas, run.company, [run.input], inserted=False)
    except QuotaExceeded as exc:
        return OverlapDecision(FireOutcome.SKIPPED, f"refused by a quota: {exc.message}")
    return overlap


def _request_cancel(conn: Conn, run_id: str, now: datetime, instant: datetime) -> list[RunEvent]:
    tx = RunTx(conn, run_id, now)
    tx.request_cancel(cancel_other_reason(instant))
    return tx.close()


def _active_runs(conn: Conn, workflow_id: str) -> list[ActiveRun]:
    rows = conn.execute(
        "SELECT id, status, after_run_id FROM runs WHERE workflow_id = ? AND trigger = ?"
        f" AND status IN ({', '.join('?' * len(_ACTIVE))}) ORDER BY seq",
        (workflow_id, RunTrigger.SCHEDULE.value, *_ACTIVE),
    ).fetchall()
    return [
        ActiveRun(r["id"], waiting=r["status"] == RunStatus.PENDING and bool(r["after_run_id"]))
        for r in rows
    ]


def _run_at(conn: Conn, workflow_id: str, instant: datetime) -> str:
    """The instant's run: the one that is no re-run (unique)."""
    row = conn.execute(
        "SELECT id FROM runs WHERE workflow_id = ? AND scheduled_at = ? AND rerun_of = ''",
        (workflow_id, ts(instant)),
    ).fetchone()
    return str(row["id"]) if row else ""


def _latest_at(conn: Conn, workflow_id: str, instant: datetime) -> str:
    """The instant's latest run: its last re-run, else its run."""
    row = conn.execute(
        "SELECT id FROM runs WHERE workflow_id = ? AND scheduled_at = ? ORDER BY seq DESC",
        (workflow_id, ts(instant)),
    ).fetchone()
    return str(row["id"]) if row else ""


def _decided_again(conn: Conn, new: NewRun, now: datetime) -> None:
    """The instant's decision becomes the re-run, naming the run it re-runs."""
    reason = f"re-run of run {new.rerun_of} by a backfill"
    conn.execute(
        "INSERT INTO schedule_decisions (workflow_id, instant, outcome, run_id, reason,"
        " decided_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, instant) DO UPDATE"
        " SET outcome = excluded.outcome, run_id = excluded.run_id, reason = excluded.reason,"
        " decided_at = excluded.decided_at",
        (new.workflow_id, ts(new.scheduled_at), FireOutcome.RERUN.value, new.id, reason, ts(now)),
    )


def _decided(conn: Conn, workflow_id: str, instant: datetime) -> bool:
    row = conn.execute(
        "SELECT 1 FROM schedule_decisions WHERE workflow_id = ? AND instant = ?",
        (workflow_id, ts(instant)),
    ).fetchone()
    return row is not None


def _decide(conn: Conn, workflow_id: str, decision: FireDecision) -> None:
    conn.execute(
        "INSERT INTO schedule_decisions"
        " (workflow_id, instant, outcome, run_id, reason, decided_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
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
