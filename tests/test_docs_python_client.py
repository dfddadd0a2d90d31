"""docs/python-client.md's examples run as written: each ```python block as its own program,
against a real daemon that has the README's example workflow and data."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

from tests.conftest import REPO, Daemon
from tests.engine.support import Plane
from workflowd.v1 import workflow_service_pb2 as pb

DOC = REPO / "docs" / "python-client.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
async def ready(daemon: Daemon) -> Daemon:
    plane = Plane.of(daemon)
    await plane.load_csv("events", (REPO / "examples" / "data" / "events.csv").read_text())
    await plane.aclose()
    text = (REPO / "examples" / "daily-summary.yaml").read_text()
    await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    return daemon


def test_the_page_has_examples() -> None:
    assert len(examples()) >= 5


@pytest.mark.parametrize("index", range(len(examples())))
async def test_example_runs_as_written(ready: Daemon, index: int) -> None:
    code = examples()[index]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code,
        env={**os.environ, "WORKFLOWD_ADDRESS": ready.address},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    said = out.decode()
    assert proc.returncode == 0, f"example {index + 1}:\n{code}\n{said}"
    assert said.strip() or "client.close()" in code, f"example {index + 1} printed nothing"
