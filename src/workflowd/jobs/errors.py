"""The jobs layer's errors. aiohttp's exceptions never leave `jobs/`: each is translated here.

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

from workflowd.domain.errors import WorkflowdError


class JobsError(WorkflowdError):
    """Base of every error the jobs client raises on purpose."""


class JobsCommunicationError(JobsError):
    """The jobs API stayed unreachable (refused, reset, 5xx, timeouts) past the deadline."""


class JobsClientClosed(JobsCommunicationError):
    """Raised to calls pending when `JobsClient.aclose()` ran, and to calls made after it.

    A subclass of `JobsCommunicationError` so that a caller that knows nothing of drains still
    sees a communication failure, while the engine can tell a drain from an outage.
    """

    def __init__(self, message: str = "jobs client closed") -> None:
        super().__init__(message)


class JobRejected(JobsError):
    """A 4xx other than 404/409: retrying cannot help; carries the API's own `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"jobs API rejected the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class JobNotFound(JobsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found in the jobs API")
        self.job_id = job_id


class IdempotencyConflict(JobsError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"idempotency conflict: {detail}")
        self.detail = detail


class MalformedResponse(JobsError):
    def __init__(self, what: str) -> None:
        super().__init__(f"malformed response from jobs API: {what}")
