"""A real webhook receiver on loopback (aiohttp), as an operator's service would be: it checks
each delivery's signature with its own HMAC code, deduplicates by delivery id, and can be down
(its port closed), or hang (answer nothing until told)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

SECRET = "a-webhook-secret-of-some-length"


@dataclass(frozen=True)
class Received:
    delivery_id: str
    event: str
    body: dict[str, Any]
    signed: bool


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does: HMAC-SHA256 of "<timestamp>.<body>", compared in constant time."""
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(f"sha256={expected.hexdigest()}", header)


class Receiver:
    def __init__(self, secret: str = SECRET, tls: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.tls = tls
        self.received: list[Received] = []
        self.hang = False
        # (status, body) to answer with instead of a 200.
        self.refuse: tuple[int, str] | None = None
        self.release = asyncio.Event()
        self.hanging = 0
        self.arrived = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    async def up(self) -> None:
        """Serve (again on the same port, once it had one)."""
        self.release, self.arrived = asyncio.Event(), asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def down(self) -> None:
        """Stop serving: connections to the port are refused."""
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        signed = verify(
            self.secret,
            request.headers.get("X-Workflowd-Timestamp", ""),
            body,
            request.headers.get("X-Workflowd-Signature", ""),
        )
        self.received.append(
            Received(
                request.headers.get("X-Workflowd-Delivery", ""),
                request.headers.get("X-Workflowd-Event", ""),
                json.loads(body),
                signed,
            )
        )
        self.arrived.set()
        if self.hang:
            self.hanging += 1
            await self.release.wait()
        if self.refuse is not None:
            return web.Response(status=self.refuse[0], text=self.refuse[1])
        return web.json_response({"ok": True})

    def unique(self) -> dict[str, Received]:
        """What a deduplicating receiver keeps: one notice per delivery id."""
        return {r.delivery_id: r for r in self.received}

    def counts(self) -> Counter[str]:
        return Counter(r.delivery_id for r in self.received)


def write_config(
    path: Path,
    url: str,
    events: list[str],
    *,
    allow: list[str] | None = None,
    workflows: list[str] | None = None,
    extra: str = "",
    destination: str = "",
) -> Path:
    """A settings file with one destination and a quick retry backoff."""
    allowed = allow if allow is not None else [url.rsplit("/", 1)[0] + "/"]
    lines = [
        "[webhooks]",
        f"allow = {json.dumps(allowed)}",
        "retry_initial_s = 0.05",
        "retry_max_s = 0.2",
        'page_base_url = "https://workflowd.example.com/"',
        extra,
        "[[webhooks.destinations]]",
        'name = "ops"',
        f'url = "{url}"',
        f'secret = "{SECRET}"',
        f"events = {json.dumps(events)}",
        f"workflows = {json.dumps(workflows or ['*'])}",
        destination,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


COMPLETES = """\
document: {{dsl: '1.0.0', namespace: etl, name: {name}, version: '1.0.0'}}
do:
  - hello: {{set: {{ok: true}}}}
"""
FAILS = """\
document: {{dsl: '1.0.0', namespace: etl, name: {name}, version: '1.0.0'}}
do:
  - boom:
      raise:
        error: {{type: https://example.com/errors/load, status: 500, title: the nightly load broke}}
"""
RETRIES = """\
document: {{dsl: '1.0.0', namespace: etl, name: {name}, version: '1.0.0'}}
do:
  - guard:
      try:
        - boom:
            raise:
              error: {{type: https://example.com/errors/flaky, status: 503, title: flaky}}
      catch:
        retry: {{delay: {{milliseconds: 10}}, limit: {{attempt: {{count: 1}}}}}}
"""
WAITS = """\
document: {{dsl: '1.0.0', namespace: etl, name: {name}, version: '1.0.0'}}
do:
  - pause: {{wait: PT1H}}
"""
