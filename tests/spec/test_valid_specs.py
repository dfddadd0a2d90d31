"""Accepted specifications: parsed into the right definition, and valid official DSL."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from workflowd.domain.definition import CallBody, Schedule, Task
from workflowd.spec import parse, validate

from .official_schema import EXAMPLES, assert_valid_under_official_schema, load_yaml_12

DESIGN_EXAMPLE = """\
document: {dsl: '1.0.0', namespace: analytics, name: daily-summary, version: '1.0.0'}
schedule: {cron: '0 6 * * *'}
do:
  - buildActive:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: SELECT user_id, COUNT(1) AS events FROM company_data.events GROUP BY user_id
        datasetName: active_users
      export: {as: '$context + {activeId: .datasetId}'}
  - refresh:
      call: RefreshMaterializedView
      with: {datasetName: active_users}
  - log:
      call: ExecuteDml
      with:
        nql: '${ "INSERT INTO company_data.audit (dataset_id) VALUES (\\\\($context.activeId))" }'
"""

FULL = """\
document:
  dsl: '1.0.3'
  namespace: etl
  name: full
  version: '2.1.0-rc.1+build.5'
  title: Everything we accept
  summary: '**all** the options'
  tags: {team: data}
  metadata: {owner: me}
schedule:
  cron: CRON_TZ=Europe/Paris @daily
input:
  schema:
    format: json
    document:
      type: object
      required: [day]
      properties: {day: {type: string}}
  from: '${ {day: .day} }'
output: {as: .datasetId}
timeout: {after: {minutes: 30}}
do:
  - create:
      call: CreateMaterializedViewIfNotExists
      with:
        nql: |
          -- the view
          CREATE OR REPLACE MATERIALIZED VIEW daily AS SELECT 1
        computePoolId: pool-1
        executionCluster: dedicated
      input: {from: .}
      output: {as: {id: '${ .datasetId }', fixed: literal}}
      export: {as: '${ $context + {daily: .id} }'}
      timeout: {after: PT1M30S}
      metadata: {note: first}
  - refresh:
      call: RefreshMaterializedView
      with: {datasetId: '${ $context.daily }'}
  - clean:
      call: ExecuteDml
      with: {nql: '/* old rows */ DELETE FROM company_data.daily WHERE day < ''2020-01-01'''}
"""

JSON_SPEC = json.dumps(
    {
        "document": {"dsl": "1.0.0", "namespace": "ns", "name": "json", "version": "0.1.0"},
        "do": [{"r": {"call": "RefreshMaterializedView", "with": {"datasetId": 7}}}],
    }
)

ACCEPTED = {"design": DESIGN_EXAMPLE, "full": FULL, "json": JSON_SPEC}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_specs_are_valid_official_dsl(name: str) -> None:
    result = validate(ACCEPTED[name])
    assert result.valid, [d.render() for d in result.diagnostics]
    assert result.diagnostics == ()
    assert_valid_under_official_schema(result.document)
    assert result.document == load_yaml_12(ACCEPTED[name])


def test_design_example_parses_into_its_definition() -> None:
    definition = parse(DESIGN_EXAMPLE)
    assert (definition.dsl, definition.namespace, definition.name, definition.version) == (
        "1.0.0",
        "analytics",
        "daily-summary",
        "1.0.0",
    )
    assert definition.schedule == Schedule("0 6 * * *", "UTC")
    tasks = definition.do.tasks
    assert [t.name for t in tasks] == ["buildActive", "refresh", "log"]
    assert [t.reference for t in tasks] == [
        "/do/0/buildActive",
        "/do/1/refresh",
        "/do/2/log",
    ]
    first, second, third = tasks
    assert first.call == "CreateMaterializedViewIfNotExists"
    assert with_of(first)["datasetName"] == "active_users"
    assert first.export_as == "$context + {activeId: .datasetId}"
    assert with_of(second) == {"datasetName": "active_users"}
    assert str(with_of(third)["nql"]).startswith("${ ")
    assert (third.position, third.input_from, third.output_as, third.timeout_s) == (
        2,
        None,
        None,
        None,
    )


def test_full_spec_parses_every_option() -> None:
    definition = parse(FULL)
    assert definition.title == "Everything we accept"
    assert definition.summary == "**all** the options"
    assert definition.schedule == Schedule("@daily", "Europe/Paris")
    assert definition.input_schema == {
        "type": "object",
        "required": ["day"],
        "properties": {"day": {"type": "string"}},
    }
    assert definition.input_from == "${ {day: .day} }"
    assert definition.output_as == ".datasetId"
    assert definition.timeout_s == 1800
    create = definition.do.tasks[0]
    assert create.timeout_s == 90
    assert create.input_from == "."
    assert create.output_as == {"id": "${ .datasetId }", "fixed": "literal"}
    assert create.metadata == {"note": "first"}
    assert with_of(create)["executionCluster"] == "dedicated"
    assert with_of(definition.do.tasks[1]) == {"datasetId": "${ $context.daily }"}


def with_of(task: Task) -> Mapping[str, object]:
    assert isinstance(task.body, CallBody)
    return task.body.with_


def test_yaml_12_booleans_and_scalars() -> None:
    text = FULL.replace(
        "metadata: {owner: me}", "metadata: {on: yes, off: no, n: 0x10, d: 2024-01-01}"
    )
    result = validate(text)
    assert result.valid
    assert result.definition is not None
    document = result.document
    assert isinstance(document, dict)
    head = document["document"]
    assert isinstance(head, dict)
    assert head["metadata"] == {
        "on": "yes",
        "off": "no",
        "n": 16,
        "d": "2024-01-01",
    }


@pytest.mark.parametrize(
    ("after", "seconds"),
    [
        ("PT30S", 30),
        ("P1DT1H", 90000),
        ("P2W", 1209600),
        ("PT0.5S", 0.5),
        ("{milliseconds: 1500}", 1.5),
        ("{days: 1, seconds: 1}", 86401),
    ],
)
def test_timeouts_parse_to_seconds(after: str, seconds: float) -> None:
    text = DESIGN_EXAMPLE.replace("schedule:", f"timeout: {{after: {after}}}\nschedule:")
    assert parse(text).timeout_s == seconds


def test_examples_are_found() -> None:
    assert len(EXAMPLES) == 66
