"""What the client raises: Python exceptions that carry the problem.

ClientError                base of everything the client raises on purpose
├── CallError              the daemon refused a call, or could not be reached: `code`
│   │                      (the gRPC status name), `message`, `violations` (field, why)
│   ├── InvalidArgument    a request field is wrong; `violations` say which
│   ├── NotFound           no such workflow, run or schedule (for your token's company)
│   ├── AlreadyExists      a different specification under an existing version
│   ├── FailedPrecondition the object's state forbids it (archived, no schedule block…)
│   ├── Unauthenticated    no valid token
│   ├── PermissionDenied
│   ├── DeadlineExceeded   no answer within the call's timeout
│   └── Unavailable        the daemon is unreachable or draining; retry later
└── RunError               `wait()`: the run ended without completing: `run`, `problem`
    ├── RunFailed
    └── RunCancelled
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from workflowd.api.client import ClientError as _TransportError

if TYPE_CHECKING:
    from workflowd.client.models import Problem, Run


class ClientError(Exception):
    """Base of every error the workflowd client raises on purpose."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One refused request field: `field` (e.g. `input/rows/0`, `specification/do/0/build`)
    and why."""

    field: str
    description: str


class CallError(ClientError):
    """The daemon refused the call, or could not be reached."""

    def __init__(self, code: str, message: str, violations: tuple[Violation, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.violations = violations


class InvalidArgument(CallError):
    pass


class NotFound(CallError):
    pass


class AlreadyExists(CallError):
    pass


class FailedPrecondition(CallError):
    pass


class Unauthenticated(CallError):
    pass


class PermissionDenied(CallError):
    pass


class DeadlineExceeded(CallError):
    pass


class Unavailable(CallError):
    pass


_BY_CODE: dict[str, type[CallError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "UNAVAILABLE": Unavailable,
}


def call_error(exc: _TransportError) -> CallError:
    """The public exception for a failed call."""
    kind = _BY_CODE.get(exc.code, CallError)
    return kind(exc.code, exc.detail, tuple(Violation(f, d) for f, d in exc.violations))


class RunError(ClientError):
    """The run ended without completing; `problem` is its error (None for a cancel, whose
    reason is `run.cancel_reason`)."""

    def __init__(self, run: Run) -> None:
        why = run.error.title if run.error else run.cancel_reason
        super().__init__(f"run {run.id} of {run.workflow} {run.status}: {why}".rstrip(": "))
        self.run = run
        self.problem: Problem | None = run.error


class RunFailed(RunError):
    pass


class RunCancelled(RunError):
    pass
