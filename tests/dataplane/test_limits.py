"""One heavy job cannot starve everyone unseen: time and memory limits, and saturation in
/healthz and /metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dataplane.app import DataPlane
from dataplane.auth import TokenTable
from tests.dataplane.dp_support import Client, PlaneFactory, Running, eventually

SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3"


async def _state(dp: Running, job_id: str, state: str) -> None:
    async def reached() -> bool:
        _, job = await dp.client.request("GET", f"/jobs/{job_id}")
        return bool(job["state"] == state)

    await eventually(reached)


async def _metrics(client: Client) -> dict[str, float]:
    async with client.session.get(client.url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        name: float(value)
        for name, value in re.findall(r"^(\S+) (\S+)$", text, re.M)
        if not name.startswith("#")
    }


async def test_a_job_over_its_time_limit_fails_naming_the_limit(
    start_plane: PlaneFactory,
) -> None:
    dp = await start_plane(workers=1, job_timeout_s=0.5)
    job = await dp.client.run("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    assert job["state"] == "failed"
    message = job["failures"][0]["message"]
    assert "ran longer than its time limit of 0.5 s" in message
    assert "--job-timeout-s" in message
    # SLOW runs for hours: a job that ended failed naming the limit was interrupted.
    # The only worker is free again.
    after = await dp.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "x"})
    assert after["state"] == "completed"


async def test_healthz_and_metrics_show_a_saturated_plane(start_plane: PlaneFactory) -> None:
    dp = await start_plane(workers=1, tokens=TokenTable.of({"tok": "acme"}), token="tok")
    slow = await dp.client.submit("materialize-view", {"nql": SLOW, "dataset_name": "slow"})
    await _state(dp, slow["job_id"], "running")
    queued = await dp.client.submit(
        "materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "q"}
    )
    # /healthz and /metrics need no token: probes and scrapers have none.
    anonymous = Client(dp.client.url, dp.client.session)

    async def saturated() -> dict[str, Any] | None:
        _, health = await anonymous.request("GET", "/healthz")
        return dict(health) if health["queued_jobs"] == 1 else None

    assert await eventually(saturated) == {
        "status": "ok",
        "workers": {"busy": 1, "total": 1},
        "queued_jobs": 1,
        "saturated": True,
        "unusable_companies": [],
    }
    metrics = await _metrics(anonymous)
    assert metrics['dataplane_workers{company="acme"}'] == 1
    assert metrics['dataplane_workers_busy{company="acme"}'] == 1
    assert metrics['dataplane_jobs_queued{company="acme"}'] == 1

    await dp.client.request("POST", f"/jobs/{slow['job_id']}/cancel")
    assert (await dp.client.wait(queued["job_id"]))["state"] == "completed"

    async def idle() -> dict[str, Any] | None:
        _, health = await anonymous.request("GET", "/healthz")
        return dict(health) if health["workers"]["busy"] == 0 else None

    assert (await eventually(idle))["saturated"] is False
    metrics = await _metrics(anonymous)
    ended = 'company="acme",state="{}",type="materialize-view"'
    assert metrics[f"dataplane_jobs_ended_total{{{ended.format('cancelled')}}}"] == 1
    assert metrics[f"dataplane_jobs_ended_total{{{ended.format('completed')}}}"] == 1
    assert metrics[f"dataplane_job_duration_seconds_count{{{ended.format('cancelled')}}}"] == 1
    assert metrics[f"dataplane_job_duration_seconds_sum{{{ended.format('cancelled')}}}"] > 0
    assert metrics['dataplane_workers_busy{company="acme"}'] == 0


async def test_the_memory_limit_is_set_before_the_lockdown(start_plane: PlaneFactory) -> None:
    dp = await start_plane(memory_limit="256MiB")
    await dp.client.request("GET", "/datasets")  # opens the default company
    assert dp.query(
        "SELECT current_setting('memory_limit'), current_setting('lock_configuration')"
    ) == [("256.0 MiB", True)]
    job = await dp.client.run("execute-dml", {"nql": "SET memory_limit = '64GB'"})
    assert "not SET" in job["failures"][0]["message"]


async def test_the_default_memory_limit_is_one_gibibyte(dp: Running) -> None:
    await dp.client.request("GET", "/datasets")
    assert dp.query("SELECT current_setting('memory_limit')") == [("1.0 GiB",)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory_limit": "lots"}, "must be a size such as 1GiB"),
        ({"memory_limit": "1GB'; SET lock_configuration=false; --"}, "must be a size"),
        ({"job_timeout_s": 0}, "positive number of seconds"),
        ({"job_timeout_s": float("nan")}, "positive number of seconds"),
        ({"workers": 0}, "at least 1"),
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"batch_window_s": -1.0}, "the batch window must be a positive number of seconds"),
    ],
)
def test_bad_limits_are_refused(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DataPlane(tmp_path, **options)
