"""Our own error tree. Each layer translates foreign errors into these; `api/` maps them to
gRPC status codes in one table.

    WorkflowdError
    ├── InvalidSpecification   a specification that cannot be stored (carries diagnostics)
    ├── InvalidRequest         a request field that is wrong (carries its name)
    ├── Unauthenticated        no valid token (or it was revoked)
    ├── NotFound               no such workflow/run/schedule for this company
    ├── AlreadyExists          a different spec under an existing version
    ├── FailedPrecondition     the object is in a state that forbids the request
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


class Unauthenticated(WorkflowdError):
    pass


class NotFound(WorkflowdError):
    pass


class AlreadyExists(WorkflowdError):
    pass


class FailedPrecondition(WorkflowdError):
    pass


class Unavailable(WorkflowdError):
    pass
