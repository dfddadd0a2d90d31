"""HTML, written as Python: every value that comes from a user or the store goes through `e`
(html.escape, quotes included), so no name, input or error text can become markup."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workflowd.domain.json import Json
from workflowd.domain.run import Problem, Run, RunStatus, RunTrigger
from workflowd.domain.schedule import FireDecision
from workflowd.domain.workflow import Workflow
from workflowd.engine.schedules import ScheduleView
from workflowd.engine.views import Bar, SpecLines, Timeline, WorkflowRow

# htmx may not evaluate code, inject <style> or run scripts it swaps in: the page's CSP
# forbids all three, and htmx then has no need of them.
_HTMX_CONFIG = json.dumps(
    {
        "includeIndicatorStyles": False,
        "allowEval": False,
        "allowScriptTags": False,
        "selfRequestsOnly": True,
        "historyCacheSize": 0,
    }
)
# A run may hold thousands of instances, each with an input and an output of up to a MiB:
# the timeline shows the start of each value, and says how long it is.
_MAX_SHOWN_CHARS = 20_000
BAR_WIDTH = 1000


def e(value: object) -> str:
    return escape(str(value), quote=True)


def when(at: datetime | None) -> str:
    """An instant, shown in UTC and turned into the viewer's zone by app.js when asked."""
    if at is None:
        return '<span class="muted">—</span>'
    return f'<time datetime="{e(at.isoformat())}">{e(at.strftime("%Y-%m-%d %H:%M:%S"))} UTC</time>'


def zoned(at: datetime, zone: str) -> str:
    """An instant in a schedule's own zone, with the instant itself beside it (which app.js
    shows in the viewer's zone when asked)."""
    if zone == "UTC":
        return when(at)
    try:
        local = at.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return when(at)
    return f"{e(local.strftime('%Y-%m-%d %H:%M:%S'))} {e(zone)} ({when(at)})"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run_duration(run: Run, now: datetime) -> str:
    if run.started_at is None:
        return '<span class="muted">—</span>'
    end = run.ended_at or now
    text = duration(max(0.0, (end - run.started_at).total_seconds()))
    return text if run.ended_at else f"{text} so far"


def status(value: str) -> str:
    return f'<span class="badge st-{e(value)}">{e(value)}</span>'


def short(run_id: str) -> str:
    return run_id[:8]


def json_block(value: Json) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[:_MAX_SHOWN_CHARS] + f"\n… ({len(text)} characters in all)"
    return f"<pre>{e(text)}</pre>"


def problem(found: Problem) -> str:
    rows = [("title", found.title), ("type", found.type), ("status", str(found.status))]
    rows += [("detail", found.detail), ("instance", found.instance)]
    shown = "".join(f"<dt>{e(k)}</dt><dd><pre>{e(v)}</pre></dd>" for k, v in rows if v)
    return f'<dl class="problem">{shown}</dl>'


def layout(
    title: str,
    body: str,
    *,
    company: str,
    csrf: str,
    nav: str,
    signing_in: bool,
    live: str = "",
) -> str:
    """A whole page. `live`: the URL of its event stream (htmx's SSE extension connects to it,
    and `sse-swap` elements inside take its messages)."""
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if nav == key else ""}>{label}</a>'
        for key, href, label in (
            ("workflows", "/", "Workflows"),
            ("runs", "/runs", "Runs"),
            ("schedules", "/schedules", "Schedules"),
        )
    )
    sign_out = (
        f'<form method="post" action="/logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit">Sign out</button></form>'
        if signing_in
        else ""
    )
    headers = e(json.dumps({"X-CSRF-Token": csrf}))
    connect = f' hx-ext="sse" sse-connect="{e(live)}" sse-close="end"' if live else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="htmx-config" content="{e(_HTMX_CONFIG)}">'
        f"<title>{e(title)} · workflowd</title>"
        '<link rel="icon" href="/static/favicon.svg">'
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/htmx.min.js" defer></script>'
        '<script src="/static/sse.js" defer></script>'
        '<script src="/static/app.js" defer></script>'
        f'</head><body hx-headers="{headers}">'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><nav aria-label="Main">{links}</nav>'
        f'<span class="company">company <strong>{e(company)}</strong></span>'
        '<button type="button" id="tz-toggle" aria-live="polite">Times: UTC</button>'
        f"{sign_out}</header>"
        f'<main id="main"{connect}><h1>{e(title)}</h1>{body}</main>'
        "</body></html>"
    )


