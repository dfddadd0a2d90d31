"""The operation catalog: job types, parameter checks after resolution, input and output maps."""

from __future__ import annotations

import pytest

from workflowd.domain.json import Json
from workflowd.spec.operations import OPERATIONS, Operation

CMV = OPERATIONS["CreateMaterializedViewIfNotExists"]
REFRESH = OPERATIONS["RefreshMaterializedView"]
DML = OPERATIONS["ExecuteDml"]


def test_catalog() -> None:
    assert {name: op.job_type for name, op in OPERATIONS.items()} == {
        "CreateMaterializedViewIfNotExists": "materialize-view",
        "RefreshMaterializedView": "refresh-materialized-view",
        "ExecuteDml": "execute-dml",
    }


def test_to_job_input_is_snake_case() -> None:
    resolved = {
        "nql": "SELECT 1",
        "datasetName": "v",
        "computePoolId": "p",
        "executionCluster": "shared",
    }
    assert CMV.to_job_input(resolved) == {
        "nql": "SELECT 1",
        "dataset_name": "v",
        "compute_pool_id": "p",
        "execution_cluster": "shared",
    }
    assert REFRESH.to_job_input({"datasetId": 3}) == {"dataset_id": 3}


def test_expressions_are_checked_after_resolution() -> None:
    written = {"datasetId": "${ $context.id }"}
    assert REFRESH.check_params(written, "/do/0/t/with") == []
    problems = REFRESH.check_resolved({"datasetId": "abc"}, "/do/0/t/with")
    assert [d.pointer for d in problems] == ["/do/0/t/with/datasetId"]
    assert REFRESH.check_resolved({"datasetId": 12}, "/do/0/t/with") == []


@pytest.mark.parametrize(
    ("operation", "resolved", "pointer"),
    [
        (DML, {"nql": "SELECT 1"}, "/w/nql"),
        (DML, {"nql": "${ .x }"}, "/w/nql"),  # a resolved value is literal, whatever it looks like
        (CMV, {"nql": "SELECT 1"}, "/w"),
        (
            CMV,
            {"nql": "create materialized view v as select 1", "datasetName": "v"},
            "/w/datasetName",
        ),
        (REFRESH, {"datasetName": "bad name"}, "/w/datasetName"),
    ],
)
def test_check_resolved_refuses(
    operation: Operation, resolved: dict[str, Json], pointer: str
) -> None:
    problems = operation.check_resolved(resolved, "/w")
    assert pointer in [d.pointer for d in problems]


@pytest.mark.parametrize(
    "nql",
    ["insert into t values (1)", "  -- note\n/* c */ UPDATE t SET a = 1", "(DELETE FROM t)"],
)
def test_dml_statements_accepted(nql: str) -> None:
    assert DML.check_resolved({"nql": nql}, "/w") == []


@pytest.mark.parametrize(
    "nql",
    [
        "WITH x AS (SELECT 1 AS a) DELETE FROM company_data.t WHERE a IN (SELECT a FROM x)",
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3)\n"
        "insert into company_data.t select n from r",
        "WITH a AS (SELECT ')' AS p), b AS MATERIALIZED (SELECT 2 -- )\n) UPDATE t SET x = 1",
        "WITH a AS (SELECT $$ ) SELECT $$ AS p) /* ) SELECT */ (DELETE FROM t)",
        'WITH "select" AS (SELECT 1) INSERT INTO t SELECT * FROM "select"',
    ],
)
def test_dml_after_a_with_clause_is_accepted(nql: str) -> None:
    assert DML.check_resolved({"nql": nql}, "/w") == []


@pytest.mark.parametrize(
    ("nql", "found"),
    [
        ("WITH a AS (SELECT 1) SELECT * FROM a", "not WITH … SELECT (use Create"),
        ("with a as (select ') insert') select 1", "not WITH … SELECT"),
        ("WITH a AS (SELECT 1) CREATE TABLE t AS SELECT 1", "not WITH … CREATE"),
        ("WITH a AS (SELECT 1)", "not WITH … a statement without a recognisable keyword"),
        ("SELECT 1", "not SELECT (use Create"),
        ("DROP TABLE company_data.t", "not DROP"),
        ("install httpfs", "not INSTALL"),
        ("FORCE INSTALL httpfs", "not FORCE"),
        ("-- load it\nLOAD httpfs", "not LOAD"),
        ("/* attach */ ATTACH 'x.db'", "not ATTACH"),
        ("COPY company_data.t TO 'x.csv'", "not COPY"),
        ("SET memory_limit = '1GB'", "not SET"),
        ("PRAGMA database_list", "not PRAGMA"),
        ("'DELETE FROM t'", "not a statement without a recognisable keyword"),
    ],
)
def test_dml_refusals_name_what_was_found(nql: str, found: str) -> None:
    problems = DML.check_resolved({"nql": nql}, "/w")
    assert [d.pointer for d in problems] == ["/w/nql"]
    assert found in problems[0].message


def test_a_view_is_not_a_with_clause_before_dml() -> None:
    problems = CMV.check_resolved({"nql": "WITH a AS (SELECT 1) DELETE FROM t"}, "/w")
    assert [d.pointer for d in problems] == ["/w/nql"]
    assert "not WITH … DELETE" in problems[0].message


@pytest.mark.parametrize(
    "with_",
    [
        {"nql": "WITH a AS (SELECT 1) SELECT * FROM a", "datasetName": "v"},
        {"nql": 'CREATE OR REPLACE MATERIALIZED VIEW "v" AS SELECT 1'},
    ],
)
def test_cmv_forms_accepted(with_: dict[str, Json]) -> None:
    assert CMV.check_resolved(with_, "/w") == []


def test_cmv_output_from_result() -> None:
    result: dict[str, Json] = {
        "dataset_id": 5,
        "dataset_name": "v",
        "created": True,
        "snapshot_id": 9,
        "recalculation_id": "r1",
        "row_count": 100,
    }
    assert CMV.output_from_result(result) == {
        "datasetId": 5,
        "datasetName": "v",
        "created": True,
        "snapshotId": 9,
        "recalculationId": "r1",
        "rowStats": {"rowCount": 100},
    }


def test_missing_result_keys_become_null() -> None:
    assert REFRESH.output_from_result({"dataset_id": 5}) == {
        "datasetId": 5,
        "datasetName": None,
        "snapshotId": None,
        "recalculationId": None,
        "rowStats": None,
    }
    assert REFRESH.output_from_result({"row_stats": {"row_count": 3}})["rowStats"] == {
        "rowCount": 3
    }
    assert DML.output_from_result({"statement_type": "INSERT", "rows_affected": 2}) == {
        "datasetId": None,
        "datasetName": None,
        "statementType": "INSERT",
        "rowsAffected": 2,
    }


def test_camel_case_results_are_tolerated() -> None:
    assert DML.output_from_result({"datasetId": 1, "rowsAffected": 4})["rowsAffected"] == 4
