"""The CLI as a Unix tool: quiet on a closed pipe, one line on Ctrl-C, a live table on a terminal.
Real subprocesses against a real daemon; a pseudo-terminal stands in for a person's screen."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import shlex
import signal
import struct
import termios

import pytest

from tests.conftest import Daemon, eventually, venv_bin
from tests.engine.support import (
    SLOW_NQL,
    TERMINAL,
    apply,
    finished,
    jv,
    trigger,
    workflow,
)
from tests.specs import spec
from workflowd.cli.live import TaskTable
from workflowd.v1 import workflow_service_pb2 as pb

QUICK_THEN_SLOW = (
    "  - quick:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: quick_v}\n"
    f'  - slow:\n      call: CreateMaterializedViewIfNotExists\n      with: {{nql: "{SLOW_NQL}", datasetName: slow_v}}\n'
)


async def test_head_closing_the_pipe_ends_the_cli_quietly_with_141(daemon: Daemon) -> None:
    wf = await apply(daemon, spec())
    pad = "x" * 32_000  # 8 runs of 32 kB: far more than a pipe holds, so the pipe must break
    for _ in range(8):
        await trigger(daemon, wf.id, input=jv({"pad": pad}))
    workflowd = shlex.quote(venv_bin("workflowd"))
    pipeline = (
        f"{workflowd} runs list -o json --page-size 1000 --address {daemon.address} | head -1"
    )
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", pipeline + '; echo "exit ${PIPESTATUS[0]}"',
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out.decode() == "{\nexit 141\n"
    assert err.decode() == ""


@pytest.mark.parametrize("args", [("runs", "list"), ("workflows", "list", "-o", "json")])
async def test_a_reader_gone_before_any_output_is_no_traceback(
    daemon: Daemon, args: tuple[str, ...]
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, however small the output
    try:
        proc = await asyncio.create_subprocess_exec(
            venv_bin("workflowd"), *args, "--address", daemon.address,
            stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 141
    assert err.decode() == ""


@pytest.mark.parametrize("command", ["runs watch", "trigger --watch"])
async def test_ctrl_c_ends_a_watch_with_130_and_one_line(daemon: Daemon, command: str) -> None:
    wf = await apply(daemon, workflow("slow", QUICK_THEN_SLOW))
    if command == "runs watch":
        args: tuple[str, ...] = ("runs", "watch", (await trigger(daemon, wf.id)).id)
    else:
        args = ("trigger", wf.id, "--watch")
    proc = await asyncio.create_subprocess_exec(
        venv_bin("workflowd"), *args, "--address", daemon.address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    # Piped, each event line starts with its time (UTC).
    stamp = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.match(stamp + rb"  #1 run_created \(run pending\)\n", first), first
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    said = re.fullmatch(
        r"workflowd: interrupted; run (\S+) goes on \(`workflowd runs cancel \1` stops it\)",
        lines[0],
    )
    assert said, lines[0]
    run_id = said.group(1)
    run = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
    assert run.status not in TERMINAL  # only the watch stopped
    await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
    await finished(daemon, run_id)


def render(output: str) -> list[str]:
    """The screen a terminal shows after `output`: text, CR, LF, and the two escapes the CLI
    uses, ESC[nF (up n lines, to column 0) and ESC[J (erase to the end of the screen)."""
    screen, row, col = [""], 0, 0
    for token in re.split(r"(\x1b\[\d*[A-Za-z]|\r|\n)", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            screen += [""] * (row + 1 - len(screen))
        elif token.startswith("\x1b[") and token.endswith("F"):
            row, col = max(row - int(token[2:-1] or 1), 0), 0
        elif token.startswith("\x1b[") and token.endswith("J"):
            screen = [*screen[:row], screen[row][:col]]
        elif token:
            line = screen[row].ljust(col)
            screen[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return [line.rstrip() for line in screen]


class Terminal:
    """The master side of a pseudo-terminal of 40 rows by 160 columns, read as it fills."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.output = b""
        self.closed = asyncio.Event()
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the slave side has exited
            chunk = b""
        self.output += chunk
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed.set()

    def screen(self) -> list[str]:
        return render(self.output.decode(errors="replace"))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


async def test_trigger_watch_on_a_terminal_redraws_a_task_table(daemon: Daemon) -> None:
    wf = await apply(daemon, workflow("live", QUICK_THEN_SLOW))
    term = Terminal()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        proc = await asyncio.create_subprocess_exec(
            venv_bin("workflowd"), "trigger", wf.id, "--watch", "--address", daemon.address,
            stdout=term.slave, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        os.close(term.slave)

        async def slow_task_ticking() -> str:
            # No event comes while the slow job runs: only the 1 s tick moves its time on.
            screen = "\n".join(term.screen())
            assert re.search(r"^  slow\s+running\s+\S{36}\s+[1-9]\.\d\ds$", screen, re.M)
            return screen.split()[1]

        run_id = await eventually(slow_task_ticking, timeout_s=60)
        await daemon.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        await asyncio.wait_for(term.closed.wait(), 30)
    finally:
        term.close()
    assert proc.returncode == 2, err
    run = (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run
    quick, slow = run.tasks
    screen = [line for line in term.screen() if line]
    assert screen[0] == f"run {run_id}  cancelled"
    assert screen[1].split() == ["TASK", "STATUS", "JOB", "ELAPSED"]
    assert re.fullmatch(rf"  quick\s+completed\s+{quick.job_id}\s+\d+\.\d\ds", screen[2])
    assert re.fullmatch(rf"  slow\s+cancelled\s+{slow.job_id}\s+\d+\.\d+s", screen[3])
    assert screen[4] == f"run {run_id} cancelled"


def test_a_table_taller_than_the_terminal_shows_the_tasks_around_the_current_one() -> None:
    run = pb.Run(id="r", status=pb.RUN_STATUS_RUNNING)
    for i in range(30):
        done = pb.TASK_STATUS_COMPLETED if i < 20 else pb.TASK_STATUS_PENDING
        status = pb.TASK_STATUS_RUNNING if i == 20 else done
        run.tasks.add(name=f"t{i}", key=f"/do/{i}/t{i}", status=status)
    lines = TaskTable(run).lines(height=10)
    assert len(lines) == 9  # one line left free for the cursor
    names = [line.split()[0] for line in lines[2:]]
    assert names == ["…", "t19", "t20", "t21", "t22", "t23", "…"]
    assert lines[2] == "  … 19 earlier tasks"
    assert lines[-1] == "  … 6 more tasks"
