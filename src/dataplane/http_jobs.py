"""The jobs HTTP API: submit, read, list, cancel (streams are in `http_events`)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from dataplane.company import Company
from dataplane.errors import BadRequest, NotFound, quote
from dataplane.http_common import int_param, json_body
from dataplane.model import Job, JobState, parse_submission
from dataplane.store import ORDERINGS, JobFilter
from dataplane.tracing import traceparent_of

CompanyOf = Callable[[web.Request], Awaitable[Company]]
MAX_PER_PAGE = 500


def job_id_of(request: web.Request) -> str:
    raw = request.match_info["job_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no job {quote(raw)}") from None


def job_filter(request: web.Request) -> JobFilter:
    states = tuple(request.query.getall("state", []))
    known = {s.value for s in JobState}
    for state in states:
        if state not in known:
            raise BadRequest(
                f"unknown state {quote(state)}; known states: {', '.join(sorted(known))}"
            )
    ids = tuple(i for i in request.query.get("ids", "").split(",") if i)
    if len(ids) > MAX_PER_PAGE:
        raise BadRequest(f"at most {MAX_PER_PAGE} ids")
    return JobFilter(
        tag=request.query.get("tag"),
        type=request.query.get("type"),
        workflow_run_id=request.query.get("workflow_run_id"),
        states=states,
        ids=ids,
    )


def job_response(job: Job, status: int = 200) -> web.Response:
    return web.json_response(job.to_json(), status=status)


class JobRoutes:
    def __init__(self, company_of: CompanyOf) -> None:
        self._company_of = company_of

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/jobs", self.submit),
            web.get("/jobs", self.list_jobs),
            web.get("/jobs/{job_id}", self.get_job),
            web.post("/jobs/{job_id}/cancel", self.cancel),
        ]

    async def submit(self, request: web.Request) -> web.Response:
        submission = parse_submission(await json_body(request))
        traceparent = traceparent_of(request.headers.get("traceparent"))
        if traceparent is not None:
            submission = replace(submission, traceparent=traceparent)
        company = await self._company_of(request)
        job, created = await company.submit(submission)
        return job_response(job, 201 if created else 200)

    async def get_job(self, request: web.Request) -> web.Response:
        job_id = job_id_of(request)
        found = await (await self._company_of(request)).get(job_id)
        if found is None:
            raise NotFound(f"no job {job_id}")
        return job_response(found[0])

    async def cancel(self, request: web.Request) -> web.Response:
        job_id = job_id_of(request)
        job = await (await self._company_of(request)).cancel(job_id)
        return job_response(job)

    async def list_jobs(self, request: web.Request) -> web.Response:
        where = job_filter(request)
        per_page = int_param(request, "per_page", 50, 1, MAX_PER_PAGE)
        offset = int_param(request, "offset", 0, 0)
        order_by = request.query.get("order_by", "created_at_desc")
        if order_by not in ORDERINGS:
            raise BadRequest(
                f"order_by must be one of {', '.join(ORDERINGS)}, not {quote(order_by)}"
            )
        company = await self._company_of(request)
        jobs, total = await company.list_jobs(where, order_by, per_page, offset)
        return web.json_response(
            {
                "records": [job.to_json() for job in jobs],
                "current_page": offset // per_page + 1,
                "total_pages": math.ceil(total / per_page),
                "total_records": total,
            }
        )
