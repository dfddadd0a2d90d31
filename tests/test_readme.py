"""The README's promises, kept as a newcomer meets them: a copy of the repository whose
`scripts/serve` makes its own fresh virtual environment (not the dev one, which has grpcurl and
the test tools), then the quickstart's commands exactly as written (only the ports differ, since
tests must not take 50051). The grpcurl examples, which need grpcurl installed, run against a
daemon of the dev environment."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Daemon, venv_bin
from tests.procs import Process
from workflowd.v1 import workflow_service_pb2 as pb

pytestmark = pytest.mark.slow


def block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- {name} -->\s*```sh\n(.*?)```\s*<!-- /{name} -->", text, re.S)
    assert found, f"README.md lost its {name} block"
    return found.group(1)


def newcomer_env(**extra: str) -> dict[str, str]:
    """The environment without the dev virtual environment: its PATH entry and VIRTUAL_ENV."""
    dev_bins = {str(REPO / ".venv" / "bin"), str(Path(venv_bin("python")).parent)}
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in dev_bins)
    env.update(extra)
    return env


def copy_of_repository(into: Path) -> Path:
    """The repository's files as a clone would have them (plus uncommitted changes)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, str, str, list[str]]]:
    checkout = copy_of_repository(tmp_path / "workflowd")
    proc = await Process.start(
        [
            str(checkout / "scripts" / "serve"),
            "--listen", "127.0.0.1:0", "--dataplane-listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "state"),
        ],
        r"serving gRPC on (\d+\.\d+\.\d+\.\d+:\d+) \(jobs API (http://\S+),",
        env=newcomer_env(),
        timeout_s=600,
    )  # fmt: skip
    yield checkout, proc.ready.group(1), proc.ready.group(2), proc.before_ready
    await proc.stop()


async def test_the_first_screen_names_both_commands() -> None:
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:20])
    assert "scripts/serve" in head
    assert "scripts/test" in head


async def test_quickstart_runs_as_written_after_scripts_serve_alone(
    served: tuple[Path, str, str, list[str]],
) -> None:
    checkout, address, dataplane_url, install = served
    venv = checkout / ".venv"
    assert (venv / "bin" / "workflowd").exists()
    assert not (venv / "bin" / "grpcurl").exists()  # the runtime install, not the dev one
    # setuptools warns at install about a deprecated pyproject.toml (the license table).
    assert not [line for line in install if "deprecated" in line.lower()], install
    script = block("quickstart").replace("127.0.0.1:50051", address)
    env = newcomer_env(WORKFLOWD_ADDRESS=address, WORKFLOWD_DATAPLANE_URL=dataplane_url)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=checkout, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "analytics/daily-summary version 1.0.0 created" in text
    assert re.search(r"run \S+ completed", text)
    assert text.count("document: {dsl: '1.0.0', namespace: analytics") == 1  # -o yaml
    assert re.search(r"run \S+ of analytics/daily-summary started\n", text)
    assert re.search(r"  refresh\s+completed\s+\{", text)


async def test_the_grpcurl_examples_run_as_written(daemon: Daemon) -> None:
    text = (REPO / "examples" / "daily-summary.yaml").read_text()
    await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    script = block("grpcurl").replace("127.0.0.1:50051", daemon.address)
    env = {
        **os.environ,
        "PATH": f"{Path(venv_bin('grpcurl')).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    said = out.decode()
    assert proc.returncode == 0, said
    assert "workflowd.v1.WorkflowService" in said
    assert '"namespace": "analytics"' in said
    assert '"trigger": "RUN_TRIGGER_MANUAL"' in said
