"""The shipped examples are valid, both for workflowd and under the official DSL schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, Daemon
from tests.engine.support import Plane, finished, trigger
from tests.spec.official_schema import assert_valid_under_official_schema
from workflowd.spec import validate
from workflowd.v1 import workflow_service_pb2 as pb

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_official(path: Path) -> None:
    text = path.read_text()
    result = validate(text)
    assert result.valid, [d.render(str(path)) for d in result.diagnostics]
    assert_valid_under_official_schema(text)


CONTROL_FLOW = ["nightly-retry.yaml", "two-views.yaml", "per-country.yaml"]


@pytest.mark.parametrize("name", CONTROL_FLOW)
async def test_control_flow_example_runs_on_the_local_data_plane(daemon: Daemon, name: str) -> None:
    """The examples a newcomer copies run as shipped, on the events they come with."""
    plane = Plane.of(daemon)
    await plane.load_csv("events", (REPO / "examples" / "data" / "events.csv").read_text())
    text = (REPO / "examples" / name).read_text()
    created = await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text))
    run = await finished(daemon, (await trigger(daemon, created.workflow.id)).id)
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    jobs = await plane.jobs_for_run(run.id)
    assert {j["state"] for j in jobs} == {"completed"}
    assert len(jobs) == {"nightly-retry.yaml": 2, "two-views.yaml": 3, "per-country.yaml": 3}[name]
    await plane.aclose()
