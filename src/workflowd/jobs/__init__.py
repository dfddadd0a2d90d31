"""The jobs layer: workflowd's client of the jobs HTTP API (docs/jobs-api.md).

The only package that imports aiohttp's client. It submits each task as a job with an idempotency
key, awaits completion through one shared event stream (or batched polling), cancels jobs, and
translates every transport fault into the error tree of `workflowd.jobs.errors`.
"""

from workflowd.jobs.client import JobsClient
from workflowd.jobs.config import JobsClientConfig
from workflowd.jobs.errors import (
    IdempotencyConflict,
    JobNotFound,
    JobRejected,
    JobsClientClosed,
    JobsCommunicationError,
    JobsError,
    MalformedResponse,
)
from workflowd.jobs.parse import job_info_from_json

__all__ = [
    "IdempotencyConflict",
    "JobNotFound",
    "JobRejected",
    "JobsClient",
    "JobsClientClosed",
    "JobsClientConfig",
    "JobsCommunicationError",
    "JobsError",
    "MalformedResponse",
    "job_info_from_json",
]
