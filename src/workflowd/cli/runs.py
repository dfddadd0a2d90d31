"""`trigger` and `runs list|get|watch|cancel`, with a live task table for people."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from workflowd.api.client import Client, ClientError, to_dict
from workflowd.cli.common import CliError, add_address_option, add_output_option, print_json
from workflowd.cli.refs import parse_input, workflow_ref
from workflowd.v1 import workflow_service_pb2 as pb

EXIT_FOR_STATUS = {
    pb.RUN_STATUS_COMPLETED: 0,
    pb.RUN_STATUS_FAILED: 1,
    pb.RUN_STATUS_CANCELLED: 2,
}


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
    add_address_option(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_trigger)

    runs = sub.add_parser("runs", help="list, show, watch and cancel runs")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("list", help="list runs, newest first")
    p.add_argument("--workflow", default="", help="workflow id or namespace/name")
    p.add_argument(
        "--status",
        action="append",
        default=[],
        choices=("pending", "running", "cancelling", "completed", "failed", "cancelled"),
    )
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    add_address_option(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_list)
    for name, handler, text in (
        ("get", cmd_get, "show a run and its tasks"),
        ("watch", cmd_watch, "follow a run until it ends"),
        ("cancel", cmd_cancel, "cancel a run"),
    ):
        p = rsub.add_parser(name, help=text)
        p.add_argument("run_id")
        add_address_option(p)
        add_output_option(p)
        p.set_defaults(handler=handler)


async def call(client: Client, rpc: str, request: Any) -> Any:
    try:
        return await client.call(rpc, request)
    except ClientError as exc:
        detail = "".join(f"\n  {field}: {why}" for field, why in exc.violations)
        raise CliError(exc.message + detail) from exc


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
        async with Client(args.address) as client:
            run = (await call(client, "TriggerWorkflow", request)).run
            if args.watch:
                return await follow(client, run.id, args.output)
            _show_run(run, args.output)
        return 0

    return asyncio.run(trigger())


def cmd_list(args: argparse.Namespace) -> int:
    async def list_runs() -> Any:
        async with Client(args.address) as client:
            workflow_id = ""
            if args.workflow:
                ref = workflow_ref(args.workflow)
                got = await call(client, "GetWorkflow", pb.GetWorkflowRequest(**ref))
                workflow_id = got.workflow.id
            request = pb.ListRunsRequest(
                workflow_id=workflow_id,
                statuses=[pb.RunStatus.Value(f"RUN_STATUS_{s.upper()}") for s in args.status],
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
        print(
            f"{r.id:36}  {r.namespace + '/' + r.name:32}  {r.version:8}  "
            f"{_status(r.status):10}  {created}"
        )
    if response.next_page_token:
        print(f"more: --page-token {response.next_page_token}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    async def get() -> Any:
        async with Client(args.address) as client:
            return (await call(client, "GetRun", pb.GetRunRequest(run_id=args.run_id))).run

    _show_run(asyncio.run(get()), args.output)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    async def cancel() -> Any:
        async with Client(args.address) as client:
            return (await call(client, "CancelRun", pb.CancelRunRequest(run_id=args.run_id))).run

    run = asyncio.run(cancel())
    if args.output == "json":
        print_json(to_dict(run))
    else:
        print(f"run {run.id}: {_status(run.status)}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    async def watch() -> int:
        async with Client(args.address) as client:
            return await follow(client, args.run_id, args.output)

    return asyncio.run(watch())


async def follow(client: Client, run_id: str, output: str) -> int:
    """Stream the run's events until it ends; the exit code reflects its outcome."""
    table = TaskTable((await call(client, "GetRun", pb.GetRunRequest(run_id=run_id))).run)
    live = output == "text" and sys.stdout.isatty()
    after = 0
    while True:
        try:
            async for event in client.watch_run(run_id, after):
                after = event.seq
                table.apply(event)
                if output == "json":
                    print_json(to_dict(event))
                elif live:
                    table.redraw()
                else:
                    print(table.line(event), flush=True)
        except ClientError as exc:
            if exc.code != "UNAVAILABLE":
                raise CliError(exc.message) from exc
            await asyncio.sleep(1.0)  # the daemon is restarting: resume from `after`
            continue
        break
    run = (await call(client, "GetRun", pb.GetRunRequest(run_id=run_id))).run
    if output == "text":
        _show_summary(run)
    return EXIT_FOR_STATUS.get(run.status, 1)


