"""How a subcommand reaches the daemon: its address, token and TLS options, the client they
make, and one way to call it and report a refusal."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflowd.api.client import Client, ClientError, ClientTls
from workflowd.cli.common import CliError, add_token_option, read_file, token_of, visible
from workflowd.cli.refs import (
    MIN_RUN_PREFIX,
    NOT_A_REF,
    REF_FORMS,
    RefFields,
    is_uuid,
    parse_ref,
)
from workflowd.cli.words import cli_words, flag_of
from workflowd.domain import ids
from workflowd.domain.errors import InvalidRequest
from workflowd.v1 import workflow_service_pb2 as pb

_SUGGESTIONS = 5
_CANDIDATES = 10


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


async def call(
    client: Client,
    rpc: str,
    request: Any,
    *,
    flags: Mapping[str, str] | None = None,
) -> Any:
    """The response, or a CliError with the daemon's refusal in the CLI's words: the RPCs it
    names as commands, the fields as the `flags` (and common flags) that set them."""
    try:
        return await client.call(rpc, request)
    except ClientError as exc:
        raise CliError(explain(exc, flags)) from exc


def explain(exc: ClientError, flags: Mapping[str, str] | None = None) -> str:
    """`CODE: message`, then one line per field violation the message does not already say;
    each line as a terminal shows it (a field is a pointer that may hold a task's name)."""
    detail = exc.detail
    lines = []
    for field, why in exc.violations:
        said = f"{field}: {why}"
        if detail in (said, why):  # one refused field: the message says it all
            detail = f"{flag_of(field, flags)}: {why}" if field else why
        else:
            lines.append(f"  {flag_of(field, flags)}: {why}" if field else f"  {why}")
    return cli_words("\n".join(visible(line) for line in [f"{exc.code}: {detail}", *lines]), flags)


async def named(client: Client, text: str) -> RefFields:
    """The request fields naming the workflow `text` names (NAMESPACE/NAME, or an id); a word
    that is neither is refused with what would work, and the namespace that holds a workflow
    of that name when there is one."""
    ref = parse_ref(text)
    if not ref.bare:
        return ref.fields()
    raise CliError(f"{text!r} {NOT_A_REF}{await _suggest(client, ref.bare)}")


async def _suggest(client: Client, word: str) -> str:
    """What would work instead of `word`, with the workflows that have that name."""
    if not ids.NAME.match(word):
        return f": {REF_FORMS}"
    request = pb.ListWorkflowsRequest(name=word, page_size=_SUGGESTIONS)
    listed = (await call(client, "ListWorkflows", request)).workflows
    found = [f"{w.namespace}/{w.name}" for w in listed]
    if len(found) == 1:
        return f": did you mean {found[0]}? Write NAMESPACE/NAME or the workflow's id"
    if found:
        return f": workflows of that name are {', '.join(found)}; write NAMESPACE/NAME or an id"
    return f", and no workflow has that name: {REF_FORMS} (`workflowd workflows list` lists them)"


async def find_run(client: Client, text: str) -> str:
    """The id of the run `text` names: its id, or (as git's short hashes) a unique start of
    it, at least MIN_RUN_PREFIX characters long. Only the caller's company's runs match."""
    prefix = text.strip().lower()
    if is_uuid(prefix):
        return prefix
    try:
        ids.check_uuid_prefix("run", prefix, "run")
    except InvalidRequest:
        prefix = ""
    if len(prefix) < MIN_RUN_PREFIX:
        raise CliError(
            f"{text!r} is not a run id: give the id, or its first {MIN_RUN_PREFIX} characters "
            "or more"
        )
    request = pb.ListRunsRequest(run_id_prefix=prefix, page_size=_CANDIDATES)
    page = await call(client, "ListRuns", request)
    if len(page.runs) == 1:
        return str(page.runs[0].id)
    if not page.runs:
        raise CliError(
            f"no run has an id starting with {prefix} (`workflowd runs list` lists them)"
        )
    more = "\n  …" if page.next_page_token else ""
    candidates = "\n".join(f"  {r.id}  {r.namespace}/{r.name}" for r in page.runs)
    raise CliError(f"{prefix} starts more than one run id; give more of it:\n{candidates}{more}")