def sign_in_page(message: str = "") -> str:
    said = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Sign in · workflowd</title>"
        '<link rel="stylesheet" href="/static/app.css"></head><body>'
        '<main id="main" class="narrow"><h1>Sign in to workflowd</h1>'
        f"{said}"
        '<form method="post" action="/login">'
        '<label for="token">API token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password"'
        " required autofocus>"
        '<button type="submit">Sign in</button></form>'
        "<p class=muted>The token is the one your gRPC clients use; the page acts for its"
        " company.</p></main></body></html>"
    )


def error_page(status_code: int, message: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8"><title>Error · workflowd</title>'
        '<link rel="stylesheet" href="/static/app.css"></head><body><main id="main">'
        f'<h1>{status_code}</h1><p class="error" role="alert">{e(message)}</p>'
        '<p><a href="/">Back to the workflows</a></p></main></body></html>'
    )


# --- workflows -----------------------------------------------------------------------------


def run_cells(runs: Sequence[Run]) -> str:
    """The last runs as coloured cells, oldest on the left."""
    cells = "".join(
        f'<a class="cell st-{e(r.status)}" href="/runs/{e(r.id)}"'
        f' title="{e(r.status)} · {e(r.created_at.isoformat())}">'
        f'<span class="sr">{e(r.status)}</span></a>'
        for r in reversed(runs)
    )
    return f'<div class="cells">{cells}</div>'


def schedule_summary(view: ScheduleView | None) -> str:
    if view is None:
        return '<span class="muted">none</span>'
    schedule = view.schedule
    spec = schedule.spec
    state = "" if schedule.active else ' <span class="muted">(inactive)</span>'
    # `describe` names a zone other than UTC itself (CRON_TZ=…).
    zone = " in UTC" if spec.every_s is None and spec.timezone == "UTC" else ""
    fires = "".join(f"<li>{zoned(at, spec.timezone)}</li>" for at in view.upcoming[:3])
    upcoming = f'<ul class="fires" aria-label="next fires">{fires}</ul>' if fires else ""
    return f"<code>{e(spec.describe())}</code>{zone}{state}{upcoming}"


def workflow_rows(rows: Sequence[WorkflowRow]) -> str:
    if not rows:
        return (
            '<tr><td colspan="5" class="muted">No workflows yet: create one with'
            " <code>workflowd apply</code>.</td></tr>"
        )
    return "".join(
        "<tr>"
        f'<td><a href="/workflows/{e(r.workflow.id)}">'
        f"{e(r.workflow.namespace)}/{e(r.workflow.name)}</a></td>"
        f"<td>{e(r.workflow.current_version)}</td>"
        f"<td>{schedule_summary(r.schedule)}</td>"
        f"<td>{run_cells(r.recent)}</td>"
        f"<td>{when(r.last_success.ended_at if r.last_success else None)}</td>"
        "</tr>"
        for r in rows
    )


def workflows_body(rows: str, next_token: str) -> str:
    more = (
        f'<p><a href="/?{e(urlencode({"page": next_token}))}">Next page</a></p>'
        if next_token
        else ""
    )
    return (
        '<table class="grid"><thead><tr><th scope="col">Workflow</th>'
        '<th scope="col">Version</th><th scope="col">Schedule (next fires)</th>'
        '<th scope="col">Last runs</th><th scope="col">Last success</th></tr></thead>'
        f'<tbody id="workflows-body" sse-swap="workflows" hx-swap="innerHTML">{rows}</tbody>'
        f"</table>{more}"
    )


# --- runs ----------------------------------------------------------------------------------


