"""`workflowd dataplane serve` and `python -m dataplane serve`: the tokens file, the listen
address and the insecure rule, limits, signals."""

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

from dataplane.__main__ import add_serve_arguments, exposure_refusal, parse_listen
from dataplane.auth import TokenTable, digest, load_tokens
from tests.dataplane.dp_support import SRC, Client, dataplane_process, eventually, tokens_toml

SHA = digest("tok")


def test_the_tokens_file_maps_digests_to_companies_and_services(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        "# acme's CI and workflowd\n"
        + tokens_toml({"tok-acme": "acme"}, {"tok-svc": "workflowd"})
        + f'[[tokens]]\ncompany = "globex"\nname = "globex-ci@2"\nsha256 = "{SHA}"\n'
    )
    table = load_tokens(path)
    assert (table.company_tokens, table.service_tokens) == (2, 1)
    principals = {token: table.lookup(token) for token in ("tok-acme", "tok-svc", "tok")}
    assert {token: (p and (p.name, p.company)) for token, p in principals.items()} == {
        "tok-acme": ("acme-0", "acme"),
        "tok-svc": ("workflowd", None),
        "tok": ("globex-ci@2", "globex"),
    }
    assert table.lookup("tok-nobody") is None
    assert "tok-acme" not in repr(table), "only digests are kept"


ENTRY = '[[tokens]]\ncompany = "acme"\nname = "ci"\nsha256 = "' + SHA + '"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[tokens]\n", "is not valid TOML"),
        ("", "has no [[tokens]] or [[service_tokens]] entry"),
        ('[[users]]\nname = "x"\n', "unknown section 'users'"),
        ('tokens = "acme"\n', "tokens must be an array of tables ([[tokens]])"),
        ('[[tokens]]\ncompany = "acme"\nname = "ci"\n', "tokens[0]: sha256 is required"),
        (ENTRY.replace('company = "acme"', "company = 7"), "tokens[0]: company is required"),
        (ENTRY + 'colour = "red"\n', "tokens[0] has an unknown field 'colour'"),
        (
            ENTRY.replace('"acme"', '"Acme Corp"'),
            "tokens[0] (name 'ci'): company 'Acme Corp' must match",
        ),
        (ENTRY.replace('"ci"', '"acme ci"'), "tokens[0]: name must match [A-Za-z0-9_.@:-]{1,64}"),
        (
            ENTRY.replace(SHA, "s3cret-token-in-clear"),
            "tokens[0] (name 'ci'): sha256 must be the 64 lowercase hexadecimal digits",
        ),
        (ENTRY.replace(SHA, SHA.upper()), "tokens[0] (name 'ci'): sha256 must be the 64 lowercase"),
        (
            ENTRY + ENTRY.replace('"ci"', '"ci-2"'),
            "tokens[1] (name 'ci-2'): sha256 is the digest of another token too",
        ),
        (
            ENTRY + f'[[service_tokens]]\nname = "ci"\nsha256 = "{digest("x")}"\n',
            "service_tokens[0] (name 'ci'): name is already used by another token",
        ),
        (
            f'[[service_tokens]]\ncompany = "acme"\nname = "w"\nsha256 = "{SHA}"\n',
            "service_tokens[0] has an unknown field 'company'",
        ),
    ],
)
def test_a_malformed_tokens_file_is_refused_naming_the_entry_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        load_tokens(path)
    assert str(path) in str(refused.value)
    assert "s3cret" not in str(refused.value), "a token in the wrong field is never echoed"


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9") == ("::1", 9)


def test_only_loopback_addresses_may_serve_without_tokens() -> None:
    tokens = TokenTable.of({"tok": "acme"})
    for host in ("127.0.0.1", "127.8.0.1", "::1", "localhost"):
        assert exposure_refusal((host, 1), None, insecure=False) == ""
    for host in ("0.0.0.0", "::", "10.1.2.3", "dataplane.internal"):
        refusal = exposure_refusal((host, 1), None, insecure=False)
        assert refusal.startswith(f"refusing to serve {host}:1 without tokens, as anyone")
        assert exposure_refusal((host, 1), tokens, insecure=False) == ""
        assert exposure_refusal((host, 1), None, insecure=True) == ""


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_serve_arguments(parser)
    return parser


