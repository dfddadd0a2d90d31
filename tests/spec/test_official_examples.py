"""Every official DSL example is accepted, or refused naming what is not supported."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflowd.spec import validate

from .official_schema import EXAMPLES

NAMES_A_CONSTRUCT = ("not supported", "unknown operation")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_official_example_is_accepted_or_refused_by_name(path: Path) -> None:
    result = validate(path.read_text(encoding="utf-8"))
    if result.valid:
        return
    assert result.diagnostics
    for diagnostic in result.diagnostics:
        assert any(words in diagnostic.message for words in NAMES_A_CONSTRUCT), diagnostic.render()
        assert diagnostic.pointer.startswith("/"), diagnostic.render()
        assert diagnostic.line > 0, diagnostic.render()
