"""The control-flow examples of docs/workflow-language.md run as written on the local data plane,
with the events of examples/data/events.csv loaded (as the page says)."""

from __future__ import annotations

import re

import pytest
from google.protobuf import json_format, struct_pb2

from tests.conftest import REPO, Daemon
from tests.engine.support import Plane, apply, finished, trigger
from workflowd.v1 import workflow_service_pb2 as pb

DOC = (REPO / "docs" / "workflow-language.md").read_text("utf-8")
EXAMPLES = {
    match.group(2): match.group(0)
    for match in re.finditer(
        r"```yaml\n(document: \{[^\n]*name: ([\w-]+)[^\n]*\n.*?)```", DOC, re.S
    )
}
# The examples that run on the events alone, with the input each needs, and the jobs they make.
RUNS = {
    "set-day": (None, 1),
    "maybe-refresh": (None, 1),
    "switch-size": (None, 1),
    "per-country": (None, 3),
    "two-views": (None, 2),
    "check-input": ({"day": "2026-11-03"}, 1),
    "build-then-note": (None, 2),
    "nightly-retry": (None, 2),
    "settle-then-refresh": (None, 2),
}


def test_the_examples_named_here_are_on_the_page() -> None:
    assert set(RUNS) <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(RUNS))
async def test_doc_example_runs_on_the_local_data_plane(daemon: Daemon, name: str) -> None:
    plane = Plane.of(daemon)
    await plane.load_csv("events", (REPO / "examples" / "data" / "events.csv").read_text())
    text = EXAMPLES[name].removeprefix("```yaml\n").removesuffix("```")
    run_input, jobs = RUNS[name]
    fields = (
        {} if run_input is None else {"input": json_format.ParseDict(run_input, struct_pb2.Value())}
    )
    run = await finished(
        daemon, (await trigger(daemon, (await apply(daemon, text)).id, **fields)).id
    )
    assert run.status == pb.RUN_STATUS_COMPLETED, run.error
    made = await plane.jobs_for_run(run.id)
    assert len(made) == jobs
    assert {job["state"] for job in made} == {"completed"}
    await plane.aclose()
