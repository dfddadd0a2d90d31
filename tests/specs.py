"""Workflow specifications used across the tests, built as text the way users write them."""

from __future__ import annotations


def spec(
    name: str = "daily-summary",
    version: str = "1.0.0",
    namespace: str = "analytics",
    tasks: str | None = None,
    extra: str = "",
) -> str:
    body = tasks or (
        "  - build:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with:\n"
        "        nql: SELECT 1 AS one\n"
        f"        datasetName: {name.replace('-', '_')}_view\n"
    )
    return (
        "document:\n"
        "  dsl: '1.0.0'\n"
        f"  namespace: {namespace}\n"
        f"  name: {name}\n"
        f"  version: '{version}'\n"
        f"{extra}"
        "do:\n"
        f"{body}"
    )