def run_rows(runs: Sequence[Run], now: datetime) -> str:
    if not runs:
        return '<tr><td colspan="7" class="muted">No runs match.</td></tr>'
    return "".join(
        f'<tr id="run-{e(r.id)}">'
        f'<td><a href="/runs/{e(r.id)}"><code>{e(short(r.id))}</code></a></td>'
        f'<td><a href="/workflows/{e(r.workflow_id)}">{e(r.namespace)}/{e(r.name)}</a></td>'
        f"<td>{status(r.status)}</td><td>{e(r.trigger)}</td>"
        f"<td>{when(r.created_at)}</td><td>{when(r.scheduled_at)}</td>"
        f"<td>{run_duration(r, now)}</td></tr>"
        for r in runs
    )


def runs_filters(
    workflows: Sequence[Workflow],
    chosen_workflow: str,
    statuses: Iterable[RunStatus],
    trigger: str,
    after: str,
    before: str,
) -> str:
    options = '<option value="">any</option>' + "".join(
        f'<option value="{e(w.id)}"{" selected" if w.id == chosen_workflow else ""}>'
        f"{e(w.namespace)}/{e(w.name)}</option>"
        for w in workflows
    )
    chosen = set(statuses)
    boxes = "".join(
        f'<label class="check"><input type="checkbox" name="status" value="{e(s)}"'
        f"{' checked' if s in chosen else ''}> {e(s)}</label>"
        for s in RunStatus
    )
    triggers = '<option value="">any</option>' + "".join(
        f'<option value="{e(t)}"{" selected" if t == trigger else ""}>{e(t)}</option>'
        for t in RunTrigger
    )
    return (
        '<form method="get" action="/runs" class="filters" role="search">'
        f'<label>Workflow <select name="workflow">{options}</select></label>'
        f"<fieldset><legend>Status</legend>{boxes}</fieldset>"
        f'<label>Trigger <select name="trigger">{triggers}</select></label>'
        f'<label>Created after <input type="datetime-local" name="after" step="1"'
        f' value="{e(after)}"></label>'
        f'<label>Created before <input type="datetime-local" name="before" step="1"'
        f' value="{e(before)}"></label>'
        '<input type="hidden" name="tz" value="UTC" class="tz-field">'
        '<button type="submit">Filter</button> <a href="/runs">Clear</a></form>'
    )


def runs_body(filters: str, rows: str, next_url: str) -> str:
    more = f'<p><a href="{e(next_url)}" rel="next">Older runs</a></p>' if next_url else ""
    return (
        f"{filters}"
        '<table class="runs"><thead><tr><th scope="col">Run</th><th scope="col">Workflow</th>'
        '<th scope="col">Status</th><th scope="col">Trigger</th><th scope="col">Created</th>'
        '<th scope="col">Scheduled for</th><th scope="col">Duration</th></tr></thead>'
        f'<tbody id="runs-body" sse-swap="runs" hx-swap="innerHTML">{rows}</tbody></table>'
        f"{more}"
    )


# --- one run -------------------------------------------------------------------------------


def run_header(run: Run, csrf: str, now: datetime) -> str:
    facts = [
        ("Workflow", f'<a href="/workflows/{e(run.workflow_id)}">{e(run.namespace)}/'
         f"{e(run.name)}</a> version {e(run.version)}"),
        ("Status", status(run.status)),
        ("Trigger", e(run.trigger)),
        ("Created", when(run.created_at)),
        ("Scheduled for", when(run.scheduled_at)),
        ("Started", when(run.started_at)),
        ("Ended", when(run.ended_at)),
        ("Duration", run_duration(run, now)),
    ]  # fmt: skip
    if run.rerun_of:
        facts.append(("Re-runs", f'<a href="/runs/{e(run.rerun_of)}">{e(short(run.rerun_of))}</a>'))
    if run.cancel_reason:
        facts.append(("Cancelled", e(run.cancel_reason)))
    shown = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    error = f"<h2>Error</h2>{problem(run.error)}" if run.error is not None else ""
    return f'<dl class="facts">{shown}</dl>{run_actions(run, csrf)}{error}'


