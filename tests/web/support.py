"""The web page as a plain HTTP client sees it: cookies kept, CSRF token read from the page,
Server-Sent Events parsed from the stream."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.conftest import Daemon
from tests.engine.support import workflow

QUICK = workflow(
    "quick",
    "  - build:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 1 AS one, datasetName: web_view}\n",
)
BROKEN = workflow(
    "broken",
    "  - prepare:\n      call: CreateMaterializedViewIfNotExists\n"
    "      with: {nql: SELECT 2 AS two, datasetName: broken_view}\n"
    "  - boom:\n"
    "      raise:\n"
    "        error: {type: https://example.com/errors/boom, status: 500, title: it broke}\n"
    "  - never: {set: {reached: true}}\n",
)
PAUSED = workflow("paused", "  - pause: {wait: PT1H}\n")
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"|X-CSRF-Token&quot;: &quot;([0-9a-f]+)&quot;')


@dataclass
class Message:
    event: str = "message"
    data: str = ""
    id: int | None = None


@dataclass
class Stream:
    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def base_url(daemon: Daemon) -> str:
    assert daemon.app.http is not None
    return f"http://127.0.0.1:{daemon.app.http.port}"


class Visitor:
    """One browser's worth of cookies."""

    def __init__(self, daemon: Daemon) -> None:
        self.base = base_url(daemon)
        self.session = aiohttp.ClientSession(self.base, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def aclose(self) -> None:
        await self.session.close()

    async def get(self, path: str, **params: Any) -> tuple[int, str]:
        async with self.session.get(path, params=params, allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def csrf(self, path: str = "/runs") -> str:
        status, text = await self.get(path)
        assert status == 200, text
        found = _CSRF.search(text)
        assert found is not None, text
        return found.group(1) or found.group(2)

    async def post(
        self, path: str, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        async with self.session.post(
            path, data=data, headers=headers or {}, allow_redirects=False
        ) as resp:
            return resp.status, await resp.text(), resp.headers.get("Location", "")

    async def sign_in(self, token: str) -> int:
        status, _, _ = await self.post("/login", {"token": token})
        return status

    async def stream(
        self,
        path: str,
        until: Callable[[Stream], bool],
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> Stream:
        """Read the event stream at `path` until `until` holds (or it ends)."""
        got = Stream()
        current = Message()
        async with (
            asyncio.timeout(timeout_s),
            self.session.get(path, headers=headers or {}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    got.comments.append(line[1:].strip())
                elif line.startswith("id: "):
                    current.id = int(line[4:])
                elif line.startswith("event: "):
                    current.event = line[7:]
                elif line.startswith("data: "):
                    current.data += ("\n" if current.data else "") + line[6:]
                elif not line and (current.data or current.id is not None):
                    got.messages.append(current)
                    current = Message()
                if not line and until(got):
                    return got
        return got


def text_of(page: str) -> str:
    """The page's text, tags removed and spaces collapsed (what a reader sees)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
