"""The official Serverless Workflow 1.0.3 schema and examples, read from the shared reference
directory (never copied into the project). Other suites import `assert_valid_under_official_schema`
to check that every spec they use is valid DSL."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from workflowd.spec.yamlload import load


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError(f"no pyproject.toml above {here}")


REFERENCE = repo_root() / ".." / "shared" / "reference" / "serverless-workflow-1.0.3"
EXAMPLES = sorted((REFERENCE / "examples").glob("*.yaml"))


def load_yaml_12(text: str) -> Any:
    """YAML with 1.2 booleans (PyYAML's safe_load would turn the key `on` into True)."""
    loaded = load(text, max_nodes=10_000_000)
    assert not loaded.diagnostics, loaded.diagnostics
    return loaded.document


@functools.cache
def official_validator() -> Draft202012Validator:
    schema = load_yaml_12((REFERENCE / "workflow.yaml").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def official_errors(document: Any) -> list[str]:
    errors = official_validator().iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def assert_valid_under_official_schema(document: Any) -> None:
    """`document` is a loaded spec (a dict), or its YAML/JSON text."""
    if isinstance(document, str):
        document = load_yaml_12(document)
    errors = official_errors(document)
    assert not errors, "not valid under the official DSL 1.0.3 schema:\n" + "\n".join(errors)
