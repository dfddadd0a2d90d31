"""What a `try` decides about an error, apart from the interpreter's flow: whether its filter
matches, which of the catch's and the retry policy's expressions are checked next, and how a
`wait` duration written as an expression reads."""

from __future__ import annotations

from workflowd.domain.definition import CatchBody, ErrorFilter
from workflowd.domain.json import Json
from workflowd.domain.run import Problem
from workflowd.engine.flow import Purpose

CATCH_CHECKS = (Purpose.CATCH_WHEN, Purpose.CATCH_EXCEPT)
RETRY_CHECKS = (Purpose.RETRY_WHEN, Purpose.RETRY_EXCEPT)
_ORDER = (*CATCH_CHECKS, *RETRY_CHECKS)

# The standard error types, under the prefixes the DSL has used: 1.0's, the alpha spelling its
# conformance kit still filters on, and the renamed project's.
_STANDARD_PREFIXES = (
    "https://serverlessworkflow.io/spec/1.0.0/errors/",
    "https://serverlessworkflow.io/dsl/errors/types/",
    "https://open-workflow-specification.org/spec/1.0.0/errors/",
)


def error_type(uri: str) -> str:
    """A type as it compares: a standard type by its last segment, any other as written."""
    for prefix in _STANDARD_PREFIXES:
        if uri.startswith(prefix):
            return "standard:" + uri[len(prefix) :]
    return uri


def matches(errors: ErrorFilter, problem: Problem) -> bool:
    """Whether `problem` equals every field the filter gives."""
    return (
        (errors.type is None or error_type(errors.type) == error_type(problem.type))
        and (errors.status is None or errors.status == problem.status)
        and (errors.instance is None or errors.instance == problem.instance)
        and (errors.title is None or errors.title == problem.title)
        and (errors.detail is None or errors.detail == problem.detail)
    )


def next_check(catch: CatchBody, done: Purpose | None) -> Purpose | None:
    """The expression to evaluate after `done` held (None: before any), if the catch or its
    retry policy has one left."""
    start = 0 if done is None else _ORDER.index(done) + 1
    for purpose in _ORDER[start:]:
        if check_expression(catch, purpose, "")[0] is not None:
            return purpose
    return None


def check_expression(catch: CatchBody, purpose: Purpose, reference: str) -> tuple[Json, str]:
    """The expression a check evaluates, and its pointer under the task at `reference`."""
    retry = catch.retry
    if purpose == Purpose.CATCH_WHEN:
        return catch.when, f"{reference}/catch/when"
    if purpose == Purpose.CATCH_EXCEPT:
        return catch.except_when, f"{reference}/catch/exceptWhen"
    if purpose == Purpose.RETRY_WHEN:
        return (None if retry is None else retry.when), f"{reference}/catch/retry/when"
    return (None if retry is None else retry.except_when), f"{reference}/catch/retry/exceptWhen"


def passes(purpose: Purpose, value: Json) -> bool:
    """`when` holds when its value is truthy; `exceptWhen` when it is not."""
    truthy = value is not None and value is not False
    return truthy if purpose in (Purpose.CATCH_WHEN, Purpose.RETRY_WHEN) else not truthy
