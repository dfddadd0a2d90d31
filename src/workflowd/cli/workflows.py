"""`validate`, `apply` and `workflows list|get|archive`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from workflowd.api.client import to_dict
from workflowd.cli import runs as runs_cli
from workflowd.cli.common import CliError, add_output_option, print_json, visible
from workflowd.cli.connect import add_connection_options, call, client_of, workflow_id
from workflowd.cli.refs import parse_input, workflow_ref
from workflowd.v1 import workflow_service_pb2 as pb


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a workflow file offline")
    p.add_argument("-f", "--file", required=True, type=Path, help="workflow YAML ('-' for stdin)")
    add_output_option(p)
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("apply", help="create a workflow, or a new version of one")
    p.add_argument("-f", "--file", required=True, type=Path, help="workflow YAML ('-' for stdin)")
    p.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    p.add_argument("--trigger", action="store_true", help="start a run right after")
    p.add_argument("--schedule", action="store_true", help="activate its schedule right after")
    p.add_argument("--input", help="run input as JSON (with --trigger)")
    p.add_argument("--watch", action="store_true", help="follow the run (with --trigger)")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_apply)

    wf = sub.add_parser("workflows", help="list, show and archive workflows")
    wsub = wf.add_subparsers(dest="workflows_command", required=True, metavar="COMMAND")
    p = wsub.add_parser("list", help="list workflows, newest first")
    p.add_argument("--namespace", default="")
    p.add_argument("--tag", default="")
    p.add_argument("--status", choices=("active", "archived"))
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_list)
    p = wsub.add_parser("get", help="show a workflow (REF: id or namespace/name)")
    p.add_argument("ref")
    p.add_argument("--version", default="")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_get)
    p = wsub.add_parser("archive", help="archive a workflow (REF: id or namespace/name)")
    p.add_argument("ref")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_archive)


def _read(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc


def cmd_validate(args: argparse.Namespace) -> int:
    from workflowd.spec import validate  # the language loads only for the command that needs it

    result = validate(_read(args.file))
    if args.output == "json":
        print_json(
            {
                "valid": result.valid,
                "diagnostics": [
                    {
                        "message": d.message,
                        "pointer": d.pointer,
                        "line": d.line,
                        "column": d.column,
                        "severity": d.severity.value,
                    }
                    for d in result.diagnostics
                ],
            }
        )
    else:
        for d in result.diagnostics:
            print(visible(d.render(str(args.file))))
        if result.valid:
            print(f"{args.file}: valid")
    return 0 if result.valid else 1


def cmd_apply(args: argparse.Namespace) -> int:
    return asyncio.run(_apply(args))


async def _apply(args: argparse.Namespace) -> int:
    request = pb.CreateWorkflowRequest(
        specification=_read(args.file),
        tags=args.tag,
        trigger_immediately=args.trigger,
        schedule_immediately=args.schedule,
    )
    if args.input is not None:
        request.input.CopyFrom(parse_input(args.input))
    async with client_of(args) as client:
        response = await call(client, "CreateWorkflow", request, str(args.file))
        if args.output == "json":
            print_json(to_dict(response))
        else:
            w = response.workflow
            verb = "created" if response.created else "unchanged"
            print(visible(f"{w.namespace}/{w.name} version {w.version} {verb} (id {w.id})"))
            if args.schedule:
                print("schedule active: `workflowd schedules get` shows its next fires")
            if response.run_id:
                print(f"run {visible(response.run_id)} started")
        if response.run_id and args.watch:
            return await runs_cli.follow(client, response.run_id, args.output)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    status = {"active": pb.WORKFLOW_STATUS_ACTIVE, "archived": pb.WORKFLOW_STATUS_ARCHIVED}
    request = pb.ListWorkflowsRequest(
        namespace=args.namespace,
        tag=args.tag,
        status=status.get(args.status or "", pb.WORKFLOW_STATUS_UNSPECIFIED),
        page_size=args.page_size,
        page_token=args.page_token,
    )
    response = asyncio.run(_once(args, "ListWorkflows", request))
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    print(f"{'ID':36}  {'NAMESPACE/NAME':40}  {'VERSION':10}  STATUS")
    for w in response.workflows:
        status_name = pb.WorkflowStatus.Name(w.status).removeprefix("WORKFLOW_STATUS_").lower()
        name, version = visible(w.namespace + "/" + w.name), visible(w.version)
        print(f"{visible(w.id):36}  {name:40}  {version:10}  {status_name}")
    if response.next_page_token:
        print(f"more: --page-token {visible(response.next_page_token)}")
    return 0


async def _once(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    async with client_of(args) as client:
        return await call(client, rpc, request)


def cmd_get(args: argparse.Namespace) -> int:
    request = pb.GetWorkflowRequest(version=args.version, **workflow_ref(args.ref))
    response = asyncio.run(_once(args, "GetWorkflow", request))
    w = response.workflow
    if args.output == "json":
        print_json(to_dict(w))
        return 0
    print(visible(f"{w.namespace}/{w.name}  id {w.id}"))
    print(
        visible(f"version {w.version} (current {w.current_version}; all: {', '.join(w.versions)})")
    )
    print(f"status {pb.WorkflowStatus.Name(w.status).removeprefix('WORKFLOW_STATUS_').lower()}")
    if w.tags:
        print(visible(f"tags {', '.join(w.tags)}"))
    print("---")
    print(visible(w.specification.rstrip("\n"), multiline=True))
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    async def archive() -> Any:
        async with client_of(args) as client:
            request = pb.ArchiveWorkflowRequest(id=await workflow_id(client, args.ref))
            return await call(client, "ArchiveWorkflow", request)

    response = asyncio.run(archive())
    if args.output == "json":
        print_json(to_dict(response.workflow))
    else:
        archived = response.workflow
        print(visible(f"{archived.namespace}/{archived.name} archived"))
    return 0
