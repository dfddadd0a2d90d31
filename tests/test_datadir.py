"""One data directory has one daemon, and one port one server: a second `workflowd serve` refuses
to start with one sentence instead of sharing the store or the port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import venv_bin
from tests.procs import Process

pytestmark = pytest.mark.slow


def serve_argv(data_dir: Path, listen: str = "127.0.0.1:0") -> list[str]:
    return [
        venv_bin("workflowd"),
        "serve",
        "--listen",
        listen,
        "--http-listen",
        "127.0.0.1:0",
        "--dataplane-listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
    ]


async def start(data_dir: Path) -> Process:
    return await Process.start(serve_argv(data_dir), r"serving gRPC on (\S+:\d+) ")


async def run_to_exit(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode() + err.decode()


async def test_a_second_daemon_on_the_same_data_dir_refuses_naming_the_first(
    tmp_path: Path,
) -> None:
    first = await start(tmp_path / "state")
    try:
        code, output = await run_to_exit(serve_argv(tmp_path / "state"))
        assert code != 0
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines == [
            f"workflowd: data directory {tmp_path / 'state'} is in use by another workflowd "
            f"(process {first.proc.pid}); stop it or choose another --data-dir"
        ]
    finally:
        await first.stop()


async def test_the_lock_is_released_when_the_daemon_dies(tmp_path: Path) -> None:
    first = await start(tmp_path / "state")
    await first.kill9()
    second = await start(tmp_path / "state")
    await second.stop()
    assert await second.wait() == 0


async def test_a_second_daemon_on_the_same_port_refuses_instead_of_sharing_it(
    tmp_path: Path,
) -> None:
    first = await start(tmp_path / "one")
    try:
        address = first.ready.group(1)
        code, output = await run_to_exit(serve_argv(tmp_path / "two", listen=address))
        assert code != 0
        assert f"cannot listen on {address}: the address is in use" in output
        assert "Traceback" not in output
    finally:
        await first.stop()


async def test_a_second_daemon_naming_the_first_ones_store_refuses_naming_it(
    tmp_path: Path,
) -> None:
    """Issue 16, item 5: its own data directory, but `--store sqlite:///` the first one's file.
    It must not start (it would resume the first one's runs and submit their jobs again)."""
    first = await start(tmp_path / "one")
    store = tmp_path / "one" / "workflowd.db"
    try:
        code, output = await run_to_exit(
            [*serve_argv(tmp_path / "two"), "--store", f"sqlite://{store}"]
        )
        assert code == 2
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines == [
            f"workflowd: cannot start: the SQLite store {store} is in use by another workflowd"
            " (process "
            f"{first.proc.pid}); stop it or choose another --store"
        ]
    finally:
        await first.stop()
    second = await Process.start(
        [*serve_argv(tmp_path / "two"), "--store", f"sqlite://{store}"], r"serving gRPC on "
    )
    await second.stop()
    assert await second.wait() == 0
