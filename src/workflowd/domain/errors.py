"""Our own error tree. Each layer translates foreign errors into these; `api/` maps them to
gRPC status codes in one table.

    WorkflowdError
    ├── InvalidSpecification   a specification that cannot be stored (carries diagnostics)
    ├── InvalidRequest         a request field that is wrong (carries its name)
    │   └── ValueRefused       the store refused a value the checks let through
    ├── Unauthenticated        no valid token (or it was revoked)
    ├── NotFound               no such workflow/run/schedule for this company
    ├── AlreadyExists          a different spec under an existing version
    ├── FailedPrecondition     the object is in a state that forbids the request
    ├── QuotaExceeded          the company has used up one of its quotas (carries the setting)
    ├── OutOfRange             a position that is no longer kept (events deleted since)
    └── Unavailable            the daemon is draining or a dependency is down
"""

from __future__ import annotations

from collections.abc import Sequence

from workflowd.domain.diagnostics import Diagnostic


class WorkflowdError(Exception):
    """Base of every error workflowd raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpecification(WorkflowdError):
    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        first = diagnostics[0].render() if diagnostics else "invalid specification"
        more = f" (and {len(diagnostics) - 1} more)" if len(diagnostics) > 1 else ""
        super().__init__(f"invalid specification: {first}{more}")
        self.diagnostics = tuple(diagnostics)


class InvalidRequest(WorkflowdError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class ValueRefused(InvalidRequest):
    """The store refused a value of the request (a safety net: the API's checks should have
    refused it first). Never retried: the same value is refused again."""

    def __init__(self, reason: str) -> None:
        super().__init__("request", f"holds a value the store cannot keep: {reason}")


class Unauthenticated(WorkflowdError):
    pass


class NotFound(WorkflowdError):
    pass


class AlreadyExists(WorkflowdError):
    pass


class FailedPrecondition(WorkflowdError):
    pass


class QuotaExceeded(WorkflowdError):
    """A per-company quota refused the request; `setting` names the quota's setting."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class OutOfRange(WorkflowdError):
    pass


class Unavailable(WorkflowdError):
    pass
