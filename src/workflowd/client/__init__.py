"""The Python client of workflowd: `Client` (blocking) and `AsyncClient` (asyncio), returning
plain dataclasses and raising the exceptions of `workflowd.client.errors`. docs/python-client.md
shows them at work."""

from workflowd.client.aio import AsyncClient
from workflowd.client.errors import (
    AlreadyExists,
    CallError,
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RunCancelled,
    RunError,
    RunFailed,
    Unauthenticated,
    Unavailable,
    Violation,
)
from workflowd.client.models import (
    EventType,
    JsonValue,
    Problem,
    Run,
    RunEvent,
    RunStatus,
    Task,
    TaskStatus,
    Trigger,
    Workflow,
)
from workflowd.client.sync import Client

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "CallError",
    "Client",
    "ClientError",
    "DeadlineExceeded",
    "EventType",
    "FailedPrecondition",
    "InvalidArgument",
    "JsonValue",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "Run",
    "RunCancelled",
    "RunError",
    "RunEvent",
    "RunFailed",
    "RunStatus",
    "Task",
    "TaskStatus",
    "Trigger",
    "Unauthenticated",
    "Unavailable",
    "Violation",
    "Workflow",
]
