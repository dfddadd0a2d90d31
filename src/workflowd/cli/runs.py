"""`trigger` and `runs list|get|watch|cancel`: one run followed live, or the events of many."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Any

from workflowd.api.client import Client, to_dict
from workflowd.cli import rerun
from workflowd.cli.common import (
    CliError,
    add_output_option,
    print_json,
    print_json_line,
    visible,
)
from workflowd.cli.connect import add_connection_options, call, client_of, workflow_id
from workflowd.cli.live import LiveTable, TaskTable, event_line, resuming, ticking, watch_line
from workflowd.cli.refs import parse_input, workflow_ref
from workflowd.cli.show import show_run, show_summary, status
from workflowd.v1 import workflow_service_pb2 as pb

EXIT_FOR_STATUS = {
    pb.RUN_STATUS_COMPLETED: 0,
    pb.RUN_STATUS_FAILED: 1,
    pb.RUN_STATUS_CANCELLED: 2,
}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
_STATUSES = ("pending", "running", "cancelling", "completed", "failed", "cancelled")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trigger", help="start a run (REF: workflow id or namespace/name)")
    p.add_argument("ref")
    p.add_argument("--input", help="run input as JSON")
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
    p = rsub.add_parser("list", help="list runs, newest first")
    p.add_argument("--workflow", default="", help="workflow id or namespace/name")
    p.add_argument("--status", action="append", default=[], choices=_STATUSES)
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    _common(p, cmd_list)
    p = rsub.add_parser(
        "watch",
        help="follow a run until it ends, or with --all the events of every run until Ctrl-C",
    )
    p.add_argument("run_id", nargs="?", help="the run to follow (not with --all)")
    p.add_argument("--all", action="store_true", help="every run's events, one line each")
    p.add_argument("--workflow", default="", metavar="REF", help="with --all: of this workflow")
    p.add_argument("--namespace", default="", metavar="NS", help="with --all: in this namespace")
    p.add_argument(
        "--status",
        action="append",
        default=[],
        choices=_STATUSES,
        help="with --all: events that leave a run in this status (repeatable)",
    )
    _common(p, cmd_watch)
    for name, handler, text in (
        ("get", cmd_get, "show a run: times, input, task outputs and errors"),
        ("cancel", cmd_cancel, "cancel a run"),
    ):
        p = rsub.add_parser(name, help=text)
        p.add_argument("run_id")
        _common(p, handler)
    rerun.register(rsub)


def _common(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    add_connection_options(parser)
    add_output_option(parser)
    parser.set_defaults(handler=handler)


async def _get_run(client: Client, run_id: str) -> pb.Run:
    run: pb.Run = (await call(client, "GetRun", pb.GetRunRequest(run_id=run_id))).run
    return run


def _statuses(names: list[str]) -> list[pb.RunStatus.ValueType]:
    return [pb.RunStatus.Value(f"RUN_STATUS_{name.upper()}") for name in names]


def _show(run: pb.Run, output: str) -> None:
    if output == "json":
        print_json(to_dict(run))
    else:
        show_run(run)


def cmd_trigger(args: argparse.Namespace) -> int:
    async def trigger() -> int:
        ref = workflow_ref(args.ref, id_field="workflow_id")
        request = pb.TriggerWorkflowRequest(
            workflow_id=ref.get("workflow_id", ""),
            namespace=ref.get("namespace", ""),
            name=ref.get("name", ""),
            version=args.version,
            idempotency_key=args.idempotency_key,
        )
        if args.input is not None:
            request.input.CopyFrom(parse_input(args.input))
        async with client_of(args) as client:
            run = (await call(client, "TriggerWorkflow", request)).run
            if args.watch:
                return await follow(client, run.id, args.output)
            _show(run, args.output)
        return 0

    return asyncio.run(trigger())


def cmd_list(args: argparse.Namespace) -> int:
    async def list_runs() -> Any:
        async with client_of(args) as client:
            request = pb.ListRunsRequest(
                workflow_id=await workflow_id(client, args.workflow) if args.workflow else "",
                statuses=_statuses(args.status),
                page_size=args.page_size,
                page_token=args.page_token,
            )
            return await call(client, "ListRuns", request)

    response = asyncio.run(list_runs())
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    print(f"{'RUN':36}  {'WORKFLOW':32}  {'VERSION':8}  {'STATUS':10}  CREATED")
    for r in response.runs:
        created = r.created_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
        name, version = visible(r.namespace + "/" + r.name), visible(r.version)
        print(f"{visible(r.id):36}  {name:32}  {version:8}  {status(r.status):10}  {created}")
    if response.next_page_token:
        print(f"more: --page-token {visible(response.next_page_token)}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    async def get() -> pb.Run:
        async with client_of(args) as client:
            return await _get_run(client, args.run_id)

    _show(asyncio.run(get()), args.output)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    async def cancel() -> Any:
        async with client_of(args) as client:
            return (await call(client, "CancelRun", pb.CancelRunRequest(run_id=args.run_id))).run

    run = asyncio.run(cancel())
    if args.output == "json":
        print_json(to_dict(run))
    else:
        print(f"run {visible(run.id)}: {status(run.status)}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    if args.all == bool(args.run_id):
        raise CliError("runs watch: name a run, or --all for every run's events", exit_code=2)
    if not args.all and (args.workflow or args.namespace or args.status):
        raise CliError("runs watch: --workflow, --namespace and --status need --all", exit_code=2)

    async def watch() -> int:
        async with client_of(args) as client:
            if not args.all:
                return await follow(client, args.run_id, args.output)
            await _watch_all(client, args)
        return 0

    return asyncio.run(watch())


async def _watch_all(client: Client, args: argparse.Namespace) -> None:
    """Every matching run's events, one line (or JSON Lines record) each, until Ctrl-C."""
    request = pb.WatchRunsRequest(
        workflow_id=await workflow_id(client, args.workflow) if args.workflow else "",
        namespace=args.namespace,
        statuses=_statuses(args.status),
    )

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
            print(watch_line(event), flush=True)


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
