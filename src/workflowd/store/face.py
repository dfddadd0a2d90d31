"""The store as the engine sees it (the ports of `engine/ports.py`): writes go to the
group-committing writer as change functions, reads to a pooled reader. A write that creates a
run answers with it from inside its own transaction; a workflow or a schedule is read back
through the pool after its commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from workflowd.domain.fairness import FairSlots, acting_for
from workflowd.domain.json import Json
from workflowd.domain.notify import Delivery, DeliveryFilter, DeliveryStatus
from workflowd.domain.page import Page
from workflowd.domain.quotas import Quotas
from workflowd.domain.retention import PolicyKey, RetentionPolicy, RetentionScope, Sweep
from workflowd.domain.run import NewRun, Run, RunEvent, RunFilter, WatchFilter
from workflowd.domain.schedule import (
    Activation,
    FireDecision,
    FireRequest,
    FireResult,
    NextFire,
    WorkflowSchedule,
)
from workflowd.domain.workflow import NewWorkflowVersion, Workflow, WorkflowFilter, WorkflowHead
from workflowd.store import (
    deletion,
    outbox,
    reads,
    replicas,
    retention,
    runs,
    schedules,
    usage,
    workflows,
)
from workflowd.store.paging import PageTokens, page_size, stored_key
from workflowd.store.query import Reader
from workflowd.store.runtx import RunTx
from workflowd.store.sql import Conn
from workflowd.store.writer import GroupWriter

T = TypeVar("T")


class Backend(Protocol):
    writer: GroupWriter

    @property
    def readers(self) -> int: ...

    def reader(self, snapshot: bool = True) -> AbstractAsyncContextManager[Reader]: ...

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def reclaim(self) -> None: ...


class Store:
    def __init__(self, backend: Backend, quotas: Quotas | None = None) -> None:
        self.db = backend
        # Checked inside the transactions that would pass them (`usage.py`).
        self.quotas = quotas or Quotas()
        # The replica this process is (see `join`): the runs it creates are its own.
        self.replica = ""
        # Reads wait for a pooled connection company by company in turn, so one company's
        # many reads (its runs' executors) delay another's by one turn.
        self._reads = FairSlots(backend.readers)
        self._tokens: PageTokens | None = None
        # The webhooks' policy, consulted by every transaction that records an event.
        self.outbox = outbox.Outbox()

    async def open(self) -> None:
        await self.db.open()
        self._tokens = PageTokens(await self._write(stored_key))

    @property
    def tokens(self) -> PageTokens:
        if self._tokens is None:
            raise RuntimeError("the store is not open")
        return self._tokens

    def shared_log(self) -> Callable[[float], Awaitable[None]] | None:
        """Where other processes may write this store too (replicas): a wait, bounded by its
        argument in seconds, for their next commit; None for a store of one process."""
        return None

    async def aclose(self) -> None:
        await self.db.aclose()

    async def _read(self, query: Callable[[Reader], Awaitable[T]], snapshot: bool = True) -> T:
        """`query` on a pooled reader; `snapshot=False` for a read of one statement, which is
        consistent by itself and then costs one trip to the reader's thread, not three."""
        async with self._reads.slot(acting_for.get()), self.db.reader(snapshot) as reader:
            return await query(reader)

    async def _write(self, op: Callable[[Conn], T]) -> T:
        return await self.db.writer.submit(op)

    # --- workflows ----------------------------------------------------------------------------

    async def save_version(
        self, new: NewWorkflowVersion, next_fire: NextFire
    ) -> tuple[Workflow, bool]:
        def op(conn: Conn) -> workflows.Saved:
            saved = workflows.save_version(conn, new)
            if saved.created and saved.current:
                schedules.follow_version(
                    conn,
                    saved.workflow_id,
                    new.version,
                    new.schedule,
                    new.now,
                    next_fire,
                    self.quotas,
                )
            return saved

        saved = await self._write(op)
        workflow = await self._read(
            lambda r: reads.get_workflow(r, new.company, saved.workflow_id, saved.version)
        )
        return workflow, saved.created

    async def get_workflow(
        self,
        company: str,
        *,
        workflow_id: str = "",
        namespace: str = "",
        name: str = "",
        version: str = "",
    ) -> Workflow:
        async def query(reader: Reader) -> Workflow:
            wid = workflow_id or await reads.find_workflow_id(reader, company, namespace, name)
            return await reads.get_workflow(reader, company, wid, version or None)

        return await self._read(query)

    async def workflow_head(
        self,
        company: str,
        *,
        workflow_id: str = "",
        namespace: str = "",
        name: str = "",
        version: str = "",
    ) -> WorkflowHead | None:
        return await self._read(
            lambda r: reads.workflow_head(r, company, workflow_id, namespace, name, version),
            snapshot=False,
        )

    async def specification(self, workflow_id: str, version: str) -> str | None:
        return await self._read(
            lambda r: reads.specification(r, workflow_id, version), snapshot=False
        )

    async def list_workflows(
        self, company: str, filt: WorkflowFilter, size: int, token: str
    ) -> Page[Workflow]:
        n = page_size(size)
        return await self._read(
            lambda r: reads.list_workflows(r, company, filt, n, token, self.tokens)
        )

    async def archive_workflow(self, company: str, workflow_id: str, now: datetime) -> Workflow:
        def op(conn: Conn) -> None:
            workflows.archive(conn, company, workflow_id, now)
            schedules.deactivate(conn, workflow_id, now, "the workflow was archived")

        await self._write(op)
        return await self._read(lambda r: reads.get_workflow(r, company, workflow_id))

    async def unarchive_workflow(self, company: str, workflow_id: str, now: datetime) -> Workflow:
        await self._write(lambda conn: deletion.unarchive(conn, company, workflow_id, now))
        return await self._read(lambda r: reads.get_workflow(r, company, workflow_id))

    async def delete_workflow_runs(self, company: str, workflow_id: str, limit: int) -> int:
        return await self._write(
            lambda conn: deletion.delete_workflow_runs(conn, company, workflow_id, limit)
        )

    async def delete_workflow(self, company: str, workflow_id: str) -> int:
        return await self._write(lambda conn: deletion.delete_workflow(conn, company, workflow_id))

    # --- schedules ----------------------------------------------------------------------------

    async def activate_schedule(
        self, activation: Activation, next_fire: NextFire
    ) -> WorkflowSchedule:
        await self._write(lambda conn: schedules.activate(conn, activation, next_fire, self.quotas))
        return await self.get_schedule(activation.company, activation.workflow_id)

    async def deactivate_schedule(
        self, company: str, workflow_id: str, now: datetime, reason: str
    ) -> WorkflowSchedule:
        return await self.db.writer.submit(
            lambda conn: schedules.stop(conn, company, workflow_id, now, reason), urgent=True
        )

    async def get_schedule(self, company: str, workflow_id: str) -> WorkflowSchedule:
        return await self._read(lambda r: reads.get_schedule(r, company, workflow_id))

    async def schedule_of(self, workflow_id: str) -> WorkflowSchedule | None:
        return await self._read(lambda r: reads.schedule_of(r, workflow_id))

    async def list_schedules(
        self, company: str, namespace: str, size: int, token: str
    ) -> Page[WorkflowSchedule]:
        n = page_size(size)
        return await self._read(
            lambda r: reads.list_schedules(r, company, namespace, n, token, self.tokens)
        )

    async def due_schedules(self) -> list[tuple[str, datetime]]:
        return await self._read(reads.due_schedules, snapshot=False)

    async def fire(
        self, request: FireRequest, next_at: datetime | None
    ) -> tuple[FireResult, Run | None]:
        """The fire's result, and the run it created."""

        def op(conn: Conn) -> tuple[FireResult, Run | None]:
            result = schedules.fire(conn, request, next_at, self.quotas)
            self.outbox.decision(conn, request.workflow_id, result.decision)
            if not result.run_id:
                return result, None
            replicas.own(conn, [result.run_id], self.replica)
            return result, runs.written_run(conn, result.run_id)

        return await self._write(op)

    async def record_decision(
        self, workflow_id: str, decision: FireDecision, next_at: datetime | None
    ) -> None:
        def op(conn: Conn) -> None:
            schedules.record_decision(conn, workflow_id, decision, next_at)
            self.outbox.decision(conn, workflow_id, decision)

        await self._write(op)

    async def latest_runs_at(
        self, company: str, workflow_id: str, instants: list[datetime]
    ) -> dict[datetime, Run]:
        return await self._read(lambda r: reads.latest_runs_at(r, company, workflow_id, instants))

    async def create_backfill(
        self, news: list[NewRun], sequential: bool, now: datetime
    ) -> list[tuple[Run, list[RunEvent], bool]]:
        def op(conn: Conn) -> list[tuple[Run, list[RunEvent], bool]]:
            made = schedules.create_backfill(conn, news, sequential, now)
            if news:
                added = [news[i].input for i, (_, _, new) in enumerate(made) if new]
                usage.admit_runs(conn, self.quotas, news[0].company, added, inserted=True)
            replicas.own(conn, [run_id for run_id, _, new in made if new], self.replica)
            return [(runs.written_run(conn, run_id), events, new) for run_id, events, new in made]

        return await self._write(op)

    # --- runs ---------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[Run, list[RunEvent], bool]:
        def op(conn: Conn) -> tuple[Run, list[RunEvent], bool]:
            run_id, events, created = runs.create_run(conn, new)
            if created:
                usage.admit_runs(conn, self.quotas, new.company, [new.input], inserted=True)
                replicas.own(conn, [run_id], self.replica)
            return runs.written_run(conn, run_id), events, created

        return await self._write(op)

    async def get_run(self, company: str, run_id: str) -> Run:
        return await self._read(lambda r: reads.get_run(r, company, run_id))

    async def delete_run(self, company: str, run_id: str) -> None:
        await self._write(lambda conn: deletion.delete_run(conn, company, run_id))

    async def runs_by_id(self, run_ids: list[str]) -> list[Run]:
        return await self._read(lambda r: reads.runs_by_id(r, run_ids))

    async def list_runs(
        self, company: str, filt: RunFilter, size: int, token: str, *, tasks: bool = True
    ) -> Page[Run]:
        n = page_size(size)
        return await self._read(
            lambda r: reads.list_runs(r, company, filt, n, token, self.tokens, tasks=tasks)
        )

    def update_run(
        self,
        run_id: str,
        now: datetime,
        change: Callable[[RunTx], None],
        *,
        owned: bool = True,
        urgent: bool = False,
    ) -> asyncio.Future[list[RunEvent]]:
        """Queue `change` to run in a transaction (in commit order) and return the future of
        the events it appended, resolved once they are durable. `owned`: only while this
        replica owns the run (an executor's changes), else `RunTaken`; a cancel request may
        come from any replica. `urgent`: ahead of every company's queued changes (a change
        that stops work, such as a cancel request)."""
        owner = self.replica if owned else None

        def op(conn: Conn) -> list[RunEvent]:
            tx = RunTx(conn, run_id, now, owner, self.outbox)
            change(tx)
            return tx.close()

        return self.db.writer.submit(op, urgent=urgent)

    async def jobs_to_cancel(self) -> list[tuple[str, str]]:
        """(job id, company) of every job still to be cancelled."""
        return await self._read(reads.jobs_to_cancel, snapshot=False)

    async def job_cancel_confirmed(self, job_id: str) -> None:
        await self._write(lambda conn: runs.forget_job_to_cancel(conn, job_id))

    async def job_request(self, run_id: str, key: str) -> Json:
        return await self._read(lambda r: reads.job_request(r, run_id, key), snapshot=False)

    # --- replicas ------------------------------------------------------------------------------

    async def join(self, replica: str, now: datetime, lease: timedelta) -> None:
        await self._write(lambda conn: replicas.join(conn, replica, now, lease))
        self.replica = replica

    async def renew(self, now: datetime, lease: timedelta) -> bool:
        return await self._write(lambda conn: replicas.renew(conn, self.replica, now, lease))

    async def leave(self, now: datetime) -> None:
        await self._write(lambda conn: replicas.leave(conn, self.replica, now))

    async def claim_runs(self, now: datetime, *, takeover: bool, limit: int) -> list[str]:
        return await self._write(
            lambda conn: replicas.claim(conn, self.replica, now, takeover=takeover, limit=limit)
        )

    async def events_since(self, after: int, limit: int) -> list[tuple[int, RunEvent]]:
        """Every company's events after the log position `after`, in log order, each with its
        position (a replica's follower)."""
        return await self._read(lambda r: reads.events_since(r, after, limit), snapshot=False)

    async def events_after(
        self, company: str, run_id: str, after_seq: int, limit: int
    ) -> list[RunEvent]:
        return await self._read(
            lambda r: reads.events_after(r, company, run_id, after_seq, limit), snapshot=False
        )

    async def events_after_global(
        self, company: str, filt: WatchFilter, after: int, limit: int
    ) -> list[RunEvent]:
        return await self._read(
            lambda r: reads.events_after_global(r, company, filt, after, limit), snapshot=False
        )

    async def log_position(self) -> int:
        """The position of the event log's last event, every company's (a replica's follower)."""
        return await self._read(reads.log_position, snapshot=False)

    async def pruned_through(self, company: str) -> int:
        """The company's newest deleted event (0: none was)."""
        return await self._read(lambda r: reads.pruned_through(r, company), snapshot=False)

    async def last_company_seq(self, company: str) -> int:
        """The sequence number of the company's last event (0 before its first)."""
        return await self._read(lambda r: reads.last_company_seq(r, company), snapshot=False)

    # --- retention ------------------------------------------------------------------------------

    async def set_retention_policy(
        self,
        company: str,
        scope: RetentionScope,
        policy: RetentionPolicy | None,
        now: datetime,
    ) -> None:
        await self._write(
            lambda conn: retention.set_policy(
                conn, company, scope.namespace, scope.workflow_id, policy, now
            )
        )

    async def retention_policies(self, company: str) -> dict[PolicyKey, RetentionPolicy]:
        """The company's policies (every company's with `company` empty)."""
        return await self._read(lambda r: retention.policies(r, company), snapshot=False)

    async def retention_workflows(
        self, company: str, scope: RetentionScope, after: int, limit: int
    ) -> list[tuple[int, str, str, str]]:
        return await self._read(
            lambda r: retention.workflows(
                r, company, scope.namespace, scope.workflow_id, after, limit
            ),
            snapshot=False,
        )

    async def keep_last_bound(self, workflow_id: str, keep_last: int) -> int | None:
        return await self._read(
            lambda r: retention.keep_last_bound(r, workflow_id, keep_last), snapshot=False
        )

    async def sweep(
        self,
        company: str,
        workflow_id: str,
        policy: RetentionPolicy,
        now: datetime,
        *,
        after: int,
        before: int | None,
        limit: int,
        dry_run: bool,
    ) -> Sweep:
        return await self._write(
            lambda conn: retention.sweep(
                conn, company, workflow_id, policy, now,
                after=after, before=before, limit=limit, dry_run=dry_run,
            )
        )  # fmt: skip

    async def reclaim(self) -> None:
        """Give the space of deleted rows back (SQLite: to the file system), in short steps."""
        await self.db.reclaim()

    # --- webhooks -------------------------------------------------------------------------------

    def watch_outbox(self, wake: Callable[[], None]) -> None:
        """`wake` is called (on the writer's thread) whenever a transaction adds deliveries."""
        self.outbox.on_added = wake

    async def claim_deliveries(self, now: datetime, lease_s: float, limit: int) -> list[Delivery]:
        return await self._write(lambda conn: outbox.claim(conn, now, lease_s, limit))

    async def settle_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        status: DeliveryStatus,
        next_at: datetime | None = None,
        error: str = "",
        http_status: int = 0,
    ) -> None:
        await self._write(
            lambda conn: outbox.settle(
                conn, delivery_id, now, status=status, next_at=next_at, error=error,
                http_status=http_status,
            )
        )  # fmt: skip

    async def release_deliveries(self) -> None:
        await self._write(outbox.release)

    async def prune_deliveries(self, before: datetime) -> None:
        await self._write(lambda conn: outbox.prune(conn, before))

    async def next_delivery_at(self) -> datetime | None:
        return await self._read(outbox.next_due, snapshot=False)

    async def list_deliveries(
        self, company: str, filt: DeliveryFilter, size: int, token: str
    ) -> Page[Delivery]:
        n = page_size(size)
        return await self._read(
            lambda r: outbox.list_deliveries(r, company, filt, n, token, self.tokens)
        )

    async def last_successes(self, limit: int = 500) -> list[tuple[str, str, str, datetime]]:
        return await self._read(lambda r: outbox.last_successes(r, limit), snapshot=False)
