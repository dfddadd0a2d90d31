"""`retention set|show|apply`: how long ended runs are kept, per workflow or namespace."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from workflowd.api.client import Client, to_dict
from workflowd.cli import times
from workflowd.cli.common import CliError, add_output_option, print_json, visible
from workflowd.cli.connect import add_connection_options, call, client_of, named
from workflowd.cli.refs import RefFields
from workflowd.domain.units import plural, span
from workflowd.v1 import workflow_service_pb2 as pb

_SCOPE_HELP = "NAMESPACE/NAME or workflow id (or --namespace for a whole namespace)"
_FLAGS = {
    "policy.keep_for": "--keep-for",
    "policy.keep_last": "--keep-last",
    "policy.keep_failed_for": "--keep-failed-for",
    "dry_run": "--dry-run",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("retention", help="how long ended runs are kept; delete the others")
    rsub = group.add_subparsers(dest="retention_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("set", help="set (or --clear) a workflow's or a namespace's policy")
    _scope(p)
    p.add_argument("--keep-for", help="keep ended runs this long after their end: 30d, 12h")
    p.add_argument("--keep-last", type=int, default=0, help="keep each workflow's newest N")
    p.add_argument("--keep-failed-for", help="keep failed runs this long (at least --keep-for)")
    p.add_argument("--clear", action="store_true", help="remove the policy: the wider one applies")
    _common(p, cmd_set)
    p = rsub.add_parser("show", help="a policy and the one that applies (none: the default)")
    _scope(p)
    _common(p, cmd_show)
    p = rsub.add_parser("apply", help="delete the ended runs the policies let go now")
    _scope(p)
    p.add_argument("--dry-run", action="store_true", help="count them; delete nothing")
    _common(p, cmd_apply)


def _scope(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", nargs="?", help=_SCOPE_HELP)
    parser.add_argument("--namespace", default="", metavar="NS", help="a whole namespace")


def _common(parser: argparse.ArgumentParser, handler: Any) -> None:
    add_connection_options(parser)
    add_output_option(parser)
    parser.set_defaults(handler=handler)


async def _fields(client: Client, args: argparse.Namespace) -> RefFields:
    if args.ref and args.namespace:
        raise CliError("give a workflow (REF) or --namespace, not both", exit_code=2)
    if args.ref:
        return await named(client, args.ref)
    return RefFields(namespace=args.namespace) if args.namespace else RefFields()


def describe(policy: pb.RetentionPolicy) -> str:
    parts = []
    if policy.HasField("keep_for"):
        parts.append(f"ended runs kept {span(policy.keep_for.ToTimedelta().total_seconds())}")
    if policy.HasField("keep_failed_for"):
        kept = span(policy.keep_failed_for.ToTimedelta().total_seconds())
        parts.append(f"failed runs kept {kept}")
    if policy.keep_last:
        parts.append(f"the newest {policy.keep_last} of each workflow kept")
    return ", ".join(parts) or "runs kept forever"


def _show(response: pb.GetRetentionPolicyResponse | pb.SetRetentionPolicyResponse) -> None:
    source = pb.RetentionSource.Name(response.source).removeprefix("RETENTION_SOURCE_").lower()
    own = describe(response.policy) if response.HasField("policy") else "none of its own"
    print(f"policy: {own}")
    print(f"applies: {describe(response.effective)} (from {source})")


def cmd_set(args: argparse.Namespace) -> int:
    limits = args.keep_for or args.keep_failed_for or args.keep_last
    if args.clear == bool(limits):
        raise CliError(
            "retention set: give --keep-for, --keep-last or --keep-failed-for, or --clear",
            exit_code=2,
        )

    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.SetRetentionPolicyRequest(**await _fields(client, args))
            if not args.clear:
                request.policy.keep_last = args.keep_last
                if args.keep_for:
                    request.policy.keep_for.CopyFrom(times.duration(args.keep_for, "--keep-for"))
                if args.keep_failed_for:
                    request.policy.keep_failed_for.CopyFrom(
                        times.duration(args.keep_failed_for, "--keep-failed-for")
                    )
            return await call(client, "SetRetentionPolicy", request, flags=_FLAGS)

    response = asyncio.run(go())
    if args.output == "json":
        print_json(to_dict(response))
    else:
        _show(response)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.GetRetentionPolicyRequest(**await _fields(client, args))
            return await call(client, "GetRetentionPolicy", request, flags=_FLAGS)

    response = asyncio.run(go())
    if args.output == "json":
        print_json(to_dict(response))
    else:
        _show(response)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_of(args) as client:
            request = pb.ApplyRetentionRequest(dry_run=args.dry_run, **await _fields(client, args))
            return await call(client, "ApplyRetention", request, flags=_FLAGS)

    response = asyncio.run(go())
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    verb = "would be deleted" if response.dry_run else "deleted"
    print(
        visible(
            f"{plural(response.deleted_runs, 'run')} {verb}, "
            f"{plural(response.protected_runs, 'run')} kept for active runs that need them "
            f"({plural(response.workflows, 'workflow')} with a policy)"
        )
    )
    return 0
