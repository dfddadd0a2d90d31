"""`schedule`, `unschedule`, `schedules list|get` and `backfill`."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format

from workflowd.api.client import to_dict
from workflowd.cli import runs as runs_cli
from workflowd.cli import times
from workflowd.cli.common import add_output_option, print_json, print_table, visible
from workflowd.cli.connect import add_connection_options, call, client_of, named
from workflowd.cli.refs import parse_input
from workflowd.cli.show import status
from workflowd.domain.units import plural, span
from workflowd.v1 import workflow_service_pb2 as pb

_OVERLAP = ("skip", "buffer-one", "allow-all", "cancel-other")
_CATCHUP = ("latest", "all", "none")
_REF_HELP = "NAMESPACE/NAME or workflow id"
_SCHEDULE_FLAGS = {"trigger_immediately": "--trigger-now"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schedule", help="activate a workflow's schedule, or change its policies")
    p.add_argument("ref", help=_REF_HELP)
    p.add_argument("--trigger-now", action="store_true", help="also start a run now")
    p.add_argument("--overlap", choices=_OVERLAP, help="while the previous run is active")
    p.add_argument("--catchup", choices=_CATCHUP, help="instants missed during downtime")
    p.add_argument("--catchup-window", help="how far back to catch up: 90s, 30m, 2h, 1d, PT1H")
    p.add_argument(
        "--input", help="the input of its runs as JSON, or @FILE (default: kept, {} at first)"
    )
    _common(p, cmd_schedule)

    p = sub.add_parser("unschedule", help="stop a workflow's schedule")
    p.add_argument("ref", help=_REF_HELP)
    _common(p, cmd_unschedule)

    schedules = sub.add_parser("schedules", help="list and show schedules")
    ssub = schedules.add_subparsers(dest="schedules_command", required=True, metavar="COMMAND")
    p = ssub.add_parser("list", help="list schedules, newest first")
    p.add_argument("--namespace", default="")
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    _common(p, cmd_list)
    p = ssub.add_parser("get", help="show a schedule: its next fires and recent decisions")
    p.add_argument("ref", help=_REF_HELP)
    _common(p, cmd_get)

    p = sub.add_parser("backfill", help="a run for every instant of the schedule in [start, end)")
    p.add_argument("ref", help=_REF_HELP)
    p.add_argument("--start", required=True, help="ISO-8601 instant (UTC unless it says)")
    p.add_argument("--end", required=True, help="ISO-8601 instant (UTC unless it says)")
    p.add_argument("--parallel", action="store_true", help="start every run at once")
    p.add_argument(
        "--rerun",
        choices=("none", "failed", "all"),
        default="none",
        help="instants that have a run: keep it (default), re-run it from its failure when it"
        " failed, or re-run every ended one",
    )
    p.add_argument(
        "--watch", action="store_true", help="follow the runs; exit 1 if any failed, 2 cancelled"
    )
    _common(p, cmd_backfill)


def _common(parser: argparse.ArgumentParser, handler: Any) -> None:
    add_connection_options(parser)
    add_output_option(parser)
    parser.set_defaults(handler=handler)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def cmd_schedule(args: argparse.Namespace) -> int:
    window = (
        times.duration(args.catchup_window, "--catchup-window") if args.catchup_window else None
    )
    run_input = None if args.input is None else parse_input(args.input)

    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.ScheduleWorkflowRequest(
                trigger_immediately=args.trigger_now, **await named(client, args.ref)
            )
            if args.overlap:
                name = "OVERLAP_POLICY_" + args.overlap.upper().replace("-", "_")
                request.overlap_policy = pb.OverlapPolicy.Value(name)
            if args.catchup:
                request.catchup_policy = pb.CatchupPolicy.Value(
                    f"CATCHUP_POLICY_{args.catchup.upper()}"
                )
            if window is not None:
                request.catchup_window.CopyFrom(window)
            if run_input is not None:
                request.input.CopyFrom(run_input)
            return await call(client, "ScheduleWorkflow", request, flags=_SCHEDULE_FLAGS)

    response = _run(go())
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    _show(response.schedule, recent=0)
    if response.run_id:
        print(f"run {visible(response.run_id)} started")
    return 0


def cmd_unschedule(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.UnscheduleWorkflowRequest(**await named(client, args.ref))
            return await call(client, "UnscheduleWorkflow", request)

    response = _run(go())
    if args.output == "json":
        print_json(to_dict(response))
    else:
        s = response.schedule
        print(visible(f"{s.namespace}/{s.name} unscheduled"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.ListSchedulesRequest(
                namespace=args.namespace, page_size=args.page_size, page_token=args.page_token
            )
            return await call(client, "ListSchedules", request)

    response = _run(go())
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    rows = [
        [
            f"{s.namespace}/{s.name}",
            _describe(s),
            "yes" if s.active else "no",
            times.utc(s.next_fire_at) if s.HasField("next_fire_at") else "-",
        ]
        for s in response.schedules
    ]
    print_table(["WORKFLOW", "SCHEDULE", "ACTIVE", "NEXT FIRE (UTC)"], rows)
    if response.next_page_token:
        print(f"more: --page-token {visible(response.next_page_token)}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.GetScheduleRequest(**await named(client, args.ref))
            return await call(client, "GetSchedule", request)

    response = _run(go())
    if args.output == "json":
        print_json(to_dict(response.schedule))
    else:
        _show(response.schedule, recent=20)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    start = times.timestamp(args.start, "--start")
    end = times.timestamp(args.end, "--end")

    async def go() -> int:
        async with client_of(args) as client:
            request = pb.BackfillWorkflowRequest(
                parallel=args.parallel, start_time=start, end_time=end,
                rerun=pb.RerunPolicy.Value(f"RERUN_POLICY_{args.rerun.upper()}"),
                **await named(client, args.ref),
            )  # fmt: skip
            response = await call(client, "BackfillWorkflow", request)
            if args.output == "json":
                print_json(to_dict(response))
            else:
                _show_backfill(response)
            if not args.watch:
                return 0
            codes = [
                await runs_cli.follow(client, run_id, args.output) for run_id in response.run_ids
            ]
            return max(codes, default=0)

    code: int = _run(go())
    return code


def _show_backfill(response: pb.BackfillWorkflowResponse) -> None:
    """`3 instants, 2 new runs`, then a row per instant: when, its run, whether it is new."""
    print(f"{plural(len(response.runs), 'instant')}, {plural(response.created, 'new run')}")
    rows = [
        [
            times.utc(r.scheduled_at),
            r.run_id,
            status(r.status),
            "yes" if r.created else "no",
        ]
        for r in response.runs
    ]
    if rows:
        print_table(["SCHEDULED FOR (UTC)", "RUN", "STATUS", "NEW"], rows)


def _show(s: pb.Schedule, recent: int) -> None:
    zone = ZoneInfo(s.timezone or "UTC")
    state = "active" if s.active else "stopped"
    print(visible(f"{s.namespace}/{s.name} version {s.version}") + f": {_describe(s)} ({state})")
    overlap = pb.OverlapPolicy.Name(s.overlap_policy).removeprefix("OVERLAP_POLICY_")
    catchup = pb.CatchupPolicy.Name(s.catchup_policy).removeprefix("CATCHUP_POLICY_")
    window = span(s.catchup_window.ToTimedelta().total_seconds())
    print(f"overlap {overlap}, catch-up {catchup} within {window}")
    given = json_format.MessageToDict(s.input) if s.HasField("input") else {}
    if given != {}:
        print(visible(f"input {json.dumps(given, ensure_ascii=False)}"))
    if s.next_fire_times:
        print(f"next fires ({visible(s.timezone or 'UTC')}):")
        for t in s.next_fire_times:
            local = t.ToDatetime(tzinfo=UTC).astimezone(zone)
            print(f"  {local.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    if recent and s.recent_decisions:
        print("recent decisions:")
        for d in list(s.recent_decisions)[:recent]:
            outcome = pb.FireOutcome.Name(d.outcome).removeprefix("FIRE_OUTCOME_").lower()
            run = f" run {d.run_id}" if d.run_id else ""
            print(f"  {times.utc(d.fire_time)}  {outcome:18}" + visible(f"{run}  {d.reason}"))


def _describe(s: pb.Schedule) -> str:
    if s.cron:
        zone = "" if s.timezone in ("", "UTC") else f"CRON_TZ={s.timezone} "
        return visible(f"cron {zone}{s.cron}")
    return f"every {span(s.every.ToTimedelta().total_seconds())}"
