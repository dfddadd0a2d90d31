"""How a subcommand reaches the daemon: its address, token and TLS options, the client they
make, and one way to call it and report a refusal."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from workflowd.api.client import Client, ClientError, ClientTls
from workflowd.cli.common import CliError, add_token_option, read_file, token_of, visible
from workflowd.cli.refs import workflow_ref
from workflowd.v1 import workflow_service_pb2 as pb


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--address",
        default=env("WORKFLOWD_ADDRESS", "127.0.0.1:50051"),
        help="workflowd gRPC address (env WORKFLOWD_ADDRESS, default 127.0.0.1:50051)",
    )
    add_token_option(parser)
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=env("WORKFLOWD_TLS_CA"),
        help="connect over TLS, trusting this CA's PEM (env WORKFLOWD_TLS_CA)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=bool(env("WORKFLOWD_TLS")),
        help="connect over TLS, trusting the system's CAs (env WORKFLOWD_TLS=1)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=env("WORKFLOWD_TLS_CERT"),
        help="client certificate PEM, for a daemon that asks for one (env WORKFLOWD_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=env("WORKFLOWD_TLS_KEY"),
        help="the client certificate's key PEM (env WORKFLOWD_TLS_KEY)",
    )


def client_of(args: argparse.Namespace) -> Client:
    return Client(args.address, token=token_of(args), tls=_tls(args))


def _tls(args: argparse.Namespace) -> ClientTls | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    if args.tls_ca is None and args.tls_cert is None and not args.tls:
        return None
    return ClientTls(
        ca=None if args.tls_ca is None else read_file(args.tls_ca, "--tls-ca"),
        cert=None if args.tls_cert is None else read_file(args.tls_cert, "--tls-cert"),
        key=None if args.tls_key is None else read_file(args.tls_key, "--tls-key"),
    )


async def call(client: Client, rpc: str, request: Any, source: str = "") -> Any:
    """The response, or a CliError with the daemon's message and one line per field
    violation (prefixed by `source`, the file a specification came from)."""
    try:
        return await client.call(rpc, request)
    except ClientError as exc:
        # One line each: a field is a pointer that may hold a task's name.
        lines = [visible(exc.message)]
        lines += [
            "  "
            + visible(f"{source}{field.removeprefix('specification') if source else field}: {why}")
            for field, why in exc.violations
        ]
        raise CliError("\n".join(lines)) from exc


async def workflow_id(client: Client, ref: str) -> str:
    """The id of the workflow `ref` names (an id, or namespace/name)."""
    fields = workflow_ref(ref)
    if "id" in fields:
        return fields["id"]
    got = await call(client, "GetWorkflow", pb.GetWorkflowRequest(**fields))
    return str(got.workflow.id)
