"""`validate()` never raises, whatever the text: random text and mutated valid specs."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflowd.spec import validate

from .official_schema import assert_valid_under_official_schema, load_yaml_12
from .test_valid_specs import ACCEPTED

SEEDS = [load_yaml_12(text) for text in ACCEPTED.values()]
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_never_raises(text: str) -> None:
    result = validate(text)
    assert all("internal error" not in d.message for d in result.diagnostics), result.diagnostics
    assert result.valid == (result.definition is not None)
    if result.valid:  # whatever we accept, the official schema accepts too
        assert_valid_under_official_schema(result.document)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += paths(item, (*prefix, index))
    return out


def mutate(document: Any, path: tuple[Any, ...], action: str, new: Any) -> Any:
    document = json.loads(json.dumps(document))
    if not path:
        return new
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    if action == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return document


@FUZZ
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    assert_never_raises(text)


@FUZZ
@given(st.data())
def test_mutated_valid_specs(data: st.DataObject) -> None:
    document = data.draw(st.sampled_from(SEEDS))
    path = data.draw(st.sampled_from(paths(document)))
    action = data.draw(st.sampled_from(["drop", "replace"]))
    mutated = mutate(document, path, action, data.draw(JSON_VALUES))
    assert_never_raises(json.dumps(mutated))


@FUZZ
@given(st.data())
def test_spliced_yaml_text(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(list(ACCEPTED.values())))
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    assert_never_raises(text[:start] + data.draw(st.text(max_size=20)) + text[end:])
