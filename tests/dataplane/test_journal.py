"""The job journal's commits: which are synced to disk, and when a proof may be forgotten."""

from __future__ import annotations

from pathlib import Path

from dataplane import store
from dataplane.hub import Event
from dataplane.journal import Journal
from dataplane.model import Job, JobState, JobType, now_iso

FULL, NORMAL = 2, 1


def _job(n: int) -> Job:
    stamp = now_iso()
    return Job(
        job_id=f"job-{n}", type=JobType.EXECUTE_DML, state=JobState.PENDING,
        input={"nql": "DELETE FROM company_data.t"}, idempotency_key=None, tags=(),
        metadata={}, created_at=stamp, updated_at=stamp,
    )  # fmt: skip


def test_a_proof_is_forgotten_only_once_a_synced_commit_follows_its_completion(
    tmp_path: Path,
) -> None:
    published: list[Event] = []
    db = store.open_journal(tmp_path / "c.journal")
    journal = Journal(db, 0, 100, published.extend)
    first, second = _job(1), _job(2)
    with journal.lock:
        journal.commit([first], digests=["d1"])
        assert db.execute("PRAGMA synchronous").fetchone() == (FULL,)
        running = first.moved_to(JobState.RUNNING)
        journal.commit([running], durable=False)
        journal.commit(
            [running.moved_to(JobState.COMPLETED, result={})], proved=True, durable=False
        )
        # Not synced: a power loss could lose the completion, which the proof would restore.
        assert db.execute("PRAGMA synchronous").fetchone() == (NORMAL,)
        assert journal.take_proved(1) == []
        journal.commit([second], digests=["d2"])  # synced, and so is all written before it
        assert db.execute("PRAGMA synchronous").fetchone() == (FULL,)
        assert journal.take_proved(2) == []  # fewer than asked for: kept for a later batch
        assert journal.take_proved(1) == [first.job_id]
        assert journal.take_proved(1) == []
    with journal.lock:
        journal.commit([second.moved_to(JobState.RUNNING)], durable=False)
        journal.sync()  # at a start, before the proofs of the last run are forgotten
    busy, logged, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, logged) == (0, copied), "every commit is in the synced file"
    assert [(e.event_id, e.job.state) for e in published] == [
        (1, JobState.PENDING), (2, JobState.RUNNING), (3, JobState.COMPLETED),
        (4, JobState.PENDING), (5, JobState.RUNNING),
    ]  # fmt: skip
    found = store.get_job(db, first.job_id)
    assert found is not None
    assert found[0].state is JobState.COMPLETED
    db.close()
