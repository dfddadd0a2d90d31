"""What the engine asks of a jobs system, and what it hears back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflowd.domain.errors import WorkflowdError
from workflowd.domain.json import Json, JsonObject

DATASET_NAME = re.compile(r"^[A-Za-z0-9_]{1,256}$")
"""A dataset's name (`company_data.<name>`), or its numeric id where a name or an id is taken."""


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


@dataclass(frozen=True, slots=True)
class JobRequest:
    """The exact body of `POST /jobs`; stored as the task's intent before it is sent."""

    type: str
    input: JsonObject
    idempotency_key: str
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            "type": self.type,
            "input": self.input,
            "idempotency_key": self.idempotency_key,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Json]) -> JobRequest:
        raw_input = data["input"]
        tags = data.get("tags") or []
        metadata = data.get("metadata") or {}
        if not isinstance(raw_input, dict) or not isinstance(tags, list):
            raise ValueError("stored job request is malformed")
        if not isinstance(metadata, dict):
            raise ValueError("stored job request is malformed")
        return cls(
            type=str(data["type"]),
            input=raw_input,
            idempotency_key=str(data["idempotency_key"]),
            tags=tuple(str(t) for t in tags),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )


@dataclass(frozen=True, slots=True)
class JobInfo:
    job_id: str
    state: JobState
    result: JsonObject | None = None
    failure_messages: tuple[str, ...] = ()
    query_refused: bool = False
    """The jobs system says the job failed because of its query (a syntax error, a table or
    column that does not exist …), not because of the system."""
    created_at: datetime | None = None
    ended_at: datetime | None = None
    idempotency_key: str | None = None


class JobsError(WorkflowdError):
    """The jobs system could not do what a task needed."""


class JobsCommunicationError(JobsError):
    """Transport faults persisted past the retry deadline (or the client was closed)."""


class JobRejected(JobsError):
    """A definite refusal (a 4xx other than 404/409/429, or a 5xx not worth retrying such as
    507, the company's data unusable): the API's own detail says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"jobs API answered {status}: {detail}")
        self.status = status
        self.detail = detail


class JobNotFound(JobsError):
    """A job id we hold is unknown to the jobs system."""


class IdempotencyConflict(JobsError):
    """The idempotency key is taken by a job with a different body."""
