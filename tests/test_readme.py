"""The README's promises: `scripts/serve` starts the daemon, and the quickstart's commands work
against it, exactly as written (only the ports differ, since tests must not take 50051)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.procs import Process

pytestmark = pytest.mark.slow


def quickstart() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert block, "README.md lost its quickstart block"
    return block.group(1)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    proc = await Process.start(
        [
            str(REPO / "scripts" / "serve"),
            "--listen",
            "127.0.0.1:0",
            "--dataplane-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "state"),
        ],
        r"serving gRPC on (\d+\.\d+\.\d+\.\d+:\d+) \(jobs API (http://\S+),",
        timeout_s=300,
    )
    yield proc.ready.group(1), proc.ready.group(2)
    await proc.stop()


async def test_the_first_screen_names_both_commands() -> None:
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:20])
    assert "scripts/serve" in head
    assert "scripts/test" in head


async def test_quickstart_runs_as_written(served: tuple[str, str], tmp_path: Path) -> None:
    address, dataplane_url = served
    script = quickstart().replace("127.0.0.1:50051", address)
    env = {
        **os.environ,
        "WORKFLOWD_ADDRESS": address,
        "WORKFLOWD_DATAPLANE_URL": dataplane_url,
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "analytics/daily-summary version 1.0.0 created" in text
    assert re.search(r"run \S+ completed", text)
    assert "workflowd.v1.WorkflowService" in text
    assert '"namespace": "analytics"' in text
