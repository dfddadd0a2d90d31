"""The example data and workflows run on the data plane; the `datasets` CLI loads and shows."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import jq
import pytest
import yaml

from tests.dataplane.dp_support import Running
from workflowd.cli import main as cli_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOB_TYPES = {
    "CreateMaterializedViewIfNotExists": "materialize-view",
    "RefreshMaterializedView": "refresh-materialized-view",
    "ExecuteDml": "execute-dml",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _evaluate(value: Any, context: dict[str, Any]) -> Any:
    """Just enough of workflowd's expression rules: a string wholly `${ … }` is jq."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return jq.compile(value[2:-1], args={"context": context}).input_value({}).first()
    return value


async def _run_workflow(dp: Running, path: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load(await asyncio.to_thread(path.read_text))
    context: dict[str, Any] = {}
    jobs = []
    for entry in spec["do"]:
        ((_, task),) = entry.items()
        job_input = {_snake(k): _evaluate(v, context) for k, v in task["with"].items()}
        job = await dp.client.run(JOB_TYPES[task["call"]], job_input)
        assert job["state"] == "completed", (path.name, job)
        output = {_camel(k): v for k, v in job["result"].items()}
        if "export" in task:
            context = (
                jq.compile(task["export"]["as"], args={"context": context})
                .input_value(output)
                .first()
            )
        jobs.append(job)
    return jobs


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(cli_main, list(argv))


async def test_datasets_cli_loads_lists_and_shows_the_example_events(
    dp: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--dataplane-url", dp.client.url]
    csv = str(EXAMPLES / "data" / "events.csv")
    assert await _cli("datasets", "load", csv, "--name", "events", *url) == 0
    assert "loaded company_data.events (dataset 1): 3000 rows, 6 columns" in capsys.readouterr().out
    assert await _cli("datasets", "list", *url) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ID  NAME    KIND   ROWS",
        "1   events  table  3000",
    ]
    assert await _cli("datasets", "show", "events", "--limit", "2", "-o", "json", *url) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["row_count"] == 3000
    assert [c["name"] for c in shown["columns"]][:3] == ["event_id", "user_id", "event_type"]
    assert len(shown["sample"]["rows"]) == 2
    assert await _cli("datasets", "show", "nothing", *url) == 1
    assert "no dataset 'nothing'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["daily-summary", "revenue-by-country", "funnel-cleanup"])
async def test_example_workflows_run_on_the_example_data(dp: Running, name: str) -> None:
    status, _ = await dp.client.request(
        "POST", "/datasets/events/load?format=csv", data=(EXAMPLES / "data/events.csv").read_bytes()
    )
    assert status == 200
    first = await _run_workflow(dp, EXAMPLES / f"{name}.yaml")
    again = await _run_workflow(dp, EXAMPLES / f"{name}.yaml")
    assert len(first) == len(again)
    if name == "daily-summary":
        active = first[1]["result"]["dataset_id"]
        assert dp.query("SELECT dataset_id FROM company_data.audit") == [(active,), (active,)]
        assert dp.query("SELECT sum(events) FROM company_data.active_users") == [(3000,)]
    if name == "revenue-by-country":
        assert dp.query("SELECT count(*) FROM company_data.top_markets") == [(3,)]
