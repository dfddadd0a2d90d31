"""`input.schema`: references resolve only inside the document, at creation and when a run input
is checked; nothing is ever fetched; patterns are checked at creation and bounded at run time."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from workflowd.domain.json import Json
from workflowd.spec import (
    EvaluationLimitError,
    Evaluator,
    SchemaResult,
    SchemaUnusableError,
    validate,
)

HEAD = "document: {dsl: '1.0.0', namespace: ns, name: wf, version: '1.0.0'}\n"
CALL = "do:\n  - t:\n      call: RefreshMaterializedView\n      with: {datasetName: v}\n"
WHERE = "/input/schema/document"


def spec(schema: Json) -> str:
    return HEAD + f"input:\n  schema:\n    document: {json.dumps(schema)}\n" + CALL


class Listener:
    """A local TCP port that counts the connections made to it: a connection is queued for
    `accept` as soon as the client's `connect` returns, so counting needs no waiting."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/schema.json"

    def connections(self) -> int:
        count = 0
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.socket.close()


@pytest.fixture
async def evaluator() -> AsyncIterator[Evaluator]:
    async with Evaluator(timeout_s=1.0) as ev:
        yield ev


def refusals(schema: Json) -> list[tuple[str, str]]:
    result = validate(spec(schema))
    assert all("internal error" not in d.message for d in result.diagnostics)
    return [(d.pointer, d.message) for d in result.diagnostics]


@pytest.mark.parametrize(
    ("ref", "keyword"),
    [
        ("http://169.254.169.254/latest/meta-data", "$ref"),
        ("file:///etc/passwd", "$ref"),
        ("other.json", "$ref"),
        ("other.json#/a", "$ref"),
        ("#/$defs/missing", "$ref"),
        ("#missing-anchor", "$ref"),
        ("https://json-schema.org/draft/2020-12/schema", "$ref"),
        ("http://[broken", "$ref"),
        ("http://169.254.169.254/", "$dynamicRef"),
    ],
)
def test_a_reference_outside_the_document_is_refused_where_it_is(ref: str, keyword: str) -> None:
    schema = {"$defs": {"x": {"$anchor": "x"}}, "properties": {"a": {keyword: ref}}}
    found = refusals(schema)
    assert [pointer for pointer, _ in found] == [f"{WHERE}/properties/a/{keyword}"]
    assert "does not resolve inside this schema document" in found[0][1]


def test_every_object_is_checked_since_a_ref_can_point_anywhere() -> None:
    schema = {"$ref": "#/const", "const": {"$ref": "http://127.0.0.1/x"}}
    assert [p for p, _ in refusals(schema)] == [f"{WHERE}/const/$ref"]


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"$defs": {"x": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/x"}}},
        {"$defs": {"x": {"$anchor": "name"}}, "properties": {"a": {"$ref": "#name"}}},
        {"$defs": {"x": {"$dynamicAnchor": "d"}}, "items": {"$dynamicRef": "#d"}},
        {"properties": {"a/b%": {"type": "string"}, "c": {"$ref": "#/properties/a~1b%25"}}},
        {
            "$id": "https://example.com/root",
            "$defs": {"sub": {"$id": "sub", "$defs": {"n": {}}, "$ref": "#/$defs/n"}},
            "properties": {"a": {"$ref": "sub"}, "b": {"$ref": "https://example.com/root#/$defs"}},
        },
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
        True,
    ],
)
def test_references_inside_the_document_are_accepted(schema: Json) -> None:
    assert refusals(schema) == []


@pytest.mark.parametrize(
    "uri", ["http://json-schema.org/draft-07/schema#", "http://127.0.0.1/meta", "x"]
)
def test_an_unknown_metaschema_is_refused(uri: str) -> None:
    found = refusals({"$schema": uri, "type": "object"})
    assert [p for p, _ in found] == [f"{WHERE}/$schema"]
    assert "2020-12" in found[0][1]


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        ({"pattern": "("}, f"{WHERE}/pattern"),
        ({"pattern": "a{99999999999999999999}"}, f"{WHERE}/pattern"),
        ({"pattern": "(" * 3000 + ")" * 3000}, f"{WHERE}/pattern"),
        ({"patternProperties": {"[z-a]": {}}}, f"{WHERE}/patternProperties/[z-a]"),
        (
            {"properties": {"a": {"patternProperties": {"b{99999999999999999999}": {}}}}},
            f"{WHERE}/properties/a/patternProperties/b{{99999999999999999999}}",
        ),
    ],
)
def test_a_pattern_python_cannot_compile_is_a_diagnostic(schema: Json, pointer: str) -> None:
    found = refusals(schema)
    assert [p for p, _ in found] == [pointer]
    assert "not a regular expression" in found[0][1]


def test_validation_fetches_nothing(listener: Listener) -> None:
    result = validate(spec({"properties": {"a": {"$ref": listener.url}}}))
    assert not result.valid
    assert listener.connections() == 0


@pytest.mark.parametrize("where", ["http", "file"])
async def test_a_stored_remote_ref_is_never_fetched_at_run_time(
    evaluator: Evaluator, listener: Listener, where: str
) -> None:
    ref = listener.url if where == "http" else "file:///etc/hostname"
    with pytest.raises(SchemaUnusableError, match="Unresolvable"):
        await evaluator.check_schema({"properties": {"a": {"$ref": ref}}}, {"a": 1})
    assert listener.connections() == 0


@pytest.mark.parametrize(
    ("schema", "instance", "expected"),
    [
        ({"type": "object"}, {"a": 1}, SchemaResult()),
        (
            {"properties": {"a/b": {"type": "integer"}}},
            {"a/b": "x"},
            SchemaResult("'x' is not of type 'integer'", "/a~1b"),
        ),
        (
            {"$defs": {"n": {"type": "integer"}}, "items": {"$ref": "#/$defs/n"}},
            [1, "two"],
            SchemaResult("'two' is not of type 'integer'", "/1"),
        ),
        (False, 1, SchemaResult("False schema does not allow 1", "")),
    ],
)
async def test_check_schema_reports_the_best_match(
    evaluator: Evaluator, schema: Json, instance: Json, expected: SchemaResult
) -> None:
    assert await evaluator.check_schema(schema, instance) == expected


async def test_a_catastrophic_pattern_is_bounded_and_other_work_goes_on(
    evaluator: Evaluator,
) -> None:
    schema: dict[str, Any] = {"type": "string", "pattern": "^(a+)+$"}
    assert await evaluator.check_schema(schema, "aaaa") == SchemaResult()  # a worker is ready
    slow = asyncio.ensure_future(evaluator.check_schema(schema, "a" * 39 + "!"))
    assert await evaluator.evaluate_field(". + 1", 1, {}) == 2  # the other worker answers
    assert not slow.done()
    with pytest.raises(EvaluationLimitError, match=r"input\.schema took longer than 1 s"):
        await slow
    assert await evaluator.check_schema(schema, "aaa") == SchemaResult()  # a fresh worker


async def test_a_schema_that_refers_to_itself_without_end_is_unusable(
    evaluator: Evaluator,
) -> None:
    with pytest.raises(SchemaUnusableError, match="RecursionError"):
        await evaluator.check_schema({"$ref": "#"}, 1)
    assert await evaluator.check_schema({"type": "integer"}, 1) == SchemaResult()
