"""`trigger` and `runs list|get|watch|cancel`: one run followed live, or the events of many."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from workflowd.api.client import Client, ClientError, to_dict
from workflowd.cli import rerun, times
from workflowd.cli.common import (
    CliError,
    add_output_option,
    print_json,
    print_json_line,
    print_table,
    visible,
)
from workflowd.cli.connect import add_connection_options, call, client_of, find_run, named
from workflowd.cli.live import LiveTable, TaskTable, event_line, resuming, ticking, watch_line
from workflowd.cli.refs import RefFields, parse_input
from workflowd.cli.show import duration, show_run, show_summary, status, when
from workflowd.v1 import workflow_service_pb2 as pb

EXIT_FOR_STATUS = {
    pb.RUN_STATUS_COMPLETED: 0,
    pb.RUN_STATUS_FAILED: 1,
    pb.RUN_STATUS_CANCELLED: 2,
}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
_STATUSES = ("pending", "running", "cancelling", "completed", "failed", "cancelled")
_RUN_HELP = "the run's id, or the start of it (at least 4 characters)"
_RUN_COLUMNS = [
    "RUN", "WORKFLOW", "VERSION", "STATUS", "TRIGGER", "CREATED", "SCHEDULED FOR", "DURATION",
]  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trigger", help="start a run (REF: NAMESPACE/NAME or workflow id)")
    p.add_argument("ref")
    p.add_argument("--input", help="run input as JSON, or @FILE (@- reads stdin)")
    p.add_argument("--version", default="", help="a stored version (default: current)")
    p.add_argument("--idempotency-key", default="", help="the same key returns the same run")
    p.add_argument(
        "--watch",
        action="store_true",
        help="follow the run; exit 0 completed, 1 failed, 2 cancelled",
    )
    _common(p, cmd_trigger)

    runs = sub.add_parser("runs", help="list, show, watch and cancel runs")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("list", help="list runs, newest first (times in UTC)")
    p.add_argument("--workflow", default="", metavar="REF", help="NAMESPACE/NAME or workflow id")
    p.add_argument("--namespace", default="", metavar="NS", help="runs of this namespace")
    _status_option(p, "runs in this status")
    p.add_argument("--since", help="created at or after: an instant, or a duration ago (24h)")
    p.add_argument("--until", help="created before: an instant, or a duration ago (1h)")
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    _common(p, cmd_list)
    p = rsub.add_parser(
        "watch",
        help="follow a run until it ends, or with --all the events of every run until Ctrl-C",
    )
    p.add_argument("run_id", nargs="?", metavar="RUN", help="the run to follow (not with --all)")
    p.add_argument("--all", action="store_true", help="every run's events, one line each")
    p.add_argument("--workflow", default="", metavar="REF", help="with --all: of this workflow")
    p.add_argument("--namespace", default="", metavar="NS", help="with --all: in this namespace")
    _status_option(p, "with --all: events that leave a run in this status")
    _common(p, cmd_watch)
    p = rsub.add_parser("get", help="show a run: times, input, task outputs and errors")
    p.add_argument("run_id", metavar="RUN", help=_RUN_HELP)
    _common(p, cmd_get)
    p = rsub.add_parser("cancel", help="cancel a run; exit 1 if it had ended already")
    p.add_argument("run_id", metavar="RUN", help=_RUN_HELP)
    p.add_argument("--reason", default="", help="recorded with the cancellation")
    _common(p, cmd_cancel)
    p = rsub.add_parser("delete", help="delete an ended run with its tasks and events")
    p.add_argument("run_id", metavar="RUN")
    _common(p, cmd_delete)
    rerun.register(rsub)


def _status_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        type=_status_names,
        metavar="STATUS",
        help=f"{text}: {', '.join(_STATUSES)} (repeatable, or comma-separated)",
    )


def _status_names(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _STATUSES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: a run status is one of {', '.join(_STATUSES)}")
    return names


def _common(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    add_connection_options(parser)
    add_output_option(parser)
    parser.set_defaults(handler=handler)


async def _get_run(client: Client, run_id: str) -> pb.Run:
    run: pb.Run = (await call(client, "GetRun", pb.GetRunRequest(run_id=run_id))).run
    return run


def _statuses(groups: list[list[str]]) -> list[pb.RunStatus.ValueType]:
    names = dict.fromkeys(name for group in groups for name in group)
    return [pb.RunStatus.Value(f"RUN_STATUS_{name.upper()}") for name in names]


def _show(run: pb.Run, output: str) -> None:
    if output == "json":
        print_json(to_dict(run))
    else:
        show_run(run)


def cmd_trigger(args: argparse.Namespace) -> int:
    run_input = None if args.input is None else parse_input(args.input)

    async def trigger() -> int:
        async with client_of(args) as client:
            request = pb.TriggerWorkflowRequest(
                version=args.version,
                idempotency_key=args.idempotency_key,
                **await named(client, args.ref),
            )
            if run_input is not None:
                request.input.CopyFrom(run_input)
            run = (await call(client, "TriggerWorkflow", request)).run
            if args.watch:
                return await follow(client, run.id, args.output)
            _show(run, args.output)
        return 0

    return asyncio.run(trigger())


async def _runs_of(client: Client, args: argparse.Namespace) -> RefFields:
    """The request fields of `--workflow REF` or `--namespace NS`."""
    if args.workflow and args.namespace:
        raise CliError("--workflow names a namespace already: give --workflow or --namespace", 2)
    if args.workflow:
        return await named(client, args.workflow)
    return {"namespace": args.namespace} if args.namespace else {}


def cmd_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)

    async def list_runs() -> Any:
        async with client_of(args) as client:
            request = pb.ListRunsRequest(
                statuses=_statuses(args.status),
                page_size=args.page_size,
                page_token=args.page_token,
                **await _runs_of(client, args),
            )
            if args.since:
                # The API's bound is exclusive; --since includes the instant it names.
                since = times.since(args.since, "--since", now) - timedelta(microseconds=1)
                request.created_after.FromDatetime(since)
            if args.until:
                request.created_before.FromDatetime(times.since(args.until, "--until", now))
            return await call(client, "ListRuns", request)

    response = asyncio.run(list_runs())
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    print_table(_RUN_COLUMNS, [_run_row(r) for r in response.runs])
    if response.next_page_token:
        print(f"more: --page-token {visible(response.next_page_token)}")
    return 0


def _run_row(r: pb.Run) -> list[str]:
    started = when(r.started_at, r.HasField("started_at"))
    ended = when(r.ended_at, r.HasField("ended_at"))
    return [
        r.id,
        f"{r.namespace}/{r.name}",
        r.version,
        status(r.status),
        pb.RunTrigger.Name(r.trigger).removeprefix("RUN_TRIGGER_").lower(),
        times.utc(r.created_at),
        times.utc(r.scheduled_at) if r.HasField("scheduled_at") else "-",
        duration(started, ended),
    ]


def cmd_get(args: argparse.Namespace) -> int:
    async def get() -> pb.Run:
        async with client_of(args) as client:
            return await _get_run(client, await find_run(client, args.run_id))

    _show(asyncio.run(get()), args.output)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    async def delete() -> Any:
        async with client_of(args) as client:
            run_id = await find_run(client, args.run_id)
            return await call(client, "DeleteRun", pb.DeleteRunRequest(run_id=run_id))

    response = asyncio.run(delete())
    if args.output == "json":
        print_json(to_dict(response))
    else:
        print(f"run {response.run_id} deleted")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    async def cancel() -> pb.Run:
        async with client_of(args) as client:
            found = await _get_run(client, await find_run(client, args.run_id))
            if found.status in EXIT_FOR_STATUS:
                raise CliError(f"run {found.id} had {_ended(found)}: there is nothing to cancel")
            request = pb.CancelRunRequest(run_id=found.id, reason=args.reason)
            run: pb.Run = (await call(client, "CancelRun", request)).run
            return run

    run = asyncio.run(cancel())
    if args.output == "json":
        print_json(to_dict(run))
    else:
        print(f"run {run.id}: {status(run.status)}")
    if run.status in (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED):
        raise CliError(f"run {run.id} had {_ended(run)} before the cancel reached it")
    return 0


def _ended(run: pb.Run) -> str:
    """`completed`, `failed` or `been cancelled`, and when."""
    verb = "been cancelled" if run.status == pb.RUN_STATUS_CANCELLED else status(run.status)
    at = f" at {times.utc(run.ended_at)} UTC" if run.HasField("ended_at") else ""
    return verb + at


def cmd_watch(args: argparse.Namespace) -> int:
    if args.all == bool(args.run_id):
        raise CliError("runs watch: name a run, or --all for every run's events", exit_code=2)
    if not args.all and (args.workflow or args.namespace or args.status):
        raise CliError("runs watch: --workflow, --namespace and --status need --all", exit_code=2)

    async def watch() -> int:
        async with client_of(args) as client:
            if not args.all:
                return await follow(client, await find_run(client, args.run_id), args.output)
            await _watch_all(client, args)
        return 0

    return asyncio.run(watch())


class _Names:
    """NAMESPACE/NAME of each workflow id, read once per workflow."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._known: dict[str, str] = {}

    async def of(self, workflow_id: str) -> str:
        if workflow_id not in self._known:
            request = pb.GetWorkflowRequest(workflow_id=workflow_id)
            try:
                w = (await self._client.call("GetWorkflow", request)).workflow
                self._known[workflow_id] = f"{w.namespace}/{w.name}"
            except ClientError:
                return workflow_id  # unreadable now; asked again at its next event
        return self._known[workflow_id]


