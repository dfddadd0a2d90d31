"""A small client for the local data plane's datasets endpoints (list, describe, sample, load).

Names are checked here with the data plane's own rule before any request is made, and every
URL is built from encoded parts. HTTP and connection failures become our own errors: 404 →
NotFound, other 4xx → InvalidRequest (field "dataset"), 5xx and transport faults → Unavailable.
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
from workflowd.domain.jobs import DATASET_NAME
from workflowd.jobs import urls

_SHOWN_CHARS = 80

JsonObject = dict[str, Any]


class DatasetsClient:
    def __init__(
        self, base_url: str, *, token: str | None = None, timeout_s: float = 300.0
    ) -> None:
        self._base = urls.Base(base_url)
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
        _check_name(name_or_id, "name")
        return await self._request("GET", urls.path("datasets", name_or_id))

    async def sample(self, name_or_id: str, limit: int = 10) -> JsonObject:
        _check_name(name_or_id, "name")
        return await self._request(
            "GET", urls.path("datasets", name_or_id, "sample"), {"limit": limit}
        )

    async def load(
        self, path: Path, name: str, *, file_format: str = "csv", replace: bool = False
    ) -> JsonObject:
        _check_name(name, "name")
        if name.isdigit():
            raise InvalidRequest(
                "name", "a dataset name cannot be all digits (it would read as an id)"
            )
        params = {"format": file_format, "replace": "true" if replace else "false"}
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise InvalidRequest("file", f"cannot read {path}: {exc.strerror}") from exc
        # A file object: aiohttp streams it, where raw bytes would be written in one go.
        return await self._request(
            "POST", urls.path("datasets", name, "load"), params, io.BytesIO(data)
        )

    async def _request(
        self,
        method: str,
        encoded_path: str,
        params: dict[str, Any] | None = None,
        data: io.BytesIO | None = None,
    ) -> JsonObject:
        url = self._base.join(encoded_path)
        try:
            async with self._session.request(method, url, params=params, data=data) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"data plane at {self._base} is unreachable: {exc}") from exc
        body = _json(text)
        if status >= 400:
            _raise_for(status, body, text)
        return body


def _check_name(value: str, field: str) -> None:
    if not DATASET_NAME.match(value):
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
        raise InvalidRequest(
            field,
            f"dataset {shown!r} is not a dataset name or id: names are 1-256 letters, digits "
            "or underscores",
        )


def _json(text: str) -> JsonObject:
    try:
        value = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _raise_for(status: int, body: JsonObject, text: str) -> None:
    detail = str(body.get("detail") or body.get("title") or text or f"HTTP {status}")
    if status == 404:
        raise NotFound(detail)
    if 400 <= status < 500:
        raise InvalidRequest("dataset", detail)
    raise Unavailable(f"data plane error {status}: {detail}")
