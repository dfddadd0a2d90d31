"""The shipped examples are valid, both for workflowd and under the official DSL schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.spec.official_schema import assert_valid_under_official_schema
from workflowd.spec import validate

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_official(path: Path) -> None:
    text = path.read_text()
    result = validate(text)
    assert result.valid, [d.render(str(path)) for d in result.diagnostics]
    assert_valid_under_official_schema(text)
