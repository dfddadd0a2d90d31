"""The web page's routes, on the daemon's HTTP listener beside /metrics and /healthz.

Pages are server-rendered HTML; htmx and its SSE extension (vendored in `static/`, see
`static/VENDOR.txt`) swap in what the live streams send and check a run's input as it is
typed. Every handler acts for the session's company through the engine, as the gRPC servicer
does, so the page shows a company exactly what its token shows over gRPC.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp.web as aioweb

from workflowd.domain import ids
from workflowd.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
    WorkflowdError,
)
from workflowd.domain.fairness import acting_for
from workflowd.domain.json import Json
from workflowd.domain.run import RunFilter, RunStatus, RunTrigger, WatchFilter
from workflowd.engine.clock import Clock
from workflowd.engine.definitions import WorkflowRef
from workflowd.engine.reruns import FROM_FAILURE
from workflowd.engine.runs import Runs, TriggerRequest
from workflowd.engine.schedules import Schedules
from workflowd.engine.views import Views, failing_reference, spec_lines, timeline
from workflowd.web import live, render
from workflowd.web.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Sessions

RUNS_PAGE = 50
WORKFLOWS_PAGE = 50
_WORKFLOW_CHOICES = 200
_MAX_FORM_BYTES = 3 * 1024 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_STATIC = {
    "htmx.min.js": "text/javascript",
    "sse.js": "text/javascript",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
_STATUS = {
    InvalidRequest: 400,
    Unauthenticated: 401,
    NotFound: 404,
    AlreadyExists: 409,
    FailedPrecondition: 409,
    QuotaExceeded: 429,
    Unavailable: 503,
}
_CANCEL_REASON = "from the web page"
_GRID_INTERVAL_S = 1.0

Handler = Callable[[aioweb.Request, Session], Awaitable[aioweb.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RunsQuery:
    """The runs page's filters and page, as its URL gives them."""

    filt: RunFilter
    page: str
    after: str
    before: str
    tz: str

    def url(self, page: str, path: str = "/runs") -> str:
        pairs = [("workflow", self.filt.workflow_id)]
        pairs += [("status", s.value) for s in self.filt.statuses]
        pairs += [("trigger", t.value) for t in self.filt.triggers]
        pairs += [("after", self.after), ("before", self.before), ("tz", self.tz)]
        pairs.append(("page", page))
        return f"{path}?" + urlencode([(k, v) for k, v in pairs if v])


