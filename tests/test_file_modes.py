"""The data directory is its user's alone: after a run, `workflowd serve`'s directory is 0700
and every file in it 0600 (the store and its WAL, the data plane's DuckDB files and tokens);
files an earlier start left readable are closed at the next start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import pytest

from tests.api.test_tenancy import ACME, TOKENS, tokens_file
from tests.conftest import REPO, eventually, venv_bin
from tests.procs import Process
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

VIEW = (
    "  - view:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: one}\n"
)


def modes(data_dir: Path) -> dict[str, int]:
    """Every path under `data_dir` (itself as "."), with its permission bits."""
    found = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    for path in data_dir.rglob("*"):
        found[str(path.relative_to(data_dir))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def loose(found: dict[str, int], data_dir: Path) -> dict[str, str]:
    """The paths that others may read, with their modes."""
    wrong = {}
    for name, mode in found.items():
        expected = 0o700 if (data_dir / name).is_dir() else 0o600
        if mode != expected:
            wrong[name] = oct(mode)
    return wrong


async def serve(data_dir: Path, tokens: Path) -> tuple[Process, str]:
    flags = [
        "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--dataplane-listen", "127.0.0.1:0", "--tokens-file", str(tokens),
    ]  # fmt: skip
    process = await Process.start(
        [venv_bin("workflowd"), "serve", *flags],
        r"serving gRPC on (\d+\.\d+\.\d+\.\d+:\d+)",
        env={"PYTHONPATH": str(REPO)},
    )
    return process, process.ready.group(1)


@pytest.mark.slow
async def test_the_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    tokens = tokens_file(tmp_path / "tokens.toml", TOKENS)
    process, address = await serve(data_dir, tokens)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.WorkflowServiceStub(channel)
            created = await stub.CreateWorkflow(
                pb.CreateWorkflowRequest(
                    specification=spec(name="private", tasks=VIEW), trigger_immediately=True
                ),
                metadata=ACME,
            )

            async def completed() -> bool:
                got = await stub.GetRun(pb.GetRunRequest(run_id=created.run_id), metadata=ACME)
                return got.run.status == pb.RUN_STATUS_COMPLETED

            await eventually(completed, timeout_s=60)
        found = modes(data_dir)
        for name in (
            "workflowd.db", "workflowd.db-wal", "workflowd.db-shm", "dataplane-tokens.toml",
            "dataplane", "dataplane/acme.duckdb", "dataplane/acme.journal",
        ):  # fmt: skip
            assert name in found, sorted(found)
        assert loose(found, data_dir) == {}
    finally:
        await process.stop()

    # What another umask, or an earlier version, left readable is closed at start.
    for name in found:
        path = data_dir / name
        if path.exists():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    process, _ = await serve(data_dir, tokens)
    try:
        assert loose(modes(data_dir), data_dir) == {}
    finally:
        await process.stop()
