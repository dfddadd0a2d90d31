"""The data plane's error tree. HTTP handlers map each type to one status code in `http_common`.

DataPlaneError
├── BadRequest     the caller's request is malformed or mistyped (400)
├── Unauthorized   missing or unknown bearer token (401)
├── Forbidden      a company token naming another company (403)
├── NotFound       no such job or dataset for this company (404)
├── Conflict       an idempotency key reused with a different body (409)
├── QuotaExceeded  a load would take the company's datasets past its quota (413)
├── Overloaded     too many queued jobs for this company (503)
├── Unusable       the company's database cannot be opened: a damaged file (507)
└── JobFailure     the job ran and failed; its message becomes `failures[].message`
"""

from __future__ import annotations

import re

QUOTE_LIMIT = 100
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class DataPlaneError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(DataPlaneError):
    status = 400
    title = "Bad request"


class Unauthorized(DataPlaneError):
    status = 401
    title = "Unauthorized"


class Forbidden(DataPlaneError):
    status = 403
    title = "Forbidden"


class NotFound(DataPlaneError):
    status = 404
    title = "Not found"


class Conflict(DataPlaneError):
    status = 409
    title = "Conflict"


class QuotaExceeded(DataPlaneError):
    status = 413
    title = "Quota exceeded"


class Overloaded(DataPlaneError):
    status = 503
    title = "Overloaded"


class Unusable(DataPlaneError):
    """The company's database cannot be opened (its file is damaged). A definite answer, not
    one to retry (a 5xx jobs clients do not retry): only an operator restoring the file
    helps. The other companies are served."""

    status = 507
    title = "Company data unusable"


class JobFailure(DataPlaneError):
    """Raised inside a job to fail it with a message meant for the job's submitter: what is
    wrong with its query (the default), or the `kind` of condition that stopped it."""

    status = 422
    title = "Job failed"

    def __init__(self, detail: str, kind: str = "query") -> None:
        super().__init__(detail)
        self.kind = kind


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`value` as a quoted literal for an error message, cut to `limit` characters so that a
    caller's input never makes an error unboundedly long."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"… ({len(value)} characters)"


def readable(message: str, limit: int = 4000) -> str:
    """A message fit for a person: control characters (DuckDB's messages can carry NULs from
    the data) removed, newlines and tabs kept, and the length bounded."""
    cleaned = _CONTROL.sub("", message)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"
