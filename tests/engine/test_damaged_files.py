"""Damaged files and failed starts (issue 16, item 7). One company's damaged DuckDB file fails
that company's jobs and dataset calls with a clear error while the other companies are served;
a damaged SQLite store stops `workflowd serve` with one sentence; a start that fails always says
why. Real daemons, the embedded data plane as its child process, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.api.test_tenancy import ACME, GLOBEX, TOKENS, tokens_file
from tests.conftest import Daemon, daemon_settings, serve_refused
from tests.specs import spec
from tests.test_cli import cli
from workflowd.app import App
from workflowd.jobs.local_trust import DataPlaneFailed
from workflowd.v1 import workflow_service_pb2 as pb


async def run_once(daemon: Daemon, who: tuple[tuple[str, str], ...], name: str) -> pb.Run:
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name=name), trigger_immediately=True),
        metadata=who,
    )
    return await finished_as(daemon, created.run_id, who)


async def finished_as(daemon: Daemon, run_id: str, who: tuple[tuple[str, str], ...]) -> pb.Run:
    async for _ in daemon.stub.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=who):
        pass
    return (await daemon.stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=who)).run


async def test_one_companys_damaged_database_fails_its_own_work_and_the_others_are_served(
    start_daemon: Callable[..., Awaitable[Daemon]], tmp_path: Path
) -> None:
    tokens = str(tokens_file(tmp_path / "tokens.toml", TOKENS))
    first = await start_daemon(tokens_file=tokens)
    for who, name in ((ACME, "acme-flow"), (GLOBEX, "globex-flow")):
        assert (await run_once(first, who, name)).status == pb.RUN_STATUS_COMPLETED
    await first.app.drain()
    damaged = first.data_dir / "dataplane" / "acme.duckdb"
    with damaged.open("r+b") as file:  # its header overwritten
        file.write(os.urandom(8192))

    daemon = await start_daemon(first.data_dir, tokens_file=tokens)
    assert (await run_once(daemon, GLOBEX, "globex-again")).status == pb.RUN_STATUS_COMPLETED
    failed = await run_once(daemon, ACME, "acme-again")
    assert failed.status == pb.RUN_STATUS_FAILED
    detail = failed.error.detail
    assert detail.startswith("jobs API answered 507: company acme's database cannot be opened (")
    assert "acme.duckdb" in detail
    assert str(damaged) not in detail  # what is wrong, not where the daemon keeps its files
    assert detail.endswith("its jobs and datasets are unavailable until an operator restores it")

    code, out, err = await cli(
        "datasets", "list", "--dataplane-url", daemon.jobs_url, "--token", "tok-acme"
    )
    assert (code, out) == (1, "")
    assert "company acme's database cannot be opened" in err
    code, out, err = await cli(
        "datasets",
        "list",
        "--dataplane-url",
        daemon.jobs_url,
        "--token",
        "tok-globex",
        "-o",
        "json",
    )
    assert code == 0, err
    names = sorted(d["dataset_name"] for d in json.loads(out))
    assert names == ["globex_again_view", "globex_flow_view"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.jobs_url}/healthz") as response,
    ):
        health = await response.json()
    assert health["unusable_companies"] == ["acme"]


async def test_a_damaged_sqlite_store_stops_serve_with_one_sentence(
    start_daemon: Callable[..., Awaitable[Daemon]],
) -> None:
    first = await start_daemon()
    assert (await run_once(first, (), "before")).status == pb.RUN_STATUS_COMPLETED
    await first.app.drain()
    store = first.data_dir / "workflowd.db"
    with store.open("r+b") as file:
        file.write(os.urandom(4096))
    said = await serve_refused(
        first.data_dir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--log-level", "ERROR",
    )  # fmt: skip
    assert said.startswith(
        f"workflowd: cannot start: the SQLite store {store} is damaged (file is not a database)"
    )
    assert said.endswith(
        "restore it from a backup, or move it aside to start with an empty store\n"
    )


async def test_a_data_plane_that_refuses_its_configuration_stops_serve_at_once_saying_why(
    tmp_path: Path,
) -> None:
    said = await serve_refused(
        tmp_path / "state",
        "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--dataplane-listen", "127.0.0.1:0", "--dataplane-memory-limit", "lots",
        "--log-level", "ERROR",
    )  # fmt: skip
    assert said == (
        "workflowd: cannot start: dataplane: memory limit 'lots' must be a size"
        " such as 1GiB or 512MB, or a percentage of RAM such as 50%\n"
    )


async def test_a_data_plane_whose_port_is_taken_is_a_reason_not_an_empty_line(
    tmp_path: Path,
) -> None:
    """Its port is taken: the start fails at once saying so (it was `cannot start: ` and
    nothing else, after 60 s)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App(daemon_settings(tmp_path / "state", dataplane_listen=f"127.0.0.1:{port}"))
        try:
            with pytest.raises(DataPlaneFailed) as info:
                await app.start()
        finally:
            await app.drain()
    assert str(info.value) == (
        f"the data plane cannot listen on 127.0.0.1:{port}: the port is taken by another"
        " process; choose another --dataplane-listen"
    )
