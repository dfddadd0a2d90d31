"""Datasets for people: list, describe, sample, and load a file as `company_data.<name>`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO

from aiohttp import web

from dataplane.errors import BadRequest, quote
from dataplane.http_common import bool_param, int_param
from dataplane.http_jobs import CompanyOf
from dataplane.loader import FORMATS
from dataplane.model import check_dataset_name, dataset_ref

MAX_SAMPLE_ROWS = 1000
_CHUNK_BYTES = 1 << 16


class DatasetRoutes:
    def __init__(self, company_of: CompanyOf, upload_dir: Path, max_upload_bytes: int) -> None:
        self._company_of = company_of
        self._upload_dir = upload_dir
        self._max_upload_bytes = max_upload_bytes

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/datasets", self.list_datasets),
            web.get("/datasets/{name}", self.describe),
            web.get("/datasets/{name}/sample", self.sample),
            web.post("/datasets/{name}/load", self.load),
        ]

    async def list_datasets(self, request: web.Request) -> web.Response:
        company = await self._company_of(request)
        return web.json_response({"records": await company.datasets()})

    async def describe(self, request: web.Request) -> web.Response:
        ref = dataset_ref(request.match_info["name"], "the dataset in the path")
        company = await self._company_of(request)
        return web.json_response(await company.describe(ref))

    async def sample(self, request: web.Request) -> web.Response:
        ref = dataset_ref(request.match_info["name"], "the dataset in the path")
        limit = int_param(request, "limit", 10, 0, MAX_SAMPLE_ROWS)
        company = await self._company_of(request)
        return web.json_response(await company.sample(ref, limit))

    async def load(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        check_dataset_name(name, "the dataset name in the path")
        file_format = request.query.get("format", "csv")
        if file_format not in FORMATS:
            raise BadRequest(
                f"query parameter format must be one of {', '.join(FORMATS)},"
                f" not {quote(file_format)}"
            )
        replace = bool_param(request, "replace", False)
        company = await self._company_of(request)
        path = await self._receive(request, file_format)
        try:
            described = await company.load(path, file_format, name, replace)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return web.json_response(described)

    async def _receive(self, request: web.Request, suffix: str) -> Path:
        """Streams the body to a private temporary file, refusing more than the cap."""
        handle = await asyncio.to_thread(self._temporary_file, suffix)
        size = 0
        try:
            with handle:
                while chunk := await request.content.read(_CHUNK_BYTES):
                    size += len(chunk)
                    if size > self._max_upload_bytes:
                        raise BadRequest(f"the file is larger than {self._max_upload_bytes} bytes")
                    await asyncio.to_thread(handle.write, chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
            raise
        return Path(handle.name)

    def _temporary_file(self, suffix: str) -> IO[bytes]:
        self._upload_dir.mkdir(parents=True, exist_ok=True)
        # Closed by the caller, which keeps the file until the loader has read it.
        return tempfile.NamedTemporaryFile(dir=self._upload_dir, suffix=f".{suffix}", delete=False)
