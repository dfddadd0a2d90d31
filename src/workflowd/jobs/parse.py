"""Job JSON → `JobInfo`, and problem+json → a message. Tolerant of extra and missing optional
fields; a body that is not a job at all raises `MalformedResponse`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from workflowd.domain.jobs import JobInfo, JobState
from workflowd.jobs.errors import MalformedResponse


def job_info_from_json(data: object) -> JobInfo:
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a job object, got {type(data).__name__}")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise MalformedResponse("job without a string job_id")
    try:
        state = JobState(str(data.get("state")))
    except ValueError:
        raise MalformedResponse(f"job {job_id} has unknown state {data.get('state')!r}") from None
    result = data.get("result")
    if result is not None and not isinstance(result, dict):
        raise MalformedResponse(f"job {job_id} has a non-object result")
    return JobInfo(
        job_id=job_id,
        state=state,
        result=result,
        failure_messages=_failure_messages(data.get("failures")),
        query_refused=_query_refused(data.get("failures")),
        created_at=_timestamp(data.get("created_at")),
        ended_at=_timestamp(data.get("ended_at")),
        idempotency_key=key if isinstance(key := data.get("idempotency_key"), str) else None,
    )


def jobs_page_from_json(data: object) -> list[JobInfo]:
    """The `records` of a `GET /jobs` page."""
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise MalformedResponse("job list without a records array")
    return [job_info_from_json(record) for record in records]


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise MalformedResponse(f"invalid JSON ({exc})") from None
    except RecursionError:
        raise MalformedResponse("JSON nested too deeply to read") from None


def problem_detail(body: bytes, status: int, reason: str | None) -> str:
    """The most useful human text of an error response: problem `detail`, else `title`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        for key in ("detail", "title"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    text = body[:500].decode("utf-8", "replace").strip()
    return text or reason or f"HTTP {status}"


def _failure_messages(failures: object) -> tuple[str, ...]:
    if not isinstance(failures, list):
        return ()
    messages: list[str] = []
    for failure in failures:
        message = failure.get("message") if isinstance(failure, dict) else failure
        if message is not None:
            messages.append(str(message))
    return tuple(messages)


def _query_refused(failures: object) -> bool:
    """A failure whose `value.kind` is `query` (the local data plane's; a jobs system that says
    nothing of the kind is taken for the system's failure)."""
    if not isinstance(failures, list):
        return False
    for failure in failures:
        value = failure.get("value") if isinstance(failure, dict) else None
        if isinstance(value, dict) and value.get("kind") == "query":
            return True
    return False


def _timestamp(value: object) -> datetime | None:
    # Timestamps are informational: an unparseable one is dropped rather than failing the job.
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
