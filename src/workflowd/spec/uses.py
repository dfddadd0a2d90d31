"""Errors and retries: a `try`'s `catch`, retry policies and raised errors, inline or named in
the top-level `use.errors` and `use.retries` (the only parts of `use` workflowd reads)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from workflowd.domain.definition import CatchBody, ErrorDefinition, ErrorFilter
from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import Json
from workflowd.domain.retry import Backoff, BackoffKind, RetryPolicy
from workflowd.spec.fields import (
    check_flow_expression,
    check_template,
    closed,
    duration_seconds,
    expect_object,
    type_name,
)
from workflowd.spec.jqsyntax import VARIABLES, is_expression
from workflowd.spec.tasks import Context, read_list

DEFAULT_RETRY_DELAY_S = 1.0
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = frozenset({*VARIABLES, "ENV", "__loc__", "__subject"})
_USE_REFUSED = {
    key: f"use.{key} is not supported: workflowd reads use.errors and use.retries"
    for key in ("authentications", "catalogs", "extensions", "functions", "secrets", "timeouts")
}
_DURATION = (
    "a duration: {days, hours, minutes, seconds, milliseconds} (integers) or ISO-8601 such as "
    "PT30S (no years or months)"
)


def variable_problem(value: Json) -> str | None:
    """Why `value` cannot name an expression variable (a loop's item or index, a caught
    error), or None."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        return f"{value!r} is not a variable name (letters, digits and _, not first a digit)"
    if value in _RESERVED:
        return f"${value} is a variable every expression has already"
    return None


def read_use(
    value: Json, ctx: Context
) -> tuple[dict[str, ErrorDefinition], dict[str, RetryPolicy], list[Diagnostic]]:
    """The named errors and retry policies of the top-level `use`."""
    errors: dict[str, ErrorDefinition] = {}
    retries: dict[str, RetryPolicy] = {}
    if (problem := expect_object(value, "/use", "use")) is not None:
        return errors, retries, [problem]
    assert isinstance(value, dict)
    out = closed(value, "/use", ("errors", "retries"), _USE_REFUSED)
    for name, definition in _named(value.get("errors"), "/use/errors", out):
        found, problems = _error_definition(definition, pointer_join("/use/errors", name), ctx)
        out += problems
        if found is not None:
            errors[name] = found
    for name, definition in _named(value.get("retries"), "/use/retries", out):
        policy, problems = _policy(definition, pointer_join("/use/retries", name), ctx)
        out += problems
        if policy is not None:
            retries[name] = policy
    return errors, retries, out


