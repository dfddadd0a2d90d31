"""workflowd: a workflow orchestration daemon for data pipelines.

`workflowd.Client` and `workflowd.AsyncClient` (and the client's data and error types) load on
first use: the daemon and the CLI, which import this package, do not pay for gRPC until they
ask for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from workflowd.client import (
        AlreadyExists,
        AsyncClient,
        CallError,
        Client,
        ClientError,
        DeadlineExceeded,
        EventType,
        FailedPrecondition,
        InvalidArgument,
        JsonValue,
        NotFound,
        PermissionDenied,
        Problem,
        Run,
        RunCancelled,
        RunError,
        RunEvent,
        RunFailed,
        RunStatus,
        Task,
        TaskStatus,
        Trigger,
        Unauthenticated,
        Unavailable,
        Violation,
        Workflow,
    )

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
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from workflowd import client

        return getattr(client, name)
    raise AttributeError(f"module 'workflowd' has no attribute {name!r}")
