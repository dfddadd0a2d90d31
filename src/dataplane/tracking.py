"""Which jobs the workers hold and what each is doing, for cancel, the time limit, eviction and
shutdown, which interrupt running queries from the event loop.

Guarded by its own lock, never held while DuckDB works, so the event loop may wait for it.
Code that needs both takes the journal lock first. A mark (cancel, time-out, eviction) is read
by the runner under the journal lock, where cancel sets it, so that a job's outcome and its
cancellation never both commit.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field

import duckdb


class Phase(enum.Enum):
    WAITING = "waiting"  # held by a worker; its effect has not begun, or was rolled back
    EFFECT = "effect"  # its effect runs now: the only phase an interrupt may target
    DONE = "done"  # its effect ran; the runner decides what it comes to


@dataclass
class Batch:
    """The jobs one worker took from the queue, and whose effect it is running now."""

    job_ids: list[str]
    held: set[str] = field(default_factory=set)
    current: str | None = None
    started: float = 0.0  # monotonic time the current effect began
    speculative: bool = False


@dataclass(frozen=True)
class Marks:
    cancelled: bool
    timed_out: bool
    evicted: bool


@dataclass
class _Slot:
    cursor: duckdb.DuckDBPyConnection
    phase: Phase = Phase.WAITING


class Tracker:
    def __init__(self, timeout_s: float, window_s: float) -> None:
        self._timeout_s = timeout_s
        self._window_s = window_s
        # How often to look while no effect runs: a job may begin one any moment.
        self._poll_s = min(timeout_s, window_s)
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._cancel: set[str] = set()
        self._timed_out: set[str] = set()
        self._evicted: set[str] = set()
        self.closing = False

    def holds(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._slots

    def hold(self, batch: Batch, cur: duckdb.DuckDBPyConnection, job_ids: list[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._slots[job_id] = _Slot(cur)
            batch.held.update(job_ids)

    def let_go(self, batch: Batch, job_ids: list[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._forget(job_id)
            batch.held.difference_update(job_ids)

    def release(self, batch: Batch) -> None:
        self.let_go(batch, list(batch.held))

    def _forget(self, job_id: str) -> None:
        self._slots.pop(job_id, None)
        for marked in (self._cancel, self._timed_out, self._evicted):
            marked.discard(job_id)

    def begin_effect(self, batch: Batch, job_id: str, *, speculative: bool) -> bool:
        """False if the job was cancelled while it waited."""
        with self._lock:
            slot = self._slots.get(job_id)
            if slot is None:
                return False
            slot.phase = Phase.EFFECT
            batch.current, batch.started = job_id, time.monotonic()
            batch.speculative = speculative
            return True

    def end_effect(self, batch: Batch, job_id: str, *, succeeded: bool) -> None:
        with self._lock:
            self._slots[job_id].phase = Phase.DONE
            batch.current = None
            if succeeded:
                # A time-out or eviction that arrived as the effect ended is moot, and must not
                # interrupt the job if it runs again after a rollback.
                self._timed_out.discard(job_id)
                self._evicted.discard(job_id)

    def take_marks(self, job_id: str) -> Marks:
        """The job's marks, clearing those that only concern the effect that just ended."""
        with self._lock:
            marks = Marks(
                job_id in self._cancel, job_id in self._timed_out, job_id in self._evicted
            )
            self._timed_out.discard(job_id)
            self._evicted.discard(job_id)
            return marks

    def set_phase(self, job_ids: list[str], phase: Phase) -> None:
        with self._lock:
            for job_id in job_ids:
                self._slots[job_id].phase = phase

    def request_cancel(self, job_id: str) -> bool:
        """True if the job's effect has begun, so that its cancel must wait for the runner
        (the caller holds the journal lock); a held job still waiting is dropped instead."""
        with self._lock:
            slot = self._slots.get(job_id)
            if slot is None:
                return False
            if slot.phase is Phase.WAITING:
                del self._slots[job_id]
                return False
            self._cancel.add(job_id)
            return True

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        with self._lock:
            return self._cancel.intersection(job_ids)

    def supervise(self, batch: Batch) -> tuple[float, str | None]:
        """Marks the batch's current job once it runs over its time limit, or over the batch
        window if it is speculative. Returns when to look again, and the job to interrupt."""
        with self._lock:
            job_id = batch.current
            if job_id is None:
                return self._poll_s, None
            elapsed = time.monotonic() - batch.started
            limit = self._timeout_s
            if batch.speculative:
                limit = min(limit, self._window_s)
            if elapsed < limit:
                return min(limit - elapsed, self._poll_s), None
            if self._marked(job_id):
                return self._poll_s, None  # already being interrupted
            (self._timed_out if elapsed >= self._timeout_s else self._evicted).add(job_id)
            return self._poll_s, job_id

    def interrupt_if_stopping(self, job_id: str) -> bool:
        """Interrupts the query of a job being cancelled, timed out or evicted; False once its
        effect has stopped. DuckDB drops an interrupt that arrives between two statements, so
        callers repeat this until it returns False."""
        with self._lock:
            slot = self._slots.get(job_id)
            if slot is None or slot.phase is not Phase.EFFECT or not self._marked(job_id):
                return False
            slot.cursor.interrupt()
            return True

    def _marked(self, job_id: str) -> bool:
        return job_id in self._cancel or job_id in self._timed_out or job_id in self._evicted

    def close(self) -> bool:
        """Stops the workers taking more effects and interrupts the running ones, without
        changing their records (they run again on restart). False once no job is held."""
        self.closing = True
        with self._lock:
            for slot in self._slots.values():
                if slot.phase is Phase.EFFECT:
                    slot.cursor.interrupt()
            return bool(self._slots)
