"""Fixtures for the data plane: a real server on a loopback port, real DuckDB files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dataplane.app import DataPlane
from tests.dataplane.dp_support import Client, PlaneFactory, Running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def start_plane(
    tmp_path: Path, session: aiohttp.ClientSession
) -> AsyncIterator[PlaneFactory]:
    planes: list[DataPlane] = []

    async def start(
        data_dir: Path | None = None, token: str | None = None, **options: Any
    ) -> Running:
        directory = data_dir or tmp_path / "data"
        plane = DataPlane(directory, **options)
        planes.append(plane)
        port = await plane.start("127.0.0.1", 0)
        return Running(plane, Client(f"http://127.0.0.1:{port}", session, token), directory)

    yield start
    for plane in planes:
        await plane.aclose()


@pytest.fixture
async def dp(start_plane: PlaneFactory) -> Running:
    return await start_plane()
