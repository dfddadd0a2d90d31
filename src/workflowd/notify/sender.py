"""One POST of one delivery to its destination, signed, over verified TLS.

Each request carries

    X-Workflowd-Event: run_failed
    X-Workflowd-Delivery: <delivery id, the same on every attempt: receivers deduplicate by it>
    X-Workflowd-Timestamp: <unix seconds of this attempt>
    X-Workflowd-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>

Redirects are not followed (they could lead past the allow-list); any answer but a 2xx, and any
transport fault, is an attempt that failed. Every aiohttp error stays in this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl

import aiohttp

from workflowd import __version__
from workflowd.domain.json import JsonObject
from workflowd.domain.notify import Destination, PayloadFormat, Sent, slack_text

EVENT_HEADER = "X-Workflowd-Event"
DELIVERY_HEADER = "X-Workflowd-Delivery"
TIMESTAMP_HEADER = "X-Workflowd-Timestamp"
SIGNATURE_HEADER = "X-Workflowd-Signature"
_MAX_ERROR_BODY = 200


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def body_of(destination: Destination, payload: JsonObject) -> bytes:
    shown = slack_text(payload) if destination.format == PayloadFormat.SLACK else payload
    return json.dumps(shown, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSender:
    """`start()`, then `send()` from any number of tasks, then `aclose()` (idempotent)."""

    def __init__(self, ca_file: str = "") -> None:
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        if self._session is not None:
            raise RuntimeError("WebhookSender.start() called twice")
        trust = ssl.create_default_context()
        if self._ca_file:
            trust.load_verify_locations(cafile=self._ca_file)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=trust), headers={"User-Agent": _AGENT}
        )

    async def send(
        self, destination: Destination, delivery_id: str, payload: JsonObject, timestamp: int
    ) -> Sent:
        if self._session is None or self._closed:
            return Sent(False, error="workflowd is shutting down")
        body = body_of(destination, payload)
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: str(payload.get("event", "")),
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(destination.secret, timestamp, body),
        }
        try:
            async with self._session.post(
                destination.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=destination.timeout_s),
            ) as response:
                if 200 <= response.status < 300:
                    return Sent(True, response.status)
                said = (await response.content.read(_MAX_ERROR_BODY)).decode("utf-8", "replace")
                answer = f"HTTP {response.status}" + (f": {said.strip()}" if said.strip() else "")
                return Sent(False, response.status, answer)
        except TimeoutError:
            return Sent(False, error=f"no answer within {destination.timeout_s:g} s")
        except aiohttp.ClientSSLError as exc:
            return Sent(False, error=f"TLS: {exc.os_error if exc.os_error else exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return Sent(False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            await self._session.close()


_AGENT = f"workflowd/{__version__} (webhooks)"