def test_limit_flags_have_defaults_and_refuse_nonsense() -> None:
    defaults = _serve_parser().parse_args(["--data-dir", "d"])
    assert (defaults.job_timeout_s, defaults.memory_limit) == (3600.0, "1GiB")
    assert defaults.quota_dataset_bytes == 0
    with pytest.raises(argparse.ArgumentError, match="a number of bytes"):
        _serve_parser().parse_args(["--data-dir", "d", "--quota-dataset-bytes", "-1"])
    assert (defaults.tokens_file, defaults.insecure) == (None, False)
    given = ["--data-dir", "d", "--job-timeout-s", "2.5", "--memory-limit", "512MiB"]
    parsed = _serve_parser().parse_args(given)
    assert (parsed.job_timeout_s, parsed.memory_limit) == (2.5, "512MiB")
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(argparse.ArgumentError, match="positive number of seconds"):
            _serve_parser().parse_args(["--data-dir", "d", "--job-timeout-s", bad])


async def _refused(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dataplane", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.slow
async def test_serve_refuses_a_bad_configuration_in_one_sentence(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    status, stderr = await _refused("--listen", "0.0.0.0:0", *data)
    assert status == 2
    assert stderr.startswith("dataplane: refusing to serve 0.0.0.0:0 without tokens, as anyone")
    assert stderr.endswith("to serve anyway\n")
    assert stderr.count("\n") == 1, "one sentence"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(ENTRY.replace(SHA, "abc"))
    status, stderr = await _refused("--tokens-file", str(tokens), *data)
    assert status == 2
    assert f"the tokens file {tokens}: tokens[0] (name 'ci'): sha256 must be" in stderr
    assert not (tmp_path / "d").exists(), "refused before anything was created"


@pytest.mark.slow
async def test_insecure_serves_any_address_without_tokens(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    everywhere = ["--listen", "0.0.0.0:0", "--insecure"]
    async with dataplane_process(tmp_path / "d", *everywhere) as served:
        assert served.url.startswith("http://0.0.0.0:")
        job = await Client(served.url, session).run(
            "materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"}
        )
        assert job["state"] == "completed"
    assert (tmp_path / "d" / "default.duckdb").exists()


@pytest.mark.slow
async def test_sighup_rereads_the_tokens_file(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(tokens_toml({"tok-old": "acme", "tok-kept": "acme"}))
    async with dataplane_process(tmp_path / "d", "--tokens-file", str(tokens)) as served:
        old, kept = Client(served.url, session, "tok-old"), Client(served.url, session, "tok-kept")
        await old.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "v"})
        tokens.write_text(tokens_toml({"tok-kept": "acme", "tok-new": "acme"}))
        served.process.send_signal(signal.SIGHUP)

        async def old_refused() -> bool:
            status, _ = await old.request("GET", "/datasets")
            return status == 401

        await eventually(old_refused)
        for client in (kept, Client(served.url, session, "tok-new")):
            _, datasets = await client.request("GET", "/datasets")
            assert [d["dataset_name"] for d in datasets["records"]] == ["v"]
        await served.logged("tokens reloaded from")
        # A file that does not parse leaves the tokens in force, and the log says why.
        tokens.write_text("[[tokens]]\nname = 'x'\n")
        served.process.send_signal(signal.SIGHUP)
        await served.logged("tokens not reloaded, the previous ones stay in force")
        assert "tokens[0]: company is required and must be a string" in served.log.read_text()
        status, _ = await kept.request("GET", "/datasets")
        assert status == 200
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 30) == 0
    assert "tok-kept" not in served.log.read_text(), "tokens are never logged"


@pytest.mark.slow
async def test_python_m_dataplane_serve_applies_the_job_time_limit(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    limits = ["--job-timeout-s", "0.5", "--memory-limit", "300MB"]
    async with dataplane_process(tmp_path / "d", *limits) as served:
        slow = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"
        job = await Client(served.url, session).run(
            "materialize-view", {"nql": slow, "dataset_name": "slow"}
        )
        assert job["state"] == "failed"
        assert "time limit of 0.5 s" in job["failures"][0]["message"]
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 30) == 0


@pytest.mark.slow
async def test_python_m_dataplane_serve_applies_the_dataset_quota(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    quota = 4 * 1024 * 1024
    async with dataplane_process(tmp_path / "d", "--quota-dataset-bytes", str(quota)) as served:
        big = "SELECT range AS x, md5(range::VARCHAR) AS h FROM range(1000000)"
        job = await Client(served.url, session).run(
            "materialize-view", {"nql": big, "dataset_name": "big"}
        )
        assert job["state"] == "failed"
        message = job["failures"][0]["message"]
        assert message.startswith("the job would take the company's datasets to "), message
        assert f"past its quota of {quota} bytes (the data plane's --quota-dataset-bytes)" in (
            message
        )
        small = await Client(served.url, session).run(
            "materialize-view", {"nql": "SELECT 1 AS one", "dataset_name": "small"}
        )
        assert small["state"] == "completed"  # nothing of the refused job stayed
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 30) == 0


@pytest.mark.slow
async def test_workflowd_dataplane_serve_runs_with_tokens_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(tokens_toml({"secret": "acme"}))
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
