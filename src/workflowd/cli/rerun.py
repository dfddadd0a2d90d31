"""`runs rerun`: redo an ended run from its failure, its start or a task, one run or every
run that matches (`--workflow REF --status failed --since T`)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from workflowd.api.client import Client, to_dict
from workflowd.cli import times
from workflowd.cli.common import CliError, add_output_option, print_json, visible
from workflowd.cli.connect import add_connection_options, call, client_of, find_run, named
from workflowd.cli.refs import parse_input
from workflowd.cli.show import status
from workflowd.domain.units import plural
from workflowd.v1 import workflow_service_pb2 as pb

_STATUSES = ("completed", "failed", "cancelled")


def register(runs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = runs.add_parser(
        "rerun",
        help="a new run of an ended run, reusing what it did before its failure (or a task)",
    )
    p.add_argument(
        "run_id",
        nargs="?",
        metavar="RUN",
        help="the run to re-run: its id or a unique start of it (or select several: --workflow)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--from-failure", action="store_true", help="replay up to its failure (the default)"
    )
    where.add_argument("--from-start", action="store_true", help="replay nothing")
    where.add_argument("--from", dest="from_ref", metavar="REF", help="replay up to this task")
    p.add_argument("--input", help="the re-run's input as JSON, or @FILE (default: the run's own)")
    p.add_argument("--workflow", default="", metavar="REF", help="every matching run of it")
    p.add_argument("--status", action="append", default=[], choices=_STATUSES)
    p.add_argument(
        "--since", help="with --workflow: runs created at or after an instant, or a duration ago"
    )
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_rerun)


def cmd_rerun(args: argparse.Namespace) -> int:
    if bool(args.run_id) == bool(args.workflow):
        raise CliError("runs rerun: name a run, or select runs with --workflow", exit_code=2)
    if args.run_id and (args.status or args.since):
        raise CliError("runs rerun: --status and --since select runs with --workflow", exit_code=2)
    start = "start" if args.from_start else (args.from_ref or "failure")

    async def go() -> list[pb.Run]:
        async with client_of(args) as client:
            if args.run_id:
                chosen = [await find_run(client, args.run_id)]
            else:
                chosen = await _selected(client, args)
            return [await _rerun(client, run_id, start, args.input) for run_id in chosen]

    made = asyncio.run(go())
    if args.output == "json":
        print_json([to_dict(run) for run in made])
        return 0
    for run in made:
        print(f"run {visible(run.id)} re-runs {visible(run.rerun_of)}: {status(run.status)}")
    if args.workflow:
        print(f"{plural(len(made), 'run')} re-run")
    return 0


async def _rerun(client: Client, run_id: str, start: str, given: str | None) -> pb.Run:
    request = pb.RerunRunRequest(run_id=run_id, start=start)
    if given is not None:
        request.input.CopyFrom(parse_input(given))
    run: pb.Run = (await call(client, "RerunRun", request)).run
    return run


async def _selected(client: Client, args: argparse.Namespace) -> list[str]:
    """The runs of the workflow that match and were not re-run already (their re-run stands
    for them: a night that failed twice is re-run once, from its latest run), oldest first:
    a night's failures are re-run in the order they happened."""
    wanted = {pb.RunStatus.Value(f"RUN_STATUS_{s.upper()}") for s in args.status or ["failed"]}
    # Every run since the bound, whatever its status: a re-run comes after what it re-runs.
    request = pb.ListRunsRequest(**await named(client, args.workflow), page_size=1000)
    if args.since:
        # The API's bound is exclusive; --since includes the instant it names.
        since = times.since(args.since, "--since", datetime.now(UTC))
        request.created_after.FromDatetime(since - timedelta(microseconds=1))
    runs: list[pb.Run] = []
    while True:
        page: Any = await call(client, "ListRuns", request)
        runs += page.runs
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    redone = {run.rerun_of for run in runs if run.rerun_of}
    return [run.id for run in reversed(runs) if run.status in wanted and run.id not in redone]
