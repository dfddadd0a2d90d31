"""The data plane over HTTPS, on its own (`python -m dataplane serve`, `workflowd dataplane
serve`): plain HTTP is refused, and with a client CA every caller needs a certificate chained
to it, service tokens included; `/healthz` needs none."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.dataplane.dp_support import SRC, dataplane_process, tokens_toml
from tests.tls import Pki, make_pki

TOKENS = tokens_toml({"tok-acme": "acme"}, {"tok-svc": "workflowd"})
NO_CERTIFICATE = "this data plane requires a TLS client certificate signed by its client CA"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def trusting(pki: Pki, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if with_certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


async def status(url: str, context: ssl.SSLContext, token: str = "", **headers: str) -> int:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=context) as response,
    ):
        if response.status == 401:  # every 401 here is for the missing certificate
            body = await response.json()
            assert body["detail"] == NO_CERTIFICATE
        return response.status


@pytest.mark.slow
async def test_client_certificates_are_required_of_every_caller(tmp_path: Path, pki: Pki) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    flags = ["--tokens-file", str(tokens), "--tls-cert", str(pki.server_cert)]
    flags += ["--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)]
    async with dataplane_process(tmp_path / "d", *flags) as served:
        assert served.url.startswith("https://127.0.0.1:")
        anonymous, identified = trusting(pki, False), trusting(pki, True)
        jobs = f"{served.url}/jobs"
        assert await status(jobs, identified, "tok-acme") == 200
        assert await status(jobs, anonymous, "tok-acme") == 401
        # A service token is no exception here: the operator gave it to a remote caller.
        assert await status(jobs, anonymous, "tok-svc", **{"X-Workflowd-Company": "acme"}) == 401
        assert await status(jobs, identified, "tok-svc", **{"X-Workflowd-Company": "acme"}) == 200
        assert await status(f"{served.url}/metrics", anonymous) == 401
        assert await status(f"{served.url}/healthz", anonymous) == 200
        plain = served.url.replace("https://", "http://")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"{plain}/jobs", headers={"Authorization": "Bearer tok-acme"})


@pytest.mark.slow
async def test_workflowd_dataplane_serve_takes_the_tls_flags(tmp_path: Path, pki: Pki) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from workflowd.cli import main; sys.exit(main())",
        "dataplane", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        found = re.search(r"https://[\d.]+:\d+", line)
        assert found, line
        assert await status(f"{found.group()}/jobs", trusting(pki, True)) == 200
        assert await status(f"{found.group()}/jobs", trusting(pki, False)) == 401
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.slow
async def test_a_tls_configuration_that_cannot_serve_is_refused_in_one_sentence(
    tmp_path: Path, pki: Pki
) -> None:
    for flags, said in [
        (["--tls-cert", str(pki.server_cert)], "dataplane: --tls-cert and --tls-key go together\n"),
        (["--tls-client-ca", str(pki.ca)], "dataplane: --tls-client-ca needs --tls-cert and --tls-key\n"),
        (
            ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.ca)],
            f"dataplane: cannot use the certificate {pki.server_cert} with the key {pki.ca}: ",
        ),
    ]:  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dataplane", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(tmp_path / "d"), *flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 2, err
        assert err.decode().startswith(said)
        assert err.decode().count("\n") == 1
