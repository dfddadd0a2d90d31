"""What every handler shares: problem+json errors, bearer-token auth, bodies and parameters."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from dataplane.errors import BadRequest, DataPlaneError, Unauthorized

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COMPANY_KEY = web.RequestKey("company", str)
DEFAULT_COMPANY = "default"
PROBLEM_TYPE = "https://workflowd.dev/problems/"


def problem(status: int, title: str, detail: str) -> web.Response:
    slug = title.lower().replace(" ", "-")
    body = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns every error into problem+json; a caller's mistake is never a 500."""
    try:
        return await handler(request)
    except DataPlaneError as exc:
        return problem(exc.status, exc.title, exc.detail)
    except web.HTTPRequestEntityTooLarge as exc:
        return problem(400, "Bad request", f"request body too large: {exc.text}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, exc.reason)
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return problem(500, "Internal error", "the data plane failed; see its log")


def auth_middleware(
    tokens: Mapping[str, str] | None,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if tokens is None or request.path == "/healthz":
            request[COMPANY_KEY] = DEFAULT_COMPANY
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        company = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if company is None:
            raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
        request[COMPANY_KEY] = company
        return await handler(request)

    return authenticate


async def json_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc


def int_param(
    request: web.Request, name: str, default: int, low: int, high: int | None = None
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bounds}")
    return value


def bool_param(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name} must be true or false, not {raw!r}")