def run_actions(run: Run, csrf: str) -> str:
    token = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    buttons = []
    if not run.status.terminal and run.status != RunStatus.CANCELLING:
        buttons.append(
            f'<form method="post" action="/runs/{e(run.id)}/cancel">{token}'
            '<button type="submit" class="danger">Cancel run</button></form>'
        )
    if run.status.terminal:
        if run.status != RunStatus.COMPLETED:
            buttons.append(
                f'<form method="post" action="/runs/{e(run.id)}/rerun">{token}'
                '<input type="hidden" name="start" value="failure">'
                '<button type="submit">Re-run from failure</button></form>'
            )
        buttons.append(
            f'<form method="post" action="/runs/{e(run.id)}/rerun">{token}'
            '<input type="hidden" name="start" value="start">'
            '<button type="submit">Re-run from the start</button></form>'
        )
    return f'<div class="actions">{"".join(buttons)}</div>' if buttons else ""


def timeline_section(found: Timeline) -> str:
    if not found.bars:
        return '<p class="muted">No task instance has started yet.</p>'
    span = max((found.ended - found.began).total_seconds(), 0.0)
    rows = "".join(_bar_row(bar) for bar in found.bars)
    return (
        f'<p class="muted">From {when(found.began)} to {when(found.ended)}'
        f" ({e(duration(span))}).</p>"
        '<table class="timeline"><thead><tr><th scope="col">Task instance</th>'
        '<th scope="col">Status</th><th scope="col">Time</th><th scope="col">Details</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _bar_row(bar: Bar) -> str:
    task = bar.task
    x = round(bar.start * BAR_WIDTH, 1)
    width = max(round(bar.width * BAR_WIDTH, 1), 2.0)
    kind = "waiting" if bar.waiting else task.status
    label = task.name + (f" · attempt {task.attempt}" if task.attempt > 1 else "")
    if task.iteration:
        label += f" · iteration {'.'.join(str(i) for i in task.iteration)}"
    took = (
        duration((task.ended_at - task.started_at).total_seconds())
        if task.ended_at and task.started_at
        else ""
    )
    wait = f" · waits until {when(task.wake_at)}" if bar.waiting and task.wake_at else ""
    reused = ' <span class="muted">(reused)</span>' if task.reused else ""
    details = [f"<dt>key</dt><dd><code>{e(task.key)}</code></dd>"]
    details.append(f"<dt>kind</dt><dd>{e(task.kind)}{' ' + e(task.call) if task.call else ''}</dd>")
    if task.job_id:
        details.append(f"<dt>job id</dt><dd><code>{e(task.job_id)}</code></dd>")
    details.append(f"<dt>started</dt><dd>{when(task.started_at)}</dd>")
    details.append(f"<dt>ended</dt><dd>{when(task.ended_at)}</dd>")
    if task.input is not None:
        details.append(f"<dt>input</dt><dd>{json_block(task.input)}</dd>")
    if task.output is not None:
        details.append(f"<dt>output</dt><dd>{json_block(task.output)}</dd>")
    if task.error is not None:
        details.append(f"<dt>error</dt><dd>{problem(task.error)}</dd>")
    if task.reason:
        details.append(f"<dt>reason</dt><dd>{e(task.reason)}</dd>")
    return (
        f'<tr class="depth-{min(bar.depth, 12)}">'
        f'<th scope="row"><span class="name">{e(label)}</span>{reused}</th>'
        f"<td>{status('waiting' if bar.waiting else task.status)}</td>"
        f'<td class="bar-cell"><svg class="bar" viewBox="0 0 {BAR_WIDTH} 12"'
        ' preserveAspectRatio="none" role="img"'
        f' aria-label="{e(label)}: {e(kind)} {e(took)}">'
        f'<rect x="{x}" y="1" width="{width}" height="10" class="fill-{e(kind)}"></rect>'
        f'</svg><span class="took">{e(took)}{wait}</span></td>'
        f'<td><details id="d-{e(task.key)}"><summary>show</summary>'
        f'<dl class="facts">{"".join(details)}</dl></details></td></tr>'
    )


def spec_section(found: SpecLines) -> str:
    lines = "".join(
        f'<span class="line{" hl" if found.first <= n <= found.last else ""}"'
        f"{' id=failing' if n == found.first else ''}>{e(text) or ' '}</span>"
        for n, text in enumerate(found.lines, start=1)
    )
    said = (
        f"<p>The failing task is on lines {found.first}–{found.last}"
        ' (<a href="#failing">jump to it</a>).</p>'
        if found.first
        else ""
    )
    return f'{said}<pre class="spec"><code>{lines}</code></pre>'


def run_body(header: str, timeline: str, spec: str) -> str:
    return (
        f'<section id="run-header" sse-swap="header" hx-swap="innerHTML">{header}</section>'
        "<h2>Timeline</h2>"
        f'<section id="timeline" sse-swap="timeline" hx-swap="innerHTML">{timeline}</section>'
        f"<h2>Specification</h2>{spec}"
    )


# --- workflows and schedules ---------------------------------------------------------------


def decisions_table(decisions: Sequence[FireDecision]) -> str:
    if not decisions:
        return '<p class="muted">No decision yet.</p>'
    rows = "".join(
        f"<tr><td>{when(d.instant)}</td><td>{status(d.outcome)}</td><td>{e(d.reason)}</td>"
        f"<td>{when(d.decided_at)}</td><td>"
        + (f'<a href="/runs/{e(d.run_id)}">{e(short(d.run_id))}</a>' if d.run_id else "")
        + "</td></tr>"
        for d in decisions
    )
    return (
        '<table class="decisions"><thead><tr><th scope="col">Instant</th>'
        '<th scope="col">Decision</th><th scope="col">Reason</th><th scope="col">Decided</th>'
        f'<th scope="col">Run</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def schedule_block(view: ScheduleView) -> str:
    schedule = view.schedule
    policies = schedule.policies
    return (
        f'<h2><a href="/workflows/{e(schedule.workflow_id)}">'
        f"{e(schedule.namespace)}/{e(schedule.name)}</a></h2>"
        f"<p>{schedule_summary(view)}</p>"
        f"<p>Overlap {e(policies.overlap)}, catch-up {e(policies.catchup)}"
        f" within {e(duration(policies.catchup_window_s))}; last fired"
        f" {when(schedule.last_fire_at)}.</p>"
        f"{decisions_table(schedule.decisions)}"
    )


def trigger_form(workflow: Workflow, csrf: str, input_text: str, message: str) -> str:
    said = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    return (
        f'<form method="post" action="/workflows/{e(workflow.id)}/trigger" class="trigger">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        '<label for="run-input">Input (JSON, checked against the workflow\'s input.schema'
        " before a run is made)</label>"
        f'<textarea id="run-input" name="input" rows="6" spellcheck="false"'
        f' hx-post="/workflows/{e(workflow.id)}/check-input" hx-trigger="input changed delay:400ms"'
        ' hx-target="#input-check" hx-swap="innerHTML">'
        f"{e(input_text)}</textarea>"
        f'<div id="input-check" aria-live="polite">{said}</div>'
        '<button type="submit">Trigger a run</button></form>'
    )


def input_check(message: str) -> str:
    if message:
        return f'<p class="error" role="alert">{e(message)}</p>'
    return '<p class="ok">The input matches the workflow\'s input.schema.</p>'


def workflow_body(
    workflow: Workflow,
    schedule: ScheduleView | None,
    recent: Sequence[Run],
    trigger: str,
    spec: str,
) -> str:
    tags = ", ".join(e(t) for t in workflow.tags) or '<span class="muted">none</span>'
    decisions = (
        f"<p>{schedule_summary(schedule)}</p>{decisions_table(schedule.schedule.decisions)}"
        if schedule is not None
        else '<p class="muted">This workflow has no schedule.</p>'
    )
    return (
        '<dl class="facts">'
        f"<dt>Current version</dt><dd>{e(workflow.current_version)}</dd>"
        f"<dt>Status</dt><dd>{e(workflow.status)}</dd><dt>Tags</dt><dd>{tags}</dd>"
        f"<dt>Last runs</dt><dd>{run_cells(recent)}"
        f' <a href="/runs?{e(urlencode({"workflow": workflow.id}))}">all runs</a></dd></dl>'
        f"<h2>Trigger</h2>{trigger}<h2>Schedule</h2>{decisions}"
        f"<h2>Specification (version {e(workflow.version)})</h2>{spec}"
    )
