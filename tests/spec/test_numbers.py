"""Numbers a spec carries stay within what JSON and jq carry exactly; durations stay finite."""

from __future__ import annotations

import math

import pytest

from workflowd.domain.definition import CallBody
from workflowd.domain.json import Json
from workflowd.spec import parse, validate
from workflowd.spec.fields import check_timeout, duration_seconds

HEAD = "document: {dsl: '1.0.0', namespace: ns, name: wf, version: '1.0.0'}\n"


def with_dataset_id(literal: str) -> str:
    return (
        HEAD
        + f"do:\n  - t:\n      call: RefreshMaterializedView\n      with: {{datasetId: {literal}}}\n"
    )


@pytest.mark.parametrize(
    ("literal", "value"),
    [("9007199254740991", 2**53 - 1), ("0x1FFFFFFFFFFFFF", 2**53 - 1), ("0o7", 7), ("007", 7)],
)
def test_integers_up_to_2_53_minus_1_are_kept_exactly(literal: str, value: int) -> None:
    body = parse(with_dataset_id(literal)).do.tasks[0].body
    assert isinstance(body, CallBody)
    assert body.with_ == {"datasetId": value}


@pytest.mark.parametrize(
    "literal", ["9007199254740992", "0x20000000000000", "0o" + "7" * 5000, "0" * 5000 + "1" * 17]
)
def test_larger_integers_are_refused_without_converting_them(literal: str) -> None:
    result = validate(with_dataset_id(literal))
    messages = [d.message for d in result.diagnostics if d.pointer == "/do/0/t/with/datasetId"]
    assert any("2**53 - 1" in m for m in messages), result.diagnostics


def test_a_long_non_string_key_is_reported_not_converted() -> None:
    result = validate(HEAD + "do: []\nmetadata: {? " + "9" * 5000 + ": x}\n")
    found = [d.message for d in result.diagnostics if d.pointer == "/metadata"]
    assert any("keys must be strings, not 99999" in m and "5000 characters" in m for m in found)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ({"days": 10**400}, None),
        ({"days": -1}, None),
        ({"days": 366}, 366 * 86400.0),
        ("P366D", 366 * 86400.0),
        ("PT" + "9" * 400 + "S", math.inf),
    ],
)
def test_duration_seconds_never_raises(duration: Json, seconds: float | None) -> None:
    assert duration_seconds(duration) == seconds


@pytest.mark.parametrize(
    ("after", "accepted"),
    [("P366D", True), ({"days": 366}, True), ("PT8784H1S", False), ({"days": 2**53 - 1}, False)],
)
def test_timeouts_are_at_most_366_days(after: Json, accepted: bool) -> None:
    seconds, problems = check_timeout({"after": after}, "/timeout")
    assert (problems == []) is accepted
    assert accepted or "at most 366 days" in problems[0].message
    assert seconds is not None
