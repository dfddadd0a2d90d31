"""`workflowd dataplane serve` and `python -m dataplane serve`: tokens, listen address, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from dataplane.__main__ import parse_listen, read_tokens

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