class WebUi:
    def __init__(
        self,
        runs: Runs,
        schedules: Schedules,
        views: Views,
        sessions: Sessions,
        clock: Clock,
        timing: live.LiveTiming | None = None,
    ) -> None:
        self._runs = runs
        self._schedules = schedules
        self._views = views
        self._sessions = sessions
        self._clock = clock
        self._timing = timing or live.LiveTiming()
        self._reloads = live.Reloads()
        folder = resources.files("workflowd.web") / "static"
        self._static = {name: (folder / name).read_bytes() for name in _STATIC}

    def tokens_reloaded(self) -> None:
        """The tokens changed: every live stream checks its session now (a revoked or moved
        token's streams end)."""
        self._reloads.happened()

    def install(self, app: aioweb.Application) -> None:
        page = self._guard
        app.router.add_get("/", page(self._workflows_page))
        app.router.add_get("/runs", page(self._runs_page))
        app.router.add_get("/runs/{run_id}", page(self._run_page))
        app.router.add_post("/runs/{run_id}/cancel", page(self._cancel, post=True))
        app.router.add_post("/runs/{run_id}/rerun", page(self._rerun, post=True))
        app.router.add_get("/workflows/{workflow_id}", page(self._workflow_page))
        app.router.add_post("/workflows/{workflow_id}/trigger", page(self._trigger, post=True))
        app.router.add_post(
            "/workflows/{workflow_id}/check-input", page(self._check_input, post=True)
        )
        app.router.add_get("/schedules", page(self._schedules_page))
        app.router.add_get("/live/workflows", page(self._live_workflows))
        app.router.add_get("/live/runs", page(self._live_runs))
        app.router.add_get("/live/runs/{run_id}", page(self._live_run))
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", page(self._logout, post=True))
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/favicon.ico", self._favicon)

    # --- the guard every page goes through -------------------------------------------------

    def _guard(
        self, handler: Handler, *, post: bool = False
    ) -> Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]:
        async def guarded(request: aioweb.Request) -> aioweb.StreamResponse:
            session = self._sessions.session(request.cookies.get(COOKIE, ""))
            fresh = session is None
            if session is None:
                session = self._sessions.local()
            if session is None:
                if post or request.path.startswith("/live/"):
                    return _secured(_error(401, "sign in first: your session ended"))
                return _secured(_see_other("/login"))
            if post:
                refusal = await _refuse_forgery(request, session)
                if refusal is not None:
                    return _secured(refusal)
            acting_for.set(session.company)
            began = time.perf_counter()
            try:
                response = await handler(request, session)
            except WorkflowdError as exc:
                response = _error(_status_of(exc), exc.message)
            except aioweb.HTTPException as exc:
                response = _error(exc.status, exc.reason)
            if not response.prepared:
                # What the page cost the daemon, for the browser's developer tools (and the
                # bench): the engine's reads and the rendering, without the network.
                took_ms = (time.perf_counter() - began) * 1000
                response.headers["Server-Timing"] = f"app;dur={took_ms:.1f}"
                if fresh:
                    _set_cookie(response, session)
            return _secured(response)

        return guarded

    # --- pages -----------------------------------------------------------------------------

    def _page(
        self, session: Session, title: str, body: str, nav: str, live_url: str = ""
    ) -> aioweb.Response:
        html = render.layout(
            title,
            body,
            company=session.company,
            csrf=session.csrf,
            nav=nav,
            signing_in=self._sessions.signing_in,
            live=live_url,
        )
        return _html(html)

    async def _workflows_page(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        found = await self._views.workflows(
            session.company, WORKFLOWS_PAGE, request.query.get("page", "")
        )
        body = render.workflows_body(render.workflow_rows(found.rows), found.next_token)
        page = request.query.get("page", "")
        live_url = "/live/workflows" + (f"?{urlencode({'page': page})}" if page else "")
        return self._page(session, "Workflows", body, "workflows", live_url)

    async def _runs_page(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        query = _runs_query(request)
        page = await self._runs.list(
            session.company, query.filt, RUNS_PAGE, query.page, tasks=False
        )
        choices = await self._views.workflow_choices(session.company, _WORKFLOW_CHOICES)
        filters = render.runs_filters(
            choices,
            query.filt.workflow_id,
            query.filt.statuses,
            query.filt.triggers[0] if query.filt.triggers else "",
            query.after,
            query.before,
        )
        rows = render.run_rows(page.items, self._clock.now())
        next_url = query.url(page.after[-1]) if page.more and page.items else ""
        body = render.runs_body(filters, rows, next_url)
        return self._page(session, "Runs", body, "runs", query.url(query.page, "/live/runs"))

    async def _run_page(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        run_id = request.match_info["run_id"]
        run = await self._runs.get(session.company, run_id)
        workflow = await self._views.workflow(session.company, run.workflow_id, run.version)
        now = self._clock.now()
        spec = render.spec_section(spec_lines(workflow.specification, failing_reference(run)))
        body = render.run_body(
            render.run_header(run, session.csrf, now),
            render.timeline_section(timeline(run, now)),
            spec,
        )
        live_url = "" if run.status.terminal else f"/live/runs/{run.id}"
        return self._page(session, f"Run {render.short(run.id)}", body, "runs", live_url)

    async def _workflow_page(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        return await self._workflow_response(request, session, "", "", 200)

    async def _workflow_response(
        self, request: aioweb.Request, session: Session, text: str, said: str, code: int
    ) -> aioweb.Response:
        workflow_id = request.match_info["workflow_id"]
        ids.check_uuid("workflow_id", workflow_id, "workflow")
        workflow = await self._views.workflow(session.company, workflow_id)
        recent = await self._runs.list(
            session.company, RunFilter(workflow_id=workflow.id), 20, "", tasks=False
        )
        body = render.workflow_body(
            workflow,
            await self._views.schedule(session.company, workflow.id),
            recent.items,
            render.trigger_form(workflow, session.csrf, text or "{}", said),
            render.spec_section(spec_lines(workflow.specification, "")),
        )
        title = f"{workflow.namespace}/{workflow.name}"
        response = self._page(session, title, body, "workflows")
        response.set_status(code)
        return response

    async def _schedules_page(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        page = await self._schedules.list_page(
            session.company, "", WORKFLOWS_PAGE, request.query.get("page", "")
        )
        blocks = "".join(render.schedule_block(view) for view in page.items)
        if not page.items:
            blocks = '<p class="muted">No workflow has a schedule.</p>'
        if page.more and page.items:
            token = urlencode({"page": page.after[-1]})
            blocks += f'<p><a href="/schedules?{render.e(token)}">Next page</a></p>'
        return self._page(session, "Schedules", blocks, "schedules")

    # --- actions ---------------------------------------------------------------------------

    async def _cancel(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        run = await self._runs.cancel(session.company, request.match_info["run_id"], _CANCEL_REASON)
        return _see_other(f"/runs/{run.id}")

    async def _rerun(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        form = await request.post()
        start = str(form.get("start", "")) or FROM_FAILURE
        run = await self._runs.rerun(session.company, request.match_info["run_id"], start=start)
        return _see_other(f"/runs/{run.id}")

    async def _trigger(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        form = await request.post()
        text = str(form.get("input", ""))
        workflow_id = request.match_info["workflow_id"]
        try:
            value = _json_input(text)
            run = await self._runs.trigger(
                session.company,
                TriggerRequest(ref=WorkflowRef(workflow_id=workflow_id), input=value),
            )
        except (InvalidRequest, FailedPrecondition, QuotaExceeded) as exc:
            return await self._workflow_response(
                request, session, text, exc.message, _status_of(exc)
            )
        return _see_other(f"/runs/{run.id}")

    async def _check_input(self, request: aioweb.Request, session: Session) -> aioweb.Response:
        """The answer a trigger would give to this input, as a fragment htmx shows under the
        field (200 either way: htmx swaps only successful responses)."""
        form = await request.post()
        try:
            value = _json_input(str(form.get("input", "")))
            await self._runs.check_input(
                session.company,
                WorkflowRef(workflow_id=request.match_info["workflow_id"]),
                value,
            )
        except (InvalidRequest, FailedPrecondition, QuotaExceeded) as exc:
            return _html(render.input_check(exc.message))
        return _html(render.input_check(""))

    # --- live streams ----------------------------------------------------------------------

    async def _live_workflows(
        self, request: aioweb.Request, session: Session
    ) -> aioweb.StreamResponse:
        """The workflows table, again after runs change: its rows read several listings
        each, so it is rendered at most once a second."""
        token = request.query.get("page", "")

        async def fragments() -> dict[str, str]:
            found = await self._views.workflows(session.company, WORKFLOWS_PAGE, token)
            return {"workflows": render.workflow_rows(found.rows)}

        timing = replace(self._timing, interval_s=max(self._timing.interval_s, _GRID_INTERVAL_S))
        return await self._company_stream(request, session, "", fragments, timing)

    async def _live_runs(self, request: aioweb.Request, session: Session) -> aioweb.StreamResponse:
        query = _runs_query(request)

        async def fragments() -> dict[str, str]:
            page = await self._runs.list(
                session.company, query.filt, RUNS_PAGE, query.page, tasks=False
            )
            return {"runs": render.run_rows(page.items, self._clock.now())}

        return await self._company_stream(
            request, session, query.filt.workflow_id, fragments, self._timing
        )

    async def _company_stream(
        self,
        request: aioweb.Request,
        session: Session,
        workflow_id: str,
        fragments: Callable[[], Awaitable[dict[str, str]]],
        timing: live.LiveTiming,
    ) -> aioweb.StreamResponse:
        """A page's live part, rendered again as the company's runs (of `workflow_id`, or all)
        change; a reconnecting browser resumes after its last event."""
        resume = await self._resume_point(request, session)
        watch = WatchFilter(workflow_id=workflow_id, after_global_seq=resume)
        subscribed, ready = live.subscriber()
        events = self._runs.watch_many(session.company, watch, ready)
        response = await live.open_stream(request)
        await live.stream(
            response,
            events,
            lambda e: e.global_seq,
            fragments,
            self._still(session),
            timing,
            self._reloads,
            subscribed=subscribed,
            render_first=resume == 0,
            start=resume,
        )
        return response

    async def _resume_point(self, request: aioweb.Request, session: Session) -> int:
        """The company position a reconnecting browser resumes after (0: none, or one that
        is not the company's)."""
        resume = live.last_event_id(request)
        if resume and resume > await self._runs.last_event_seq(session.company):
            return 0
        return resume

    async def _live_run(self, request: aioweb.Request, session: Session) -> aioweb.StreamResponse:
        run = await self._runs.get(session.company, request.match_info["run_id"])
        resume = live.last_event_id(request)
        if resume and not await self._runs.has_event(session.company, run.id, resume):
            resume = 0
        subscribed, ready = live.subscriber()
        events = self._runs.watch(session.company, run.id, resume, ready)

        async def fragments() -> dict[str, str]:
            now = self._clock.now()
            current = await self._runs.get(session.company, run.id)
            return {
                "header": render.run_header(current, session.csrf, now),
                "timeline": render.timeline_section(timeline(current, now)),
            }

        response = await live.open_stream(request)
        await live.stream(
            response,
            events,
            lambda e: e.seq,
            fragments,
            self._still(session),
            self._timing,
            self._reloads,
            subscribed=subscribed,
            render_first=False,
            start=resume,
        )
        return response

    def _still(self, session: Session) -> Callable[[], bool]:
        return lambda: self._sessions.valid(session.company, session.digest)

    # --- signing in ------------------------------------------------------------------------

    async def _login_page(self, request: aioweb.Request) -> aioweb.StreamResponse:
        if not self._sessions.signing_in:
            return _secured(_see_other("/"))
        return _secured(_html(render.sign_in_page()))

    async def _login(self, request: aioweb.Request) -> aioweb.StreamResponse:
        if not _same_origin(request):
            return _secured(_error(403, "sign-in refused: the form was not sent from this page"))
        form = await request.post()
        session = self._sessions.sign_in(str(form.get("token", "")).strip())
        if session is None:
            response = _html(render.sign_in_page("That token is not one this daemon knows."))
            response.set_status(401)
            return _secured(response)
        redirect = _see_other("/")
        _set_cookie(redirect, session)
        return _secured(redirect)

    async def _logout(self, request: aioweb.Request, session: Session) -> aioweb.StreamResponse:
        redirect = _see_other("/login")
        redirect.del_cookie(COOKIE, path="/")
        return redirect

    async def _favicon(self, request: aioweb.Request) -> aioweb.StreamResponse:
        return _see_other("/static/favicon.svg")

    async def _static_file(self, request: aioweb.Request) -> aioweb.StreamResponse:
        name = request.match_info["name"]
        if name not in self._static:
            return _secured(_error(404, f"no static file {name!r}"))
        return _secured(
            aioweb.Response(
                body=self._static[name],
                headers={"Content-Type": _STATIC[name], "Cache-Control": "no-cache"},
            )
        )


def _runs_query(request: aioweb.Request) -> RunsQuery:
    query = request.query
    workflow_id = query.get("workflow", "")
    if workflow_id:
        ids.check_uuid("workflow", workflow_id, "workflow")
    statuses = []
    for value in query.getall("status", []):
        if value not in RunStatus.__members__.values():
            known = ", ".join(RunStatus)
            raise InvalidRequest("status", f"{value[:40]!r} is not a run status ({known})")
        statuses.append(RunStatus(value))
    triggers = []
    for value in query.getall("trigger", []):
        if not value:
            continue
        if value not in RunTrigger.__members__.values():
            known = ", ".join(RunTrigger)
            raise InvalidRequest("trigger", f"{value[:40]!r} is not a trigger kind ({known})")
        triggers.append(RunTrigger(value))
    tz = query.get("tz", "") or "UTC"
    zone = _zone(tz)
    after, before = query.get("after", ""), query.get("before", "")
    return RunsQuery(
        RunFilter(
            workflow_id=workflow_id,
            statuses=tuple(statuses),
            triggers=tuple(triggers),
            created_after=_instant("after", after, zone),
            created_before=_instant("before", before, zone),
        ),
        query.get("page", ""),
        after,
        before,
        tz,
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest("tz", f"{name[:64]!r} is not an IANA time zone") from None


def _instant(field: str, text: str, zone: ZoneInfo) -> datetime | None:
    """A `datetime-local` value in the viewer's zone (an offset, when given, wins)."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            field, f"{text[:40]!r} is not a date and time (YYYY-MM-DDTHH:MM[:SS])"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def _json_input(text: str) -> Json:
    if not text.strip():
        return {}
    try:
        value: Json = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            "input", f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidRequest("input", "is nested too deeply") from None
    return value


async def _refuse_forgery(request: aioweb.Request, session: Session) -> aioweb.Response | None:
    """A state-changing request must come from our own page: same origin, and the session's
    CSRF token in the form or the header htmx sends."""
    if not _same_origin(request):
        return _error(403, "refused: the request did not come from this page (origin)")
    if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
        return _error(413, f"the form is larger than {_MAX_FORM_BYTES} bytes")
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        given = str((await request.post()).get(CSRF_FIELD, ""))
    if not given or given != session.csrf:
        return _error(403, "refused: the CSRF token is missing or stale; reload the page")
    return None


def _same_origin(request: aioweb.Request) -> bool:
    """Whether a POST comes from our own pages: browsers say so in `Sec-Fetch-Site`, older
    ones in `Origin`; a client that sends neither (a script) must still hold the CSRF
    token."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _set_cookie(response: aioweb.StreamResponse, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.cookie,
        path="/",
        httponly=True,
        samesite="Strict",
    )


def _status_of(exc: WorkflowdError) -> int:
    for kind, code in _STATUS.items():
        if isinstance(exc, kind):
            return code
    return 500


def _html(text: str) -> aioweb.Response:
    return aioweb.Response(
        text=text, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
    )


def _error(code: int, message: str) -> aioweb.Response:
    response = _html(render.error_page(code, message))
    response.set_status(code)
    return response


def _secured(response: aioweb.StreamResponse) -> aioweb.StreamResponse:
    if not response.prepared:
        response.headers.update(_SECURITY_HEADERS)
    return response


def _see_other(url: str) -> aioweb.Response:
    return aioweb.Response(status=303, headers={"Location": url})
