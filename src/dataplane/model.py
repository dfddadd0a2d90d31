"""Jobs as values: states, types, the validated submission, and the job's JSON shape."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from dataplane.errors import BadRequest, quote

JsonObject = dict[str, Any]

COMPANY_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,256}$")
_DIGITS = re.compile(r"[0-9]+")
MAX_INT64 = 2**63 - 1  # DuckDB's BIGINT: larger values overflow in queries
MAX_TAGS = 64
MAX_STRING = 4096


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PENDING_CANCELLATION = "pending_cancellation"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class JobType(StrEnum):
    MATERIALIZE_VIEW = "materialize-view"
    REFRESH_MATERIALIZED_VIEW = "refresh-materialized-view"
    EXECUTE_DML = "execute-dml"


_PASS_THROUGH = {"compute_pool_id", "execution_cluster"}
_INPUT_KEYS: dict[JobType, tuple[set[str], set[str]]] = {
    # (required keys, optional keys)
    JobType.MATERIALIZE_VIEW: ({"nql"}, {"dataset_name"} | _PASS_THROUGH),
    JobType.REFRESH_MATERIALIZED_VIEW: (set(), {"dataset_name", "dataset_id"} | _PASS_THROUGH),
    JobType.EXECUTE_DML: ({"nql"}, set(_PASS_THROUGH)),
}


def now_iso() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Submission:
    """A validated `POST /jobs` body."""

    type: JobType
    input: JsonObject
    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    traceparent: str | None = None
    """The submitter's trace context (its `traceparent` header), kept with the job; not part
    of the submission's identity."""

    @property
    def digest(self) -> str:
        """What makes two submissions under one idempotency key "the same"."""
        body = [self.type.value, self.input, list(self.tags), self.metadata]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class FailureKind(StrEnum):
    """What a failed job's failure says about its cause (`value.kind`): the submitter's query
    (its syntax, a missing table or column, a type, what the data plane does not allow), or
    the job's conditions."""

    QUERY = "query"
    QUOTA = "quota"
    TIME_LIMIT = "time_limit"
    INTERRUPTED = "interrupted"
    CONFLICT = "conflict"
    ENGINE = "engine"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Failure:
    message: str
    timestamp: str
    value: JsonObject = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {"message": self.message, "timestamp": self.timestamp, "value": self.value}


@dataclass(frozen=True)
class Job:
    job_id: str
    type: JobType
    state: JobState
    input: JsonObject
    idempotency_key: str | None
    tags: tuple[str, ...]
    metadata: dict[str, str]
    created_at: str
    updated_at: str
    result: JsonObject | None = None
    failures: tuple[Failure, ...] = ()
    ended_at: str | None = None
    traceparent: str | None = None

    def moved_to(
        self,
        state: JobState,
        *,
        result: JsonObject | None = None,
        failure: Failure | None = None,
    ) -> Job:
        stamp = now_iso()
        return replace(
            self,
            state=state,
            updated_at=stamp,
            ended_at=stamp if state.terminal else None,
            result=result if result is not None else self.result,
            failures=self.failures + ((failure,) if failure else ()),
        )

    def to_json(self) -> JsonObject:
        return {
            "job_id": self.job_id,
            "type": self.type.value,
            "state": self.state.value,
            "input": self.input,
            "result": self.result,
            "failures": [f.to_json() for f in self.failures],
            "idempotency_key": self.idempotency_key,
            "tags": list(self.tags),
            "metadata": self.metadata,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "ended_at": self.ended_at,
        }


def parse_submission(body: object) -> Submission:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = set(body) - {"type", "input", "idempotency_key", "tags", "metadata"}
    if unknown:
        raise BadRequest(f"unknown field(s): {_names(unknown)}")
    job_type = _parse_type(body.get("type"))
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_STRING):
        raise BadRequest(f"idempotency_key must be a string of 1 to {MAX_STRING} characters")
    return Submission(
        type=job_type,
        input=parse_input(job_type, body.get("input")),
        idempotency_key=key,
        tags=_parse_tags(body.get("tags", [])),
        metadata=_parse_metadata(body.get("metadata", {})),
    )


def _parse_type(value: object) -> JobType:
    if not isinstance(value, str):
        raise BadRequest("type is required and must be a string")
    try:
        return JobType(value)
    except ValueError:
        known = ", ".join(t.value for t in JobType)
        raise BadRequest(f"unknown job type {quote(value)}; known types: {known}") from None


def parse_input(job_type: JobType, value: object) -> JsonObject:
    if not isinstance(value, dict):
        raise BadRequest("input is required and must be a JSON object")
    required, optional = _INPUT_KEYS[job_type]
    missing = required - set(value)
    if missing:
        raise BadRequest(f"input.{sorted(missing)[0]} is required for {job_type.value}")
    unknown = set(value) - required - optional
    if unknown:
        raise BadRequest(f"unknown input field(s) for {job_type.value}: {_names(unknown)}")
    for key in ("nql", "dataset_name", "compute_pool_id", "execution_cluster"):
        if key in value and not isinstance(value[key], str):
            raise BadRequest(f"input.{key} must be a string")
    if "nql" in value and not value["nql"].strip():
        raise BadRequest("input.nql must not be empty")
    if "dataset_name" in value:
        check_dataset_name(value["dataset_name"], "input.dataset_name")
    if "dataset_id" in value:
        check_dataset_id(value["dataset_id"], "input.dataset_id")
    if (
        job_type is JobType.REFRESH_MATERIALIZED_VIEW
        and len({"dataset_name", "dataset_id"} & set(value)) != 1
    ):
        raise BadRequest("refresh-materialized-view needs exactly one of dataset_name, dataset_id")
    return dict(value)


def dataset_name_problem(name: str, where: str) -> str | None:
    """Why `name` cannot name a dataset, or None if it can."""
    if not DATASET_NAME_RE.match(name):
        return f"{where} {quote(name)} must match {DATASET_NAME_RE.pattern}"
    if _DIGITS.fullmatch(name):
        return f"{where} {quote(name)} is all digits, which reads as a dataset id, not a name"
    return None


def check_dataset_name(name: str, where: str) -> None:
    problem = dataset_name_problem(name, where)
    if problem is not None:
        raise BadRequest(problem)


def check_dataset_id(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INT64:
        raise BadRequest(f"{where} must be an integer from 1 to {MAX_INT64}")
    return value


def dataset_ref(raw: str, where: str) -> str | int:
    """A `{name_or_id}` path segment: ASCII digits are an id, anything else must be a name."""
    if not _DIGITS.fullmatch(raw):
        check_dataset_name(raw, where)
        return raw
    # Past 19 significant digits no id can match (and int() refuses past 4300 digits).
    significant = len(raw.lstrip("0"))
    return check_dataset_id(int(raw) if significant <= 19 else None, f"{where} (an id)")


def _names(keys: set[str], most: int = 10) -> str:
    shown = [k if len(k) <= 40 else k[:40] + "…" for k in sorted(keys)[:most]]
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(shown) + more


def _parse_tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadRequest("tags must be a list of strings")
    if len(value) > MAX_TAGS:
        raise BadRequest(f"at most {MAX_TAGS} tags")
    return tuple(value)


def _parse_metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest("metadata must be an object of string values")
    return dict(value)