def _named(value: Json, pointer: str, out: list[Diagnostic]) -> list[tuple[str, Json]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        out.append(
            Diagnostic(f"must be an object of named entries, not {type_name(value)}", pointer)
        )
        return []
    return list(value.items())


def read_catch(
    value: Json, pointer: str, ctx: Context
) -> tuple[CatchBody | None, list[Diagnostic]]:
    if (problem := expect_object(value, pointer, "catch")) is not None:
        return None, [problem]
    assert isinstance(value, dict)
    out = closed(value, pointer, ("errors", "as", "when", "exceptWhen", "retry", "do"))
    as_ = value.get("as", "error")
    problem_text = variable_problem(as_)
    if problem_text is not None:
        out.append(Diagnostic(f"catch.as: {problem_text}", pointer_join(pointer, "as")))
        as_ = "error"
    assert isinstance(as_, str)
    errors = _filter(value.get("errors"), pointer_join(pointer, "errors"), out)
    names = frozenset({as_})
    for key in ("when", "exceptWhen"):
        if key in value:
            out += _expression(value[key], pointer_join(pointer, key), f"catch.{key}", ctx, names)
    retry = None
    if "retry" in value:
        retry, problems = _retry(value["retry"], pointer_join(pointer, "retry"), ctx, names)
        out += problems
    tasks = None
    if "do" in value:
        tasks, problems = read_list(value["do"], pointer_join(pointer, "do"), ctx.inner(names))
        out += problems
    if out:
        return None, out
    return CatchBody(errors, as_, value.get("when"), value.get("exceptWhen"), retry, tasks), out


def _filter(value: Json, pointer: str, out: list[Diagnostic]) -> ErrorFilter:
    if value is None:
        return ErrorFilter()
    if (problem := expect_object(value, pointer, "catch.errors")) is not None:
        out.append(problem)
        return ErrorFilter()
    assert isinstance(value, dict)
    out += closed(value, pointer, ("with",))
    fields = value.get("with", {})
    where = pointer_join(pointer, "with")
    if (problem := expect_object(fields, where, "catch.errors.with")) is not None:
        out.append(problem)
        return ErrorFilter()
    assert isinstance(fields, dict)
    # `details` is the DSL 1.0 schema's spelling, `detail` RFC 7807's and the renamed spec's.
    out += closed(fields, where, ("type", "status", "instance", "title", "detail", "details"))
    for key, item in fields.items():
        wanted = int if key == "status" else str
        if type(item) is not wanted:
            expected = "an integer" if wanted is int else "a string"
            out.append(
                Diagnostic(f"errors.with.{key} must be {expected}", pointer_join(where, key))
            )
    text = {k: v for k, v in fields.items() if isinstance(v, str)}
    status = fields.get("status")
    return ErrorFilter(
        type=text.get("type"),
        status=status if type(status) is int else None,
        instance=text.get("instance"),
        title=text.get("title"),
        detail=text.get("detail", text.get("details")),
    )


def _retry(
    value: Json, pointer: str, ctx: Context, names: frozenset[str]
) -> tuple[RetryPolicy | None, list[Diagnostic]]:
    if isinstance(value, str):
        if value not in ctx.retries:
            known = ", ".join(sorted(ctx.retries)) or "none"
            return None, [
                Diagnostic(f"no retry policy {value!r} in use.retries (it has: {known})", pointer)
            ]
        return ctx.retries[value], []
    return _policy(value, pointer, ctx.inner(names))


def _policy(value: Json, pointer: str, ctx: Context) -> tuple[RetryPolicy | None, list[Diagnostic]]:
    if (problem := expect_object(value, pointer, "a retry policy")) is not None:
        return None, [problem]
    assert isinstance(value, dict)
    out = closed(value, pointer, ("when", "exceptWhen", "delay", "backoff", "limit", "jitter"))
    for key in ("when", "exceptWhen"):
        if key in value:
            out += _expression(
                value[key], pointer_join(pointer, key), f"retry.{key}", ctx, frozenset()
            )
    delay = _seconds(value, "delay", pointer, out, DEFAULT_RETRY_DELAY_S)
    kind = _backoff(value.get("backoff"), pointer_join(pointer, "backoff"), out)
    jitter = _jitter(value.get("jitter"), pointer_join(pointer, "jitter"), out)
    attempts, attempt_s, total_s = _limit(
        value.get("limit"), pointer_join(pointer, "limit"), ctx, out
    )
    if out:
        return None, out
    policy = RetryPolicy(
        backoff=Backoff(delay, kind, jitter_s=jitter),
        max_attempts=attempts,
        max_elapsed_s=total_s,
        attempt_timeout_s=attempt_s,
        when=value.get("when"),
        except_when=value.get("exceptWhen"),
    )
    return policy, out


def _backoff(value: Json, pointer: str, out: list[Diagnostic]) -> BackoffKind:
    if value is None:
        return BackoffKind.CONSTANT
    kinds = [k.value for k in BackoffKind]
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in kinds:
        out.append(
            Diagnostic(
                "backoff must be one of {constant: {}}, {linear: {}}, {exponential: {}}", pointer
            )
        )
        return BackoffKind.CONSTANT
    ((kind, options),) = value.items()
    if options not in ({}, None):
        out.append(Diagnostic(f"backoff.{kind} takes no options", pointer_join(pointer, kind)))
    return BackoffKind(kind)


def _jitter(value: Json, pointer: str, out: list[Diagnostic]) -> tuple[float, float]:
    if value is None:
        return (0.0, 0.0)
    if (problem := expect_object(value, pointer, "jitter")) is not None:
        out.append(problem)
        return (0.0, 0.0)
    assert isinstance(value, dict)
    out += closed(value, pointer, ("from", "to"))
    low = _seconds(value, "from", pointer, out, 0.0)
    high = _seconds(value, "to", pointer, out, low)
    if high < low:
        out.append(Diagnostic("jitter.to must not be shorter than jitter.from", pointer))
    return (low, max(low, high))


def _limit(
    value: Json, pointer: str, ctx: Context, out: list[Diagnostic]
) -> tuple[int, float | None, float | None]:
    """(executions, one attempt's bound, the whole retrying's bound)."""
    most = ctx.limits.max_attempts
    if value is None:
        return most, None, None
    if (problem := expect_object(value, pointer, "limit")) is not None:
        out.append(problem)
        return most, None, None
    assert isinstance(value, dict)
    out += closed(value, pointer, ("attempt", "duration"))
    total = _seconds(value, "duration", pointer, out, None)
    attempt = value.get("attempt", {})
    where = pointer_join(pointer, "attempt")
    if (problem := expect_object(attempt, where, "limit.attempt")) is not None:
        out.append(problem)
        return most, None, total
    assert isinstance(attempt, dict)
    out += closed(attempt, where, ("count", "duration"))
    per_attempt = _seconds(attempt, "duration", where, out, None)
    count = attempt.get("count")
    if count is None:
        return most, per_attempt, total
    if type(count) is not int or count < 0:
        out.append(
            Diagnostic(
                "limit.attempt.count must be a whole number of retries",
                pointer_join(where, "count"),
            )
        )
        return most, per_attempt, total
    if count + 1 > most:
        message = (
            f"limit.attempt.count allows {count + 1} attempts; the limit is {most} (max_attempts)"
        )
        out.append(Diagnostic(message, pointer_join(where, "count")))
    return count + 1, per_attempt, total


def _seconds(
    value: Mapping[str, Json], key: str, pointer: str, out: list[Diagnostic], default: float | None
) -> float:
    if key not in value:
        return default  # type: ignore[return-value]
    seconds = duration_seconds(value[key])
    if seconds is None:
        out.append(Diagnostic(f"{key} must be {_DURATION}", pointer_join(pointer, key)))
        return default or 0.0
    return seconds


def read_error(
    value: Json, pointer: str, ctx: Context
) -> tuple[ErrorDefinition | None, list[Diagnostic]]:
    if isinstance(value, str):
        if value not in ctx.errors:
            known = ", ".join(sorted(ctx.errors)) or "none"
            return None, [
                Diagnostic(f"no error {value!r} in use.errors (it has: {known})", pointer)
            ]
        return ctx.errors[value], []
    return _error_definition(value, pointer, ctx)


def _error_definition(
    value: Json, pointer: str, ctx: Context
) -> tuple[ErrorDefinition | None, list[Diagnostic]]:
    if (problem := expect_object(value, pointer, "an error")) is not None:
        return None, [problem]
    assert isinstance(value, dict)
    out = closed(value, pointer, ("type", "status", "instance", "title", "detail"))
    error_type, status = value.get("type"), value.get("status")
    if not isinstance(error_type, str) or not error_type or is_expression(error_type):
        out.append(
            Diagnostic(
                "an error needs `type`, a URI such as https://serverlessworkflow.io/spec/1.0.0/errors/runtime",
                pointer_join(pointer, "type") if "type" in value else pointer,
            )
        )
    if type(status) is not int or not 100 <= status <= 599:
        out.append(
            Diagnostic(
                "an error needs `status`, an HTTP status code (100-599)",
                pointer_join(pointer, "status") if "status" in value else pointer,
            )
        )
    for key in ("title", "detail"):
        if key in value:
            item = value[key]
            if not isinstance(item, str):
                out.append(Diagnostic(f"error.{key} must be a string", pointer_join(pointer, key)))
            else:
                out += check_template(item, pointer_join(pointer, key), ctx.names)
    if out:
        return None, out
    assert isinstance(error_type, str)
    assert isinstance(status, int)
    return ErrorDefinition(error_type, status, value.get("title"), value.get("detail")), out


def _expression(
    value: Json, pointer: str, name: str, ctx: Context, names: frozenset[str]
) -> list[Diagnostic]:
    if not isinstance(value, str):
        return [Diagnostic(f"{name} must be a jq expression (a string)", pointer)]
    return check_flow_expression(value, pointer, name, ctx.names | names)