def _status(value: pb.RunStatus.ValueType) -> str:
    return pb.RunStatus.Name(value).removeprefix("RUN_STATUS_").lower()


def _task_status(value: pb.TaskStatus.ValueType) -> str:
    return pb.TaskStatus.Name(value).removeprefix("TASK_STATUS_").lower()


def _when(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


@dataclass
class _Row:
    name: str
    status: pb.TaskStatus.ValueType
    job_id: str
    started: datetime | None
    ended: datetime | None


class TaskTable:
    """The run's tasks with status, job id and elapsed time, updated from events."""

    def __init__(self, run: pb.Run) -> None:
        self.run_id = run.id
        self.status = run.status
        self.rows = [
            _Row(
                t.name,
                t.status,
                t.job_id,
                _when(t.started_at, t.HasField("started_at")),
                _when(t.ended_at, t.HasField("ended_at")),
            )
            for t in run.tasks
        ]
        self._drawn = 0

    def apply(self, event: pb.RunEvent) -> None:
        self.status = event.run_status
        if event.task_index < 0 or event.task_index >= len(self.rows):
            return
        row = self.rows[event.task_index]
        row.status = event.task_status
        row.job_id = event.job_id or row.job_id
        when = event.time.ToDatetime(tzinfo=UTC)
        if event.type == pb.RUN_EVENT_TYPE_TASK_STARTED:
            row.started = when
        elif event.task_status not in (pb.TASK_STATUS_RUNNING, pb.TASK_STATUS_PENDING):
            row.ended = when

    def line(self, event: pb.RunEvent) -> str:
        kind = pb.RunEventType.Name(event.type).removeprefix("RUN_EVENT_TYPE_").lower()
        task = f" {event.task_name}" if event.task_name else ""
        job = f" job {event.job_id}" if event.job_id else ""
        return f"#{event.seq} {kind}{task}{job} (run {_status(event.run_status)})"

    def redraw(self) -> None:
        out = sys.stdout
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F\x1b[J")
        lines = [
            f"run {self.run_id}  {_status(self.status)}",
            f"  {'TASK':28} {'STATUS':10} {'JOB':36} ELAPSED",
        ]
        now = datetime.now(UTC)
        for row in self.rows:
            elapsed = ""
            if row.started is not None:
                elapsed = f"{((row.ended or now) - row.started).total_seconds():7.1f}s"
            lines.append(
                f"  {row.name:28} {_task_status(row.status):10} {row.job_id or '-':36} {elapsed}"
            )
        out.write("\n".join(lines) + "\n")
        out.flush()
        self._drawn = len(lines)


def _show_run(run: pb.Run, output: str) -> None:
    if output == "json":
        print_json(to_dict(run))
        return
    print(f"run {run.id}  {run.namespace}/{run.name} version {run.version}  {_status(run.status)}")
    for t in run.tasks:
        print(f"  {t.name:28} {_task_status(t.status):10} {t.job_id or '-'}")
    _show_error(run)


def _show_summary(run: pb.Run) -> None:
    print(f"run {run.id} {_status(run.status)}")
    _show_error(run)


def _show_error(run: pb.Run) -> None:
    if run.HasField("error") and run.error.title:
        print(f"error: {run.error.title} at {run.error.instance or '/'}")
        if run.error.detail:
            print(f"  {run.error.detail}")
