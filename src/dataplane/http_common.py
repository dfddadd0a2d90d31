"""What every handler shares: problem+json errors, bearer-token auth, bodies and parameters."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from dataplane.auth import Principal, TokenTable, digest
from dataplane.errors import BadRequest, DataPlaneError, Forbidden, Unauthorized, quote
from dataplane.model import COMPANY_RE, MAX_INT64

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Caller:
    """Whose token a request carried: its digest and what it spoke for then."""

    sha256: str
    principal: Principal


@dataclass(frozen=True)
class ClientCerts:
    """Whether callers must present a TLS client certificate (verified against the client CA
    during the handshake, which asks for one but lets a caller without one through to be
    refused here, with a sentence instead of a broken handshake). `/healthz` never needs one.
    `service_tokens_exempt`: a service token alone suffices, for the data plane a workflowd
    daemon supervises, whose service token is made afresh for each start of this process and
    never leaves the daemon."""

    required: bool = False
    service_tokens_exempt: bool = False


COMPANY_KEY = web.RequestKey("company", str)
CALLER_KEY = web.RequestKey("caller", Caller)
DEFAULT_COMPANY = "default"
PROBLEM_TYPE = "https://workflowd.dev/problems/"
COMPANY_HEADER = "X-Workflowd-Company"
# Endpoints for operators and probes, which carry no company token.
OPEN_PATHS = ("/healthz", "/metrics")
HEALTH_PATH = "/healthz"
_NO_CERTIFICATE = "this data plane requires a TLS client certificate signed by its client CA"
MAX_JSON_DEPTH = 32
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_UNSTORABLE = re.compile("[\\ud800-\\udfff\\x00]")


def problem(status: int, title: str, detail: str) -> web.Response:
    slug = title.lower().replace(" ", "-")
    body = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns every error into problem+json; a caller's mistake is never a 500."""
    try:
        return await handler(request)
    except Unauthorized as exc:
        response = problem(exc.status, exc.title, exc.detail)
        response.headers["WWW-Authenticate"] = 'Bearer realm="dataplane"'
        return response
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
    tokens: Callable[[], TokenTable | None], certs: ClientCerts
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Sets the request's company from its bearer token. `tokens` is read per request, so a
    reloaded table takes effect for the next one; None means no tokens at all."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        table = tokens()
        caller = None
        if table is not None and request.path not in OPEN_PATHS:
            caller = caller_of(request, table)
        if certs.required and request.path != HEALTH_PATH and not _has_certificate(request):
            service = caller is not None and caller.principal.company is None
            if not (service and certs.service_tokens_exempt):
                raise Unauthorized(_NO_CERTIFICATE)
        if caller is None:
            request[COMPANY_KEY] = DEFAULT_COMPANY
        else:
            request[CALLER_KEY] = caller
            request[COMPANY_KEY] = company_of(request, caller.principal)
        return await handler(request)

    return authenticate


def _has_certificate(request: web.Request) -> bool:
    # Only a certificate that chained to the client CA gets this far: the handshake checks it.
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


def caller_of(request: web.Request, table: TokenTable) -> Caller:
    """Who the request's bearer token is (401 without one this data plane knows)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
    sha256 = digest(token.strip())
    principal = table.by_digest.get(sha256)
    if principal is None:
        raise Unauthorized("the bearer token is not one this data plane knows")
    return Caller(sha256, principal)


def company_of(request: web.Request, principal: Principal) -> str:
    """The company the request's token reaches: a company token its own, a service token the
    one it names in `X-Workflowd-Company`."""
    named = request.headers.getall(COMPANY_HEADER, [])
    if len(named) > 1:
        raise BadRequest(f"{COMPANY_HEADER} must be given once, not {len(named)} times")
    company = named[0] if named else None
    if company is not None and not COMPANY_RE.fullmatch(company):
        raise BadRequest(
            f"{COMPANY_HEADER} {quote(company)} is not a company name: it must match"
            f" {COMPANY_RE.pattern}"
        )
    if principal.company is None:
        if company is None:
            raise BadRequest(f"a service token must name the company in {COMPANY_HEADER}")
        return company
    if company is not None and company != principal.company:
        log.warning(
            "token %s of company %s named company %s", principal.name, principal.company, company
        )
        raise Forbidden("this token belongs to another company")
    return principal.company


async def json_body(request: web.Request) -> object:
    """The body as JSON, refused with a 400 unless every string in it is valid Unicode
    without NULs and it nests at most `MAX_JSON_DEPTH` levels."""
    raw = await request.read()
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8: bad byte at offset {exc.start}") from exc
    except RecursionError:
        raise BadRequest(_too_deep("the request body")) from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise BadRequest(f"the request body is not valid JSON: {str(exc)[:200]}") from exc
    _check_json(value, "the request body", 0)
    return value


def _refuse_constant(name: str) -> object:
    raise BadRequest(f"the request body is not valid JSON: {name} is not a JSON value")


def _too_deep(where: str) -> str:
    return f"{where} nests JSON more than {MAX_JSON_DEPTH} levels deep"


def _check_json(value: object, where: str, depth: int) -> None:
    # Recursion is safe: json.loads has already bounded the depth, and this stops at 33.
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(_too_deep(where))
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{_field(where)}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"a field name in {where}")
            _check_json(item, f"{_field(where)}.{key[:40]}".lstrip("."), depth + 1)


def _field(where: str) -> str:
    return "" if where == "the request body" else where


def check_text(text: str, where: str) -> None:
    """Refuses lone surrogates (not Unicode; DuckDB cannot store them) and NULs (which cut
    strings short in C code), naming where they were found."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return
    if found.group() == "\0":
        raise BadRequest(f"{where} contains a NUL character at character {found.start()}")
    raise BadRequest(
        f"{where} contains a lone surrogate (U+{ord(found.group()):04X}) at character"
        f" {found.start()}; strings must be valid Unicode"
    )


def parse_int(raw: str, name: str, low: int, high: int) -> int:
    """`raw` as an integer in [low, high]: ASCII digits only (Python's int() would also take
    '1_000', ' 1' and non-ASCII digits)."""
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, not {quote(raw)}")
    return int(raw)


def int_param(
    request: web.Request, name: str, default: int, low: int, high: int = MAX_INT64
) -> int:
    raw = request.query.get(name)
    return default if raw is None else parse_int(raw, f"query parameter {name}", low, high)


def bool_param(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"query parameter {name} must be true or false, not {quote(raw)}")
