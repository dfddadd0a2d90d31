"""A store that refuses writes (its disk full) stops nothing for good: a run in flight waits
until it takes writes again, then goes on and ends, with one job per task; callers meanwhile get
UNAVAILABLE with a sentence, never INTERNAL; a cancel asked once the store is back always ends
the run. The full disk is a real one: the store alone on a small tmpfs, filled by a file, freed by
removing it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon, eventually
from tests.engine.support import (
    AUDIT_CSV,
    EVENTS_CSV,
    SLOW_NQL,
    Plane,
    apply,
    finished,
    trigger,
    wait_for_event,
    workflow,
)
from workflowd.v1 import workflow_service_pb2 as pb

SLOW_THEN_LOG = workflow(
    "disk-full",
    f"""\
  - slow:
      call: CreateMaterializedViewIfNotExists
      with: {{nql: "{SLOW_NQL.replace("300000", "20000")}", datasetName: slow_view}}
  - log:
      call: ExecuteDml
      with: {{nql: "INSERT INTO company_data.audit VALUES (1, 1, 'after the fault')"}}
""",
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system of its own (tmpfs), for the store alone: filling it fills nothing
    else on the machine, and freeing it is removing a file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"these tests mount a small tmpfs (as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; the file to remove to free it again."""
    filler = disk / "filler"
    # Unbuffered, so that closing has nothing left to write to the full disk (a buffered close
    # would raise ENOSPC again, outside the suppression).
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)
    return filler


async def test_a_run_waits_out_a_full_disk_and_then_ends(
    start_daemon: Callable[..., Awaitable[Daemon]], small_disk: Path
) -> None:
    daemon = await start_daemon(store=f"sqlite://{small_disk}/workflowd.db")
    plane = Plane.of(daemon)
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)
    wf = await apply(daemon, SLOW_THEN_LOG)
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    filler = fill(small_disk)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await daemon.stub.TriggerWorkflow(pb.TriggerWorkflowRequest(workflow_id=wf.id))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "full" in str(refused.value.details())

    async def slow_job_ended() -> bool:
        return (await plane.job(submitted.job_id))["state"] == "completed"

    await eventually(slow_job_ended, timeout_s=60)
    # The slow task's end cannot be committed: the run stays where it was, nothing is lost.
    stored = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
    assert stored.status == pb.RUN_STATUS_RUNNING
    assert [t.status for t in stored.tasks] == [pb.TASK_STATUS_RUNNING]

    filler.unlink()
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error
    assert [t.status for t in done.tasks] == [pb.TASK_STATUS_COMPLETED] * 2
    jobs = await plane.jobs_for_run(run.id)
    assert sorted(j["metadata"]["task_name"] for j in jobs) == ["log", "slow"]
    await plane.aclose()


async def test_a_cancel_asked_after_the_fault_ends_the_run(
    start_daemon: Callable[..., Awaitable[Daemon]], small_disk: Path
) -> None:
    daemon = await start_daemon(store=f"sqlite://{small_disk}/workflowd.db")
    plane = Plane.of(daemon)
    await plane.load_csv("events", EVENTS_CSV)
    await plane.load_csv("audit", AUDIT_CSV)
    wf = await apply(daemon, SLOW_THEN_LOG)
    run = await trigger(daemon, wf.id)
    submitted = await wait_for_event(daemon, run.id, pb.RUN_EVENT_TYPE_TASK_JOB_SUBMITTED, 0)
    filler = fill(small_disk)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    filler.unlink()

    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id, reason="disk was full"))
    done = await finished(daemon, run.id)
    assert done.status == pb.RUN_STATUS_CANCELLED
    assert (await plane.job(submitted.job_id))["state"] == "cancelled"
    await plane.aclose()
