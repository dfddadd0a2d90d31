"""`validate`, `apply` and `workflows list|get|export|archive`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from workflowd.api.client import Client, ClientError, to_dict
from workflowd.cli import runs as runs_cli
from workflowd.cli.common import (
    CliError,
    add_output_option,
    print_json,
    print_json_line,
    print_table,
    visible,
)
from workflowd.cli.connect import add_connection_options, call, client_of, explain, named
from workflowd.cli.refs import parse_input
from workflowd.domain.diagnostics import Diagnostic
from workflowd.domain.units import plural
from workflowd.v1 import workflow_service_pb2 as pb

_APPLY_FLAGS = {
    "trigger_immediately": "--trigger",
    "schedule_immediately": "--schedule",
    "schedule_input": "--schedule-input",
}
_FILES_HELP = "workflow YAML: a file, a directory (its *.yaml and *.yml), '-' for stdin; repeatable"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check workflow files offline")
    p.add_argument("-f", "--file", required=True, action="append", type=Path, help=_FILES_HELP)
    add_output_option(p)
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("apply", help="create workflows, or new versions of them")
    p.add_argument("-f", "--file", required=True, action="append", type=Path, help=_FILES_HELP)
    p.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    p.add_argument("--trigger", action="store_true", help="start a run right after")
    p.add_argument("--schedule", action="store_true", help="activate its schedule right after")
    p.add_argument("--input", help="run input as JSON, or @FILE (with --trigger)")
    p.add_argument(
        "--schedule-input", help="the schedule's runs' input as JSON, or @FILE (with --schedule)"
    )
    p.add_argument("--watch", action="store_true", help="follow the run (with --trigger)")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_apply)

    _register_workflows(sub)


def _register_workflows(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wf = sub.add_parser("workflows", help="list, show, export and archive workflows")
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
    p = wsub.add_parser("get", help="show a workflow (REF: NAMESPACE/NAME or id)")
    p.add_argument("ref")
    p.add_argument("--version", default="")
    add_connection_options(p)
    add_output_option(p, yaml=True)
    p.set_defaults(handler=cmd_get)
    p = wsub.add_parser(
        "export",
        help="print a workflow's specification exactly as stored, or with --all write every "
        "active workflow's into a directory (`apply -f DIR` reads them back)",
    )
    p.add_argument("ref", nargs="?", help="NAMESPACE/NAME or id (not with --all)")
    p.add_argument("--version", default="", help="a stored version (default: current)")
    p.add_argument("--all", type=Path, metavar="DIR", help="write NAMESPACE.NAME.yaml files here")
    p.add_argument("--namespace", default="", help="with --all: only this namespace")
    add_connection_options(p)
    p.set_defaults(handler=cmd_export)
    p = wsub.add_parser(
        "unarchive", help="make an archived workflow active again (its schedule stays stopped)"
    )
    p.add_argument("ref", help="NAMESPACE/NAME or id")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_unarchive)
    p = wsub.add_parser(
        "delete", help="delete an archived workflow with its versions, runs and schedule"
    )
    p.add_argument("ref", help="NAMESPACE/NAME or id")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_delete)
    p = wsub.add_parser("archive", help="archive a workflow (REF: NAMESPACE/NAME or id)")
    p.add_argument("ref")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_archive)


def spec_files(paths: list[Path]) -> list[Path]:
    """The files named, a directory standing for its *.yaml and *.yml files (sorted)."""
    files: list[Path] = []
    for path in paths:
        if str(path) != "-" and path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not found:
                raise CliError(f"{path}: the directory holds no *.yaml or *.yml file")
            files += found
        else:
            files.append(path)
    return files


def _read(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CliError(f"{path}: cannot read it: {reason}") from exc


def _render(diagnostics: list[Diagnostic], path: Path) -> list[str]:
    # A diagnostic quotes the specification, and a pointer may hold a task's name.
    return [visible(d.render(str(path))) for d in diagnostics]


def cmd_validate(args: argparse.Namespace) -> int:
    from workflowd.spec import validate  # the language loads only for the command that needs it

    failed = 0
    files = spec_files(args.file)
    for path in files:
        try:
            result = validate(_read(path))
        except CliError as exc:
            print(f"workflowd: {exc}", file=sys.stderr)
            failed += 1
            continue
        failed += not result.valid
        if args.output == "json":
            _print_report(path, result.valid, list(result.diagnostics), several=len(files) > 1)
            continue
        for line in _render(list(result.diagnostics), path):
            print(line)
        if result.valid:
            print(f"{path}: valid")
    return 1 if failed else 0


def _print_report(path: Path, valid: bool, diagnostics: list[Diagnostic], several: bool) -> None:
    """One file's report; several files' as JSON Lines, each saying its file."""
    report = {
        "valid": valid,
        "diagnostics": [
            {
                "message": d.message,
                "pointer": d.pointer,
                "line": d.line,
                "column": d.column,
                "severity": d.severity.value,
            }
            for d in diagnostics
        ],
    }
    if several:
        print_json_line({"file": str(path), **report})
    else:
        print_json(report)


def cmd_apply(args: argparse.Namespace) -> int:
    files = spec_files(args.file)
    if args.watch and len(files) > 1:
        raise CliError("apply: --watch follows one run: apply one file with it", exit_code=2)
    if args.input is not None and not args.trigger:
        raise CliError("apply: --input is the input of the run --trigger starts", exit_code=2)
    if args.schedule_input is not None and not args.schedule:
        raise CliError(
            "apply: --schedule-input is the input of the schedule --schedule activates",
            exit_code=2,
        )
    return asyncio.run(_apply(args, files))


async def _apply(args: argparse.Namespace, files: list[Path]) -> int:
    run_input = None if args.input is None else parse_input(args.input)
    failed: list[str] = []
    async with client_of(args) as client:
        for path in files:
            try:
                response = await _apply_one(client, args, path, run_input, several=len(files) > 1)
            except CliError as exc:
                print(f"workflowd: {exc}", file=sys.stderr)
                failed.append(str(path))
                continue
            if response.run_id and args.watch:
                return await runs_cli.follow(client, response.run_id, args.output)
    if failed and len(files) > 1:
        print(
            f"workflowd: {len(failed)} of {plural(len(files), 'file')} not applied: "
            + ", ".join(failed),
            file=sys.stderr,
        )
    return 1 if failed else 0


async def _apply_one(
    client: Client, args: argparse.Namespace, path: Path, run_input: Any, several: bool
) -> Any:
    request = pb.CreateWorkflowRequest(
        specification=_read(path),
        tags=args.tag,
        trigger_immediately=args.trigger,
        schedule_immediately=args.schedule,
    )
    if run_input is not None:
        request.input.CopyFrom(run_input)
    if args.schedule_input is not None:
        request.schedule_input.CopyFrom(parse_input(args.schedule_input))
    try:
        response = await client.call("CreateWorkflow", request)
    except ClientError as exc:
        raise CliError(await _refusal(client, exc, request.specification, path)) from exc
    if args.output == "json":
        if several:
            print_json_line({"file": str(path), **to_dict(response)})
        else:
            print_json(to_dict(response))
        return response
    w = response.workflow
    verb = "created" if response.created else "unchanged"
    print(visible(f"{path}: {w.namespace}/{w.name} version {w.version} {verb} (id {w.id})"))
    if args.schedule:
        print(f"schedule active: `workflowd schedules get {w.namespace}/{w.name}` shows its fires")
    if response.run_id:
        print(f"run {response.run_id} started")
    return response


async def _refusal(client: Client, exc: ClientError, text: str, path: Path) -> str:
    """Why `path` was not applied: an invalid specification as `validate` prints it (the
    daemon's own validation, with lines and columns), anything else as the daemon said it."""
    refused = any(field.startswith("specification") for field, _ in exc.violations)
    if exc.code == "INVALID_ARGUMENT" and refused:
        report = await call(
            client, "ValidateWorkflow", pb.ValidateWorkflowRequest(specification=text)
        )
        found = [
            Diagnostic(d.message, d.pointer, d.line, d.column)
            for d in report.diagnostics
            if d.severity != pb.SEVERITY_WARNING
        ]
        if found:
            head = f"{path}: {exc.code}: the specification has {plural(len(found), 'problem')}"
            return "\n".join([head, *_render(found, path)])
    return f"{path}: {explain(exc, _APPLY_FLAGS)}"


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
    rows = [[w.id, f"{w.namespace}/{w.name}", w.version, _status(w)] for w in response.workflows]
    print_table(["ID", "NAMESPACE/NAME", "VERSION", "STATUS"], rows)
    if response.next_page_token:
        print(f"more: --page-token {visible(response.next_page_token)}")
    return 0


def _status(w: pb.Workflow) -> str:
    return pb.WorkflowStatus.Name(w.status).removeprefix("WORKFLOW_STATUS_").lower()


async def _once(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    async with client_of(args) as client:
        return await call(client, rpc, request)


async def _get(args: argparse.Namespace) -> pb.Workflow:
    async with client_of(args) as client:
        request = pb.GetWorkflowRequest(version=args.version, **await named(client, args.ref))
        workflow: pb.Workflow = (await call(client, "GetWorkflow", request)).workflow
        return workflow


def cmd_get(args: argparse.Namespace) -> int:
    w = asyncio.run(_get(args))
    if args.output == "json":
        print_json(to_dict(w))
        return 0
    if args.output == "yaml":
        sys.stdout.write(w.specification)
        return 0
    print(visible(f"{w.namespace}/{w.name}  id {w.id}"))
    print(
        visible(f"version {w.version} (current {w.current_version}; all: {', '.join(w.versions)})")
    )
    print(f"status {_status(w)}")
    if w.tags:
        print(visible(f"tags {', '.join(w.tags)}"))
    print()
    print(visible(w.specification.rstrip("\n"), multiline=True))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if (args.all is None) == (args.ref is None):
        raise CliError("workflows export: name a workflow, or --all DIR for every one", 2)
    if args.all is None and args.namespace:
        raise CliError("workflows export: --namespace goes with --all", exit_code=2)
    if args.all is None:
        sys.stdout.write(asyncio.run(_get(args)).specification)
        return 0
    written = asyncio.run(_export_all(args, args.all))
    print(f"{plural(written, 'workflow')} exported to {args.all}")
    return 0


async def _export_all(args: argparse.Namespace, directory: Path) -> int:
    """Every active workflow's current specification, as stored, in NAMESPACE.NAME.yaml (a
    name holds no dot, so no two workflows share a file)."""
    _make_dir(directory)
    written = 0
    request = pb.ListWorkflowsRequest(
        namespace=args.namespace, status=pb.WORKFLOW_STATUS_ACTIVE, page_size=100
    )
    async with client_of(args) as client:
        while True:
            page = await call(client, "ListWorkflows", request)
            written += _write_specs(directory, list(page.workflows))
            if not page.next_page_token:
                return written
            request.page_token = page.next_page_token


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--all {directory}: {exc.strerror or exc}") from exc


def _write_specs(directory: Path, workflows: list[pb.Workflow]) -> int:
    for w in workflows:
        path = directory / f"{w.namespace}.{w.name}.yaml"
        try:
            path.write_bytes(w.specification.encode("utf-8"))
        except OSError as exc:
            raise CliError(f"{path}: cannot write it: {exc.strerror or exc}") from exc
        print(f"{path}: {w.namespace}/{w.name} version {w.version}")
    return len(workflows)


def cmd_archive(args: argparse.Namespace) -> int:
    async def archive() -> Any:
        async with client_of(args) as client:
            request = pb.ArchiveWorkflowRequest(**await named(client, args.ref))
            return await call(client, "ArchiveWorkflow", request)

    response = asyncio.run(archive())
    if args.output == "json":
        print_json(to_dict(response.workflow))
    else:
        archived = response.workflow
        print(visible(f"{archived.namespace}/{archived.name} archived"))
    return 0


def cmd_unarchive(args: argparse.Namespace) -> int:
    async def unarchive() -> Any:
        async with client_of(args) as client:
            request = pb.UnarchiveWorkflowRequest(**await named(client, args.ref))
            return await call(client, "UnarchiveWorkflow", request)

    response = asyncio.run(unarchive())
    if args.output == "json":
        print_json(to_dict(response.workflow))
    else:
        w = response.workflow
        print(visible(f"{w.namespace}/{w.name} unarchived"))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    async def delete() -> Any:
        async with client_of(args) as client:
            request = pb.DeleteWorkflowRequest(**await named(client, args.ref))
            return await call(client, "DeleteWorkflow", request)

    response = asyncio.run(delete())
    if args.output == "json":
        print_json(to_dict(response))
    else:
        runs = plural(response.deleted_runs, "run")
        versions = plural(response.deleted_versions, "version")
        print(visible(f"{args.ref} deleted: {versions}, {runs}"))
    return 0
