"""`runs get` and `runs watch --all` as people run them: real subprocesses, a real daemon."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from datetime import UTC

from tests.conftest import Daemon, eventually, venv_bin
from tests.engine.support import apply, finished, trigger, workflow
from tests.specs import spec
from tests.test_cli import cli
from workflowd.v1 import workflow_service_pb2 as pb

FAILING = (
    "  - ok:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: ok_view}\n"
    "  - boom:\n      call: ExecuteDml\n      with: {nql: DELETE FROM company_data.missing}\n"
    "  - after:\n      call: RefreshMaterializedView\n      with: {datasetName: ok_view}\n"
)


async def test_numbers_stay_integers_in_json_and_text(daemon: Daemon) -> None:
    wf = await apply(daemon, spec())
    run_input = '{"n": 5, "ratio": 2.5, "safe": 9007199254740991, "huge": 1e300}'
    code, out, err = await cli(
        "trigger", wf.id, "--input", run_input, "-o", "json", address=daemon.address
    )
    assert code == 0, err
    run_id = json.loads(out)["id"]
    await finished(daemon, run_id)

    code, out, err = await cli("runs", "get", run_id, "-o", "json", address=daemon.address)
    assert code == 0, err
    run = json.loads(out)
    assert run["input"] == {"n": 5, "ratio": 2.5, "safe": 9007199254740991, "huge": 1e300}
    assert type(run["input"]["n"]) is int
    assert '"n": 5,' in out
    assert '"safe": 9007199254740991' in out  # 2**53 - 1 still reads as an integer
    assert '"huge": 1e+300' in out  # past 2**53 an integral double may not be what was written
    output = run["tasks"][0]["output"]
    assert type(output["datasetId"]) is int
    assert re.search(r'"datasetId": \d+,\n', out)
    assert ".0," not in out.replace('"ratio": 2.5,', "")

    code, out, err = await cli("runs", "get", run_id, address=daemon.address)
    assert code == 0, err
    assert '"n": 5' in out
    assert f'"datasetId": {output["datasetId"]},' in out


async def test_runs_get_shows_task_times_and_the_error_in_full(daemon: Daemon) -> None:
    wf = await apply(daemon, workflow("failing", FAILING))
    run = await finished(daemon, (await trigger(daemon, wf.id)).id)
    code, out, err = await cli("runs", "get", run.id, address=daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"run {run.id}  analytics/failing version 1.0.0  failed"
    header = next(line for line in lines if line.startswith("TASK"))
    assert header.split() == ["TASK", "STATUS", "JOB", "STARTED", "ENDED", "DURATION"]
    clock = r"\d\d:\d\d:\d\d\.\d{3}"
    for task in run.tasks[:2]:
        row = next(line for line in lines if line.startswith(task.name + " "))
        status = "completed" if task.name == "ok" else "failed"
        assert re.fullmatch(
            rf"{task.name}\s+{status}\s+{task.job_id}\s+{clock}\s+{clock}\s+\d+\.\d+s", row
        ), row
    assert not re.search(r"^after\s", out, re.M)  # it never started: no instance to show
    error = out[out.index("\nerror:\n") :]
    assert f"  type      {run.error.type}\n" in error
    assert f"  status    {run.error.status}\n" in error
    assert f"  title     {run.error.title}\n" in error
    assert "  detail    no dataset 'missing' in company_data\n" in error
    assert "  instance  /do/1/boom\n" in error


async def test_runs_watch_needs_a_run_or_all() -> None:
    for args in (("runs", "watch"), ("runs", "watch", "some-run", "--all")):
        code, _, err = await cli(*args, address="127.0.0.1:1")
        assert code == 2
        assert "--all" in err
    code, _, err = await cli("runs", "watch", "some-run", "--namespace", "x")
    assert code == 2
    assert "need --all" in err


class Watcher:
    """`workflowd runs watch --all …` running until it is sent SIGINT."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, daemon: Daemon, *args: str) -> Watcher:
        proc = await asyncio.create_subprocess_exec(
            venv_bin("workflowd"), "runs", "watch", "--all", *args, "--address", daemon.address,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        ready = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert ready == b"workflowd: watching runs; Ctrl-C stops\n"
        return cls(proc)

    async def until(self, *texts: str) -> None:
        """Reads stdout lines until one contains every one of `texts`."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while not self.lines or not all(t in self.lines[-1] for t in texts):
                line = await self.proc.stdout.readline()
                assert line, f"watch ended before {texts!r}: {self.lines}"
                self.lines.append(line.decode().rstrip("\n"))

    async def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(self.proc.communicate(), 30)
        self.lines += out.decode().splitlines()
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def test_watch_all_prints_each_event_of_new_runs_until_ctrl_c(daemon: Daemon) -> None:
    wf = await apply(daemon, spec(name="quick"))
    watcher = await Watcher.start(daemon, "--namespace", "analytics")
    runs = [await finished(daemon, (await trigger(daemon, wf.id)).id) for _ in range(2)]
    for run in runs:
        await watcher.until(run.id, "run_completed")
    code, err = await watcher.interrupt()
    assert code == 130
    assert err == "workflowd: interrupted\n"
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    for run in runs:
        mine = [line for line in watcher.lines if run.id in line]
        assert len(mine) == 6, mine  # created, started, task started/submitted/completed, done
        job = run.tasks[0].job_id
        # Each line names the run's workflow (namespace/name), not only its id.
        assert re.fullmatch(
            rf"{stamp}  {run.id}  analytics/quick\s+task_completed\s+build\s+completed\s+{job}",
            mine[4],
        ), mine[4]
        assert re.fullmatch(
            rf"{stamp}  {run.id}  analytics/quick\s+run_completed\s+-\s+completed\s+-", mine[5]
        )


async def test_watch_all_json_lines_follow_the_filters(daemon: Daemon) -> None:
    quick = await apply(daemon, spec(name="quick"))
    other = await apply(daemon, workflow("failing", FAILING))
    watcher = await Watcher.start(
        daemon, "--workflow", "analytics/quick", "--status", "completed", "-o", "json"
    )
    await finished(daemon, (await trigger(daemon, other.id)).id)
    run = await finished(daemon, (await trigger(daemon, quick.id)).id)
    await watcher.until(run.id)
    code, err = await watcher.interrupt()
    assert code == 130
    assert err == "workflowd: interrupted\n"
    events = [json.loads(line) for line in watcher.lines]
    # Events come in order: had the other workflow's run matched, its events would be first.
    assert [(e["run_id"], e["type"]) for e in events] == [(run.id, "RUN_EVENT_TYPE_RUN_COMPLETED")]
    assert events[0]["run_status"] == pb.RunStatus.Name(pb.RUN_STATUS_COMPLETED)


async def test_runs_rerun_one_run_and_every_failed_run_of_a_workflow(daemon: Daemon) -> None:
    wf = await apply(daemon, workflow("failing-twice", FAILING))
    failed = [await finished(daemon, (await trigger(daemon, wf.id)).id) for _ in range(2)]
    assert {run.status for run in failed} == {pb.RUN_STATUS_FAILED}

    code, out, err = await cli("runs", "rerun", failed[0].id, address=daemon.address)
    assert code == 0, err
    new_id = re.fullmatch(rf"run (\S+) re-runs {failed[0].id}: \w+\n", out)
    assert new_id is not None, out
    again = await finished(daemon, new_id.group(1))
    assert again.rerun_of == failed[0].id
    assert again.tasks[0].reused  # `ok` was reused, `boom` failed again
    code, out, err = await cli("runs", "get", again.id, address=daemon.address)
    assert code == 0, err
    assert re.search(r"^ok\s+completed \(reused\)", out, re.M), out

    code, out, err = await cli(
        "runs", "rerun", "--workflow", "analytics/failing-twice", "--from-start",
        address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    # The second failure and the failed re-run, oldest first: the first failure's re-run
    # stands for it (re-running both would make two new runs of one night).
    assert lines[-1] == "2 runs re-run"
    assert [line.split()[3].rstrip(":") for line in lines[:-1]] == [failed[1].id, again.id]
    bulk = [line.split()[1] for line in lines[:-1]]
    ended = [await finished(daemon, run_id) for run_id in bulk]
    assert {run.status for run in ended} == {pb.RUN_STATUS_FAILED}

    # --since picks the runs created from that instant on: the two re-runs just made.
    since = min(run.created_at.ToDatetime(tzinfo=UTC) for run in ended)
    code, out, err = await cli(
        "runs", "rerun", "--workflow", "analytics/failing-twice",
        "--since", since.isoformat(), address=daemon.address,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == "2 runs re-run"
    assert [line.split()[3].rstrip(":") for line in lines[:-1]] == bulk

    code, _, err = await cli(
        "runs", "rerun", failed[0].id, "--since", "2026-01-01", address=daemon.address
    )
    assert code == 2
    assert "--workflow" in err


NESTED = """\
  - each:
      for: {in: '[1, 2]'}
      do:
        - double: {set: {n: '${ $item * 2 }'}}
  - guard:
      try:
        - flaky:
            raise:
              error: {type: https://example.com/flaky, status: 503, title: flaky}
      catch:
        retry: {delay: {milliseconds: 1}, limit: {attempt: {count: 1}}}
        do:
          - recover: {set: {recovered: true}}
  - pause: {wait: PT1H}
"""


async def test_runs_get_nests_instances_with_attempts_and_a_wait(daemon: Daemon) -> None:
    wf = await apply(daemon, workflow("nested", NESTED))
    run = await trigger(daemon, wf.id)

    async def waiting() -> bool:
        got = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run.id))).run
        return any(t.name == "pause" and t.HasField("wake_at") for t in got.tasks)

    await eventually(waiting)
    code, out, err = await cli("runs", "get", run.id, address=daemon.address)
    assert code == 0, err

    def row(task: str) -> str:
        """The line of the table whose TASK column is exactly `task` (indent included)."""
        found = re.search(rf"^{re.escape(task)}(?:  |$).*$", out, re.M)
        assert found is not None, (task, out)
        return found.group(0)

    row("each")
    row("  double[0]")  # under its loop, with its iteration
    row("  double[1]")
    row("  flaky")  # under its try, each attempt on a line of its own
    row("  flaky (attempt 2)")
    row("  recover")
    assert re.search(r"waiting until \d\d:\d\d:\d\d", row("pause")), out
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
