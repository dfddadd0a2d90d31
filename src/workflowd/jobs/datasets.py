"""A small client for the local data plane's datasets endpoints (list, describe, sample, load).

HTTP and connection failures become our own errors: 404 → NotFound, other 4xx →
InvalidRequest (field "dataset"), 5xx and transport faults → Unavailable.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from workflowd.domain.errors import InvalidRequest, NotFound, Unavailable

JsonObject = dict[str, Any]


class DatasetsClient:
    def __init__(
        self, base_url: str, *, token: str | None = None, timeout_s: float = 300.0
    ) -> None:
        self._base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    async def list(self) -> list[JsonObject]:
        body = await self._request("GET", "/datasets")
        return list(body["records"])

    async def describe(self, name_or_id: str) -> JsonObject:
        return await self._request("GET", f"/datasets/{name_or_id}")

    async def sample(self, name_or_id: str, limit: int = 10) -> JsonObject:
        return await self._request("GET", f"/datasets/{name_or_id}/sample", {"limit": limit})

    async def load(
        self, path: Path, name: str, *, file_format: str = "csv", replace: bool = False
    ) -> JsonObject:
        params = {"format": file_format, "replace": "true" if replace else "false"}
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise InvalidRequest("file", f"cannot read {path}: {exc.strerror}") from exc
        # A file object: aiohttp streams it, where raw bytes would be written in one go.
        return await self._request("POST", f"/datasets/{name}/load", params, io.BytesIO(data))

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        data: io.BytesIO | None = None,
    ) -> JsonObject:
        url = self._base_url + path
        try:
            async with self._session.request(method, url, params=params, data=data) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"data plane at {self._base_url} is unreachable: {exc}") from exc
        body = _json(text)
        if status >= 400:
            _raise_for(status, body, text)
        return body


def _json(text: str) -> JsonObject:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _raise_for(status: int, body: JsonObject, text: str) -> None:
    detail = str(body.get("detail") or body.get("title") or text or f"HTTP {status}")
    if status == 404:
        raise NotFound(detail)
    if 400 <= status < 500:
        raise InvalidRequest("dataset", detail)
    raise Unavailable(f"data plane error {status}: {detail}")
