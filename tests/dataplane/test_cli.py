"""`workflowd dataplane serve` and `python -m dataplane serve`: tokens, listen address, signals."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from dataplane.__main__ import add_serve_arguments, parse_listen, read_tokens
from tests.dataplane.dp_support import Client

SRC = Path(__file__).resolve().parents[2] / "src"


def test_tokens_come_from_the_file_else_the_environment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# token company\ntok-1 acme\n\ntok-2 globex\n")
    env = {"DATAPLANE_TOKENS": "x=ignored"}
    assert read_tokens(tokens, env) == {"tok-1": "acme", "tok-2": "globex"}
    assert read_tokens(None, {"DATAPLANE_TOKENS": "a=acme, b=globex"}) == {
        "a": "acme",
        "b": "globex",
    }
    assert read_tokens(None, {}) is None
    with pytest.raises(ValueError, match="token=company"):
        read_tokens(None, {"DATAPLANE_TOKENS": "nocompany"})
    tokens.write_text("one two three\n")
    with pytest.raises(ValueError, match="expected 'token company'"):
        read_tokens(tokens, {})


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9") == ("::1", 9)


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_serve_arguments(parser)
    return parser


def test_limit_flags_have_defaults_and_refuse_nonsense() -> None:
    defaults = _serve_parser().parse_args(["--data-dir", "d"])
    assert (defaults.job_timeout_s, defaults.memory_limit) == (3600.0, "1GiB")
    given = ["--data-dir", "d", "--job-timeout-s", "2.5", "--memory-limit", "512MiB"]
    parsed = _serve_parser().parse_args(given)
    assert (parsed.job_timeout_s, parsed.memory_limit) == (2.5, "512MiB")
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(argparse.ArgumentError, match="positive number of seconds"):
            _serve_parser().parse_args(["--data-dir", "d", "--job-timeout-s", bad])


@pytest.mark.slow
async def test_python_m_dataplane_serve_applies_the_job_time_limit(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("DATAPLANE_TOKENS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dataplane", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "d"), "--job-timeout-s", "0.5", "--memory-limit", "300MB",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"http://[\d.]+:\d+", line)
        assert match, line
        slow = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
        job = await Client(match.group(0), session).run(
            "materialize-view", {"nql": slow, "dataset_name": "slow"}
        )
        assert job["state"] == "failed"
        assert "time limit of 0.5 s" in job["failures"][0]["message"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.slow
async def test_workflowd_dataplane_serve_runs_with_tokens_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("secret acme\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from workflowd.cli import main; sys.exit(main())",
        "dataplane", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
        "--workers", "1", "--tokens-file", str(tokens),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"http://[\d.]+:\d+", line)
        assert match, line
        async with aiohttp.ClientSession() as session:
            async with session.get(match.group(0) + "/jobs") as response:
                assert response.status == 401
            headers = {"Authorization": "Bearer secret"}
            async with session.get(match.group(0) + "/datasets", headers=headers) as response:
                assert await response.json() == {"records": []}
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert (tmp_path / "d" / "acme.duckdb").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
