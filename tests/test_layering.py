"""docs/architecture.md ("Layers"): layers import one way. A wrong-way import fails here with the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Which of our own packages each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    # The scheduler's time maths is pure: the language validates crons with it, the engine
    # computes fire instants with it; the scheduler's loop reaches the engine only through
    # the interface the composition root hands it.
    "spec": {"domain", "scheduler"},
    "store": {"domain"},
    "jobs": {"domain"},
    # The webhooks' sender and settings: an outbound HTTP adapter like `jobs/`, for the
    # operator's destinations instead of the jobs API.
    "notify": {"domain"},
    "scheduler": {"domain"},
    "engine": {"domain", "spec", "scheduler"},
    "api": {"domain", "engine", "v1"},
    # The web page calls the engine as the gRPC servicer does; it reaches no store and no gRPC.
    "web": {"domain", "engine"},
    # The Python client reaches gRPC through api/'s transport, and shows no protobuf.
    "client": {"api", "v1"},
    "v1": set(),
}
# Third-party packages only one layer may touch.
OWNED = {
    "grpc": {"api", "v1"},
    "grpc_status": {"api"},
    "grpc_health": {"api"},
    "grpc_reflection": {"api"},
    "sqlite3": {"store"},
    "aiosqlite": {"store"},
    "psycopg": {"store"},
    "psycopg_pool": {"store"},
    "duckdb": set(),
}


def imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def layer_of(path: Path) -> str | None:
    parts = path.relative_to(SRC / "workflowd").parts
    return parts[0] if len(parts) > 1 else None


def workflowd_modules() -> list[Path]:
    return sorted(p for p in (SRC / "workflowd").rglob("*.py") if "v1" not in p.parts)


def violations() -> list[str]:
    return [v for path in workflowd_modules() for v in file_violations(path, layer_of(path))]


def file_violations(path: Path, layer: str | None) -> list[str]:
    found = []
    for name, line in imports(path):
        top, _, rest = name.partition(".")
        where = f"{path}:{line}: imports {name}"
        if top == "dataplane" and path.name != "app.py":
            found.append(f"{where} (only app.py may start the local data plane)")
        if top in OWNED and layer not in OWNED[top]:
            found.append(f"{where} (only {sorted(OWNED[top])} may)")
        if (
            top == "aiohttp"
            and layer not in ("jobs", "notify")
            and name != "aiohttp.web"
            and layer is not None
        ):
            found.append(f"{where} (only jobs/ and notify/ import aiohttp's client)")
        if top != "workflowd" or layer is None or layer not in ALLOWED:
            continue
        target = rest.partition(".")[0]
        if target and target != layer and target not in ALLOWED[layer]:
            found.append(f"{where} ({layer}/ may import {sorted(ALLOWED[layer])})")
    return found


def test_layers_import_one_way() -> None:
    assert violations() == []


def test_dataplane_never_imports_workflowd() -> None:
    bad = [
        f"{path.relative_to(SRC)}:{line}: imports {name}"
        for path in sorted((SRC / "dataplane").rglob("*.py"))
        for name, line in imports(path)
        if name.split(".")[0] == "workflowd"
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("domain", "from workflowd.store import SqliteStore\n", "domain/ may import"),
        ("engine", "import grpc\n", "only ['api', 'v1'] may"),
        ("store", "from workflowd.engine import runs\n", "store/ may import"),
        ("engine", "from workflowd.jobs import JobsClient\n", "engine/ may import"),
        ("client", "import grpc\n", "only ['api', 'v1'] may"),
        ("client", "from workflowd.engine import runs\n", "client/ may import"),
        ("web", "import grpc\n", "only ['api', 'v1'] may"),
        ("web", "from workflowd.store import SqliteStore\n", "web/ may import"),
        ("web", "from workflowd.api.auth import Authenticator\n", "web/ may import"),
    ],
)
def test_the_check_catches_a_wrong_way_import(
    layer: str, source: str, expected: str, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert any(expected in v for v in file_violations(probe, layer))