async def _watch_all(client: Client, args: argparse.Namespace) -> None:
    """Every matching run's events, one line (or JSON Lines record) each, until Ctrl-C."""
    request = pb.WatchRunsRequest(statuses=_statuses(args.status), **await _runs_of(client, args))
    names = _Names(client)

    def open_stream(after: int, subscribed: Callable[[], None]) -> AsyncIterator[pb.RunEvent]:
        request.after_global_seq = after
        return client.watch_runs(request, subscribed)

    def announce() -> None:
        # On stderr, so that stdout holds only events; it also tells a script (or a test) the
        # moment from which no event can be missed.
        print("workflowd: watching runs; Ctrl-C stops", file=sys.stderr, flush=True)

    async for event in resuming(open_stream, lambda e: e.global_seq, announce):
        if args.output == "json":
            print_json_line(to_dict(event))
        else:
            print(watch_line(event, await names.of(event.workflow_id)), flush=True)


async def follow(client: Client, run_id: str, output: str) -> int:
    """Stream the run's events until it ends; the exit code reflects its outcome."""
    try:
        await _follow_events(client, run_id, output)
    except asyncio.CancelledError:
        # asyncio.run turns Ctrl-C into cancelling this task. Say, in the one line a person
        # reads, that only the watch stopped: the run goes on in the daemon.
        raise CliError(
            f"interrupted; run {run_id} goes on (`workflowd runs cancel {run_id}` stops it)",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    run = await _get_run(client, run_id)
    if output == "text":
        show_summary(run)
    return EXIT_FOR_STATUS.get(run.status, 1)


async def _follow_events(client: Client, run_id: str, output: str) -> None:
    events = resuming(lambda after, _: client.watch_run(run_id, after), lambda e: e.seq)
    if output == "json":
        async for event in events:
            print_json_line(to_dict(event))
        return
    if not sys.stdout.isatty():
        async for event in events:
            print(event_line(event), flush=True)
        return
    table = TaskTable(await _get_run(client, run_id))
    live = LiveTable(table, sys.stdout)
    live.redraw()
    async with ticking(live.redraw):
        async for event in events:
            table.apply(event)
            live.redraw()
