"""Reading NQL: the CMV form, DML targets, numeric-id references."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.errors import JobFailure
from dataplane.nql import dml_target, parse_materialized_view, resolve_numeric_ids


def test_cmv_with_every_kept_option() -> None:
    spec = parse_materialized_view(
        'create or replace materialized view company_data."daily"\n'
        "  DISPLAY_NAME='Daily ''totals''' DESCRIPTION = 'd' EXPIRE='P1D'\n"
        "  TAGS=('_nio_interactive', 'x') WRITE_MODE='APPEND' EXTENDED_STATS='none'\n"
        "  PARTITIONED_BY day DAY, region MONTH\n"
        "AS -- the query\n  SELECT 1 AS x"
    )
    assert spec is not None
    assert (spec.name, spec.replace) == ("daily", True)
    assert spec.select == "-- the query\n  SELECT 1 AS x"
    assert spec.options == {
        "display_name": "Daily 'totals'",
        "description": "d",
        "expire": "P1D",
        "tags": ["_nio_interactive", "x"],
        "write_mode": "append",
        "extended_stats": "none",
        "partitioned_by": "day DAY region MONTH",
    }


@pytest.mark.parametrize(
    ("nql", "message"),
    [
        ("CREATE MATERIALIZED VIEW v WRITE_MODE='merge' AS SELECT 1", "WRITE_MODE must be"),
        ("CREATE MATERIALIZED VIEW v COLOUR='red' AS SELECT 1", "unknown materialized view option"),
        ("CREATE MATERIALIZED VIEW v SELECT 1", "needs AS"),
        ("CREATE MATERIALIZED VIEW other.v AS SELECT 1", "lives in company_data"),
        ('CREATE MATERIALIZED VIEW "a-b" AS SELECT 1', "must match"),
        ("CREATE MATERIALIZED VIEW v AS DELETE FROM company_data.t", "not DELETE"),
    ],
)
def test_cmv_refusals(nql: str, message: str) -> None:
    with pytest.raises(JobFailure, match=message):
        parse_materialized_view(nql)


def test_other_text_is_not_a_cmv() -> None:
    assert parse_materialized_view("SELECT 1") is None
    assert parse_materialized_view("CREATE VIEW v AS SELECT 1") is None


@pytest.mark.parametrize(
    ("nql", "expected"),
    [
        ("INSERT INTO company_data.t VALUES (1)", ("INSERT", "t")),
        ('insert or replace into Company_Data."T" (a) select 1', ("INSERT", "T")),
        ("UPDATE company_data.t SET a = (SELECT 1) WHERE b IN (SELECT 2)", ("UPDATE", "t")),
        ("WITH x AS (SELECT 1 AS a) DELETE FROM company_data.t USING x", ("DELETE", "t")),
        ("WITH x AS (SELECT 1 AS a) INSERT INTO company_data.t SELECT a FROM x", ("INSERT", "t")),
    ],
)
def test_dml_targets(nql: str, expected: tuple[str, str]) -> None:
    assert dml_target(nql) == expected


@pytest.mark.parametrize(
    "nql",
    ["INSERT INTO t VALUES (1)", "DELETE FROM main.t", "UPDATE memory.company_data.t SET a=1"],
)
def test_dml_outside_company_data_is_refused(nql: str) -> None:
    with pytest.raises(JobFailure, match=r"company_data\.<name>"):
        dml_target(nql)


def test_numeric_ids_are_rewritten_outside_literals_and_comments() -> None:
    names = {7: "events", 12: 'we"ird'}
    sql = (
        'SELECT \'company_data."7"\' AS s, e.a FROM company_data."7" e'
        ' JOIN company_data."12" w ON true -- company_data."7"\n'
        ' WHERE e."7" = 1'
    )
    assert resolve_numeric_ids(sql, names.__getitem__) == (
        'SELECT \'company_data."7"\' AS s, e.a FROM company_data."events" e'
        ' JOIN company_data."we""ird" w ON true -- company_data."7"\n'
        ' WHERE e."7" = 1'
    )


@given(st.text(alphabet="abc ';-\"\n0123456789.", max_size=40))
def test_references_inside_string_literals_are_left_alone(text: str) -> None:
    literal = "'" + (text + ' company_data."5"').replace("'", "''") + "'"
    sql = f"SELECT {literal} AS s"
    assert resolve_numeric_ids(sql, lambda i: "never") == sql
