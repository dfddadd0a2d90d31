"""The jobs layer's errors. aiohttp's exceptions never leave `jobs/`: each is translated here.

The classes the engine catches live in `workflowd.domain.jobs` (the engine may not import
`jobs/`); they are re-exported here unchanged, so there is one class per concept:

WorkflowdError
└── JobsError                  base of everything the jobs client raises on purpose
    ├── JobsCommunicationError transport faults outlasted the retry deadline (a task
    │   │                      fails with a `communication` error)
    │   └── JobsClientClosed   the client was closed while the call was pending (drain)
    ├── JobRejected            the API refused the request (4xx other than 404/409)
    ├── JobNotFound            404 for a job id we hold: the job vanished
    ├── IdempotencyConflict    409: the key is bound to a different body
    └── MalformedResponse      a 2xx whose body is not a job; retried like a transport fault
"""

from __future__ import annotations

from workflowd.domain.jobs import (
    IdempotencyConflict,
    JobNotFound,
    JobRejected,
    JobsCommunicationError,
    JobsError,
)

__all__ = [
    "IdempotencyConflict",
    "JobNotFound",
    "JobRejected",
    "JobsClientClosed",
    "JobsCommunicationError",
    "JobsError",
    "MalformedResponse",
    "job_not_found",
]


class JobsClientClosed(JobsCommunicationError):
    """Raised to calls pending when `JobsClient.aclose()` ran, and to calls made after it.

    A subclass of `JobsCommunicationError` so that a caller that knows nothing of drains still
    sees a communication failure, while the engine can tell a drain from an outage.
    """

    def __init__(self, message: str = "jobs client closed") -> None:
        super().__init__(message)


class MalformedResponse(JobsError):
    def __init__(self, what: str) -> None:
        super().__init__(f"malformed response from jobs API: {what}")


def job_not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"job {job_id} not found in the jobs API")
