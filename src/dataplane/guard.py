"""The NQL reference rule: user statements read and write tables in `company_data` only.

Checked in two passes, both by DuckDB itself, before the statement runs:

1. DuckDB's tokenizer finds every function call (a name followed by `(`, so string literals,
   comments, quoting and case cannot hide one). Refused are the calls the bound plan cannot
   show: functions that read settings or the environment, which DuckDB evaluates while
   binding (`current_setting('temp_directory')` becomes a constant), and functions that run
   SQL given as a string (`query('…')`), whose text no check here could see.
2. `EXPLAIN (FORMAT JSON)` binds the statement against the company's catalog, so views, CTEs,
   subqueries, quoted and mixed-case names are all resolved. Its unoptimized logical plan is
   walked: every table scan must be of `<catalog>.company_data.<table>`, every table function
   must be on a short allowlist, and any other operator must be a known relational one. The
   optimized plan would not do: DuckDB folds `(SELECT max(x) FROM t)` into a constant from
   table statistics, so the scan of `t` disappears from it; and `DESCRIBE`/`SHOW` become
   constant chunks (`CHUNK_GET`) that only the unoptimized plan tells apart from `VALUES`.

Runs on the job's cursor, so it sees the catalog exactly as the statement will.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import duckdb

from dataplane.errors import JobFailure
from dataplane.nql import SCHEMA, statement_kind, tokenize, unquote

# `EXPLAIN` prints the unoptimized plan only with this setting, set when the database opens.
EXPLAIN_CONFIG = {"explain_output": "all"}
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree"}
)
DENIED_CALLS = frozenset(
    {
        # settings, the environment and the engine's own state
        "current_setting", "getenv", "getvariable", "current_database", "current_catalog",
        "current_schema", "current_schemas", "in_search_path", "version", "txid_current",
        "current_connection_id", "current_transaction_id", "current_query_id",
        "pg_postmaster_start_time", "pg_conf_load_time", "nextval", "currval", "write_log",
        # SQL given as a string, invisible to both passes
        "query", "query_table", "json_execute_serialized_sql",
    }
)  # fmt: skip
# Relational operators of DuckDB's logical plans that read nothing by themselves.
_OPERATORS = frozenset(
    {
        "PROJECTION", "FILTER", "AGGREGATE", "WINDOW", "UNNEST", "LIMIT", "LIMIT_PERCENT",
        "ORDER_BY", "TOP_N", "SAMPLE", "DISTINCT", "PIVOT", "JOIN", "COMPARISON_JOIN",
        "ANY_JOIN", "DELIM_JOIN", "DEPENDENT_JOIN", "CROSS_PRODUCT", "POSITIONAL_JOIN",
        "ASOF_JOIN", "UNION", "EXCEPT", "INTERSECT", "REC_CTE", "CTE", "CTE_SCAN",
        "DELIM_GET", "EXPRESSION_GET", "DUMMY_SCAN", "EMPTY_RESULT", "INSERT", "UPDATE",
        "DELETE",
    }
)  # fmt: skip
_RULE = f"NQL may read and write only datasets in {SCHEMA}"


def check(cur: duckdb.DuckDBPyConnection, sql: str, database: str) -> None:
    """Fails the job unless `sql` keeps to the reference rule (see the module docstring);
    `database` is the name of the cursor's catalog (`current_database()`)."""
    statement_kind(sql)  # exactly one statement: EXPLAIN would vouch for the first only
    _check_calls(sql)
    for node in _logical_plan(cur, sql):
        _check_node(node, database)


def _check_calls(sql: str) -> None:
    tokens = tokenize(sql)
    for token, following in itertools.pairwise(tokens):
        name = unquote(token).lower()
        if token.is_name and following.text == "(" and name in DENIED_CALLS:
            raise JobFailure(
                f"{name}() is not allowed in NQL: it reads the data plane's settings or state,"
                " or runs SQL from a string"
            )


def _logical_plan(cur: duckdb.DuckDBPyConnection, sql: str) -> Iterator[dict[str, Any]]:
    plans = dict(cur.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall())
    stack: list[dict[str, Any]] = list(json.loads(plans["logical_plan"]))
    while stack:
        node = stack.pop()
        stack.extend(node.get("children", []))
        yield node


def _qualified_name(text: str) -> list[str]:
    """`catalog.schema.table` as the plan prints it (quoted where needed) → its three names."""
    tokens = tokenize(text)
    names, dots = tokens[::2], tokens[1::2]
    if not all(t.is_name for t in names) or any(t.text != "." for t in dots):
        return [text]
    return [unquote(t) for t in names]


def _check_node(node: dict[str, Any], catalog: str) -> None:
    name = str(node.get("name", ""))
    table = (node.get("extra_info") or {}).get("Table")
    if table is not None:
        parts = _qualified_name(str(table))
        if parts[:2] != [catalog, SCHEMA] or len(parts) != 3:
            shown = ".".join(parts[1:]) if len(parts) == 3 else table
            raise JobFailure(f"{_RULE}; this statement reads the table {shown}")
    elif name == "CHUNK_GET":
        raise JobFailure(
            f"{_RULE}; DESCRIBE and SHOW read the database catalog"
            " (GET /datasets/{name} describes a dataset)"
        )
    elif name not in _OPERATORS and name.lower() not in ALLOWED_TABLE_FUNCTIONS:
        allowed = ", ".join(f"{f}()" for f in sorted(ALLOWED_TABLE_FUNCTIONS))
        raise JobFailure(
            f"{_RULE}; this statement calls the system table function {name.lower()}()"
            f" (directly, or through a system view such as information_schema.tables);"
            f" the table functions allowed are {allowed}"
        )
