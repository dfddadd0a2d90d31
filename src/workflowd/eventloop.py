"""The daemon's event loop: uvloop's, which runs the same asyncio code (grpc.aio, aiohttp,
aiosqlite) with less of the loop's own work per callback, task step and socket event."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
