"""Names and ids that carry URL syntax never reach another endpoint: the CLI and the datasets
client refuse names that break the rule, and every URL is built from encoded parts."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.engine.support import EVENTS_CSV, Plane
from tests.jobs.conftest import FAST
from tests.test_cli import cli
from workflowd.domain.errors import InvalidRequest
from workflowd.jobs import JobNotFound, JobsClient
from workflowd.jobs.datasets import DatasetsClient
from workflowd.jobs.urls import Base, path

# The datasets CLI and client call the daemon's own data plane, as a person on its host does.
pytestmark = pytest.mark.own_plane

HOSTILE = [
    "events?replace=true&format=csv",
    "../jobs",
    "events/load",
    "a#b",
    "ünïcode",
    "x" * 300,
    "",
    "12345",
]


@pytest.fixture
async def plane(daemon: Daemon) -> AsyncIterator[Plane]:
    plane = Plane.of(daemon)
    await plane.load_csv("events", EVENTS_CSV)
    yield plane
    await plane.aclose()


def test_each_value_is_one_encoded_segment() -> None:
    assert path("datasets", "a/b?c&d#e", "load") == "/datasets/a%2Fb%3Fc%26d%23e/load"
    url = Base("http://127.0.0.1:9/api/").join(path("jobs", "../x"))
    assert str(url) == "http://127.0.0.1:9/api/jobs/..%2Fx"


async def test_load_with_a_url_in_the_name_replaces_nothing(
    daemon: Daemon, plane: Plane, tmp_path: Path
) -> None:
    before = await plane.rows("events")
    other = tmp_path / "other.csv"
    other.write_text("x\n1\n")
    for name in HOSTILE:
        if name == "12345":
            continue  # a valid id shape, refused below for another reason
        code, _, err = await cli(
            "datasets", "load", str(other), "--name", name, "--dataplane-url", daemon.jobs_url
        )
        assert code == 1
        assert "is not a dataset name or id: names are 1-256 letters, digits" in err
        assert len(err) < 300, "the name is quoted shortened, never echoed whole"
    code, _, err = await cli(
        "datasets", "load", str(other), "--name", "12345", "--dataplane-url", daemon.jobs_url
    )
    assert code == 1
    assert "cannot be all digits" in err
    assert await plane.rows("events") == before


async def test_show_refuses_a_name_with_url_syntax_with_a_sentence(daemon: Daemon) -> None:
    code, _, err = await cli("datasets", "show", "a/b?c#d", "--dataplane-url", daemon.jobs_url)
    assert code == 1
    assert "'a/b?c#d' is not a dataset name or id" in err
    assert "Not Found" not in err


async def test_the_datasets_client_checks_before_any_request(daemon: Daemon) -> None:
    async with DatasetsClient(daemon.jobs_url) as client:
        for name in HOSTILE[:-1]:
            with pytest.raises(InvalidRequest, match="is not a dataset name or id"):
                await client.describe(name)
            with pytest.raises(InvalidRequest, match="is not a dataset name or id"):
                await client.sample(name)


async def test_a_job_id_with_url_syntax_stays_a_job_id(daemon: Daemon, plane: Plane) -> None:
    config = dataclasses.replace(FAST, base_url=daemon.jobs_url, retry_deadline_s=2.0)
    async with JobsClient(config) as client:
        for job_id in ["../datasets/events", "x?ids=1", "a#b"]:
            with pytest.raises(JobNotFound):
                await client.get(job_id)
