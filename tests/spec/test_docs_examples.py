"""Every YAML example of docs/workflow-language.md validates, or is refused when marked so."""

from __future__ import annotations

import re

import pytest

from workflowd.spec import validate

from .official_schema import assert_valid_under_official_schema, repo_root

DOC = repo_root() / "docs" / "workflow-language.md"
FENCE = re.compile(r"(<!-- refused -->\n)?```yaml\n(.*?)```", re.DOTALL)
EXAMPLES = [(bool(m.group(1)), m.group(2)) for m in FENCE.finditer(DOC.read_text("utf-8"))]


def test_the_doc_has_examples_of_both_kinds() -> None:
    assert {refused for refused, _ in EXAMPLES} == {True, False}


@pytest.mark.parametrize(
    ("refused", "text"), EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))]
)
def test_doc_example(refused: bool, text: str) -> None:
    result = validate(text)
    if refused:
        assert not result.valid
        assert all(d.line > 0 for d in result.diagnostics)
        return
    assert result.valid, [d.render() for d in result.diagnostics]
    assert_valid_under_official_schema(result.document)
