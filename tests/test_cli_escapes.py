"""Text from callers, specifications, datasets and jobs never drives an operator's terminal
(issue 16, item 8): `\\e]0;owned\\a\\e[2J` in a task name, U+009B (a one-byte CSI), a jq
`error("\\u001b]52;…")` (a clipboard write) in a problem's detail, escapes in a dataset's column
names and cells, all show as visible escapes in `runs get`, `runs watch` (piped and on a
terminal), `trigger --watch` and `datasets show`; and a new task name cannot hold them at all.

Real subprocesses of the CLI against a real daemon and its data plane; a pseudo-terminal stands
in for a person's screen. Task names with control characters can only exist in runs stored
before names were checked: the test writes one into the store's file, as such a daemon left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Daemon, venv_bin
from tests.engine.support import Plane, apply, finished, jv, trigger, workflow
from tests.specs import spec
from tests.test_cli import cli
from tests.test_cli_unix import Terminal
from workflowd.v1 import workflow_service_pb2 as pb

HOSTILE = "\x1b]0;owned\x07\x1b[2J\u009b31m"
SHOWN = "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m"
# Raw control characters a terminal would act on (a newline and a tab are layout).
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The only sequences the CLI itself writes, redrawing its live table.
OWN = re.compile(r"\x1b\[\d*F|\x1b\[J|\r")
CLIPBOARD = (
    "  - clip:\n      call: ExecuteDml\n"
    "      with: {nql: DELETE FROM company_data.audit}\n"
    "      input: {from: '${ error(\"\\u001b]52;c;b3duZWQ=\\u0007\\u009b2J\") }'}\n"
)


def clean(text: str) -> None:
    found = RAW.search(text)
    assert found is None, (
        f"raw {found.group()!r} at {found.start()}: {text[found.start() - 40 :]!r}"
    )


def rename_tasks(data_dir: Path, run_id: str, name: str) -> None:
    """The run's tasks and their events as a daemon stored them before names were checked."""
    with contextlib.closing(sqlite3.connect(data_dir / "workflowd.db")) as conn:
        conn.execute("UPDATE task_instances SET name = ? WHERE run_id = ?", (name, run_id))
        conn.execute(
            "UPDATE run_events SET task_name = ? WHERE run_id = ? AND task_index >= 0",
            (name, run_id),
        )
        conn.commit()


async def test_a_task_name_with_escapes_shows_them_in_runs_get_and_runs_watch(
    daemon: Daemon,
) -> None:
    wf = await apply(daemon, spec())
    run = await finished(daemon, (await trigger(daemon, wf.id, input=jv({"note": HOSTILE}))).id)
    rename_tasks(daemon.data_dir, run.id, HOSTILE)

    code, out, err = await cli("runs", "get", run.id, address=daemon.address)
    assert code == 0, err
    clean(out)
    assert f"\n{SHOWN}  completed" in out
    assert '"note": "\\u001b]0;owned\\u0007\\u001b[2J\\x9b31m"' in out  # the input, C1 too

    code, out, err = await cli("runs", "watch", run.id, address=daemon.address)
    assert code == 0, err
    clean(out)
    assert f"task_started {SHOWN} (run running)" in out

    term = Terminal()
    try:
        proc = await asyncio.create_subprocess_exec(
            venv_bin("workflowd"), "runs", "watch", run.id, "--address", daemon.address,
            stdout=term.slave, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(term.slave)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
        await asyncio.wait_for(term.closed.wait(), 30)
    finally:
        term.close()
    assert proc.returncode == 0, err_bytes
    screen = term.output.decode()
    clean(OWN.sub("", screen))
    assert f"  {SHOWN}  completed" in screen


async def test_an_error_detail_with_escapes_shows_them_in_trigger_watch_and_runs_get(
    daemon: Daemon,
) -> None:
    wf = await apply(daemon, workflow("clipboard", CLIPBOARD))
    code, out, err = await cli("trigger", wf.id, "--watch", address=daemon.address)
    assert code == 1, err
    clean(out)
    assert "\\x1b]52;c;b3duZWQ=\\x07\\x9b2J" in out

    term = Terminal()
    try:
        proc = await asyncio.create_subprocess_exec(
            venv_bin("workflowd"), "trigger", wf.id, "--watch", "--address", daemon.address,
            stdout=term.slave, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(term.slave)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
        await asyncio.wait_for(term.closed.wait(), 30)
    finally:
        term.close()
    assert proc.returncode == 1, err_bytes
    screen = term.output.decode()
    clean(OWN.sub("", screen))
    assert "\\x1b]52;c;b3duZWQ=\\x07\\x9b2J" in screen

    runs = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=wf.id))
    code, out, err = await cli("runs", "get", runs.runs[0].id, address=daemon.address)
    assert code == 0, err
    clean(out)
    assert "  detail    \\x1b]52;c;b3duZWQ=\\x07\\x9b2J" in out


@pytest.mark.own_plane  # the datasets CLI calls the daemon's own data plane
async def test_dataset_columns_and_cells_with_escapes_show_them(daemon: Daemon) -> None:
    plane = Plane.of(daemon)
    try:
        await plane.load_csv("loud", f'"{HOSTILE}",plain\n"{HOSTILE}",1\n')
    finally:
        await plane.aclose()
    code, out, err = await cli("datasets", "show", "loud", "--dataplane-url", daemon.jobs_url)
    assert code == 0, err
    clean(out)
    assert f"  {SHOWN}  VARCHAR" in out
    assert f"{SHOWN}  plain" in out  # the sample's header
    assert f"{SHOWN}  1" in out  # and its cells


async def test_a_new_task_name_with_a_control_character_is_refused_at_its_pointer(
    daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(spec(name="hostile").replace("- build:", '- "bu\\eild\\x9b":'))
    code, out, err = await cli("apply", "-f", str(path), address=daemon.address)
    assert code == 1, err
    clean(out + err)
    assert (
        f"{path}:7:5: /do/0/bu\\x1bild\\x9b: a task name must not hold control"
        " characters: 'bu\\x1bild\\x9b' has U+001B at character 2"
    ) in err, err
