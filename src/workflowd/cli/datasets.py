"""`datasets load|list|show` against a data plane."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflowd.cli.common import (
    CliError,
    add_dataplane_option,
    add_output_option,
    add_token_option,
    print_json,
    print_table,
    token_of,
    visible,
)
from workflowd.domain.errors import InvalidRequest, WorkflowdError
from workflowd.domain.units import plural

if TYPE_CHECKING:
    from workflowd.jobs.datasets import DatasetsClient

JsonObject = dict[str, Any]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ds = sub.add_parser("datasets", help="load, list and show datasets of the data plane")
    dsub = ds.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("load", help="load a CSV or Parquet file as company_data.NAME")
    p.add_argument("file", type=Path, help="the CSV or Parquet file")
    p.add_argument("--name", required=True, help="dataset name ([A-Za-z0-9_]+)")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file suffix")
    p.add_argument("--replace", action="store_true", help="replace an existing dataset")
    _common(p, cmd_load)
    p = dsub.add_parser("list", help="list datasets")
    _common(p, cmd_list)
    p = dsub.add_parser("show", help="describe a dataset (NAME or id) and sample its rows")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=10, help="sample rows (default 10)")
    _common(p, cmd_show)


def _common(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    add_dataplane_option(parser)
    add_token_option(parser)
    add_output_option(parser)
    parser.set_defaults(handler=handler)


def _call(args: argparse.Namespace, action: Callable[[DatasetsClient], Awaitable[Any]]) -> Any:
    from workflowd.jobs.datasets import DatasetsClient  # the HTTP client loads only when used

    async def run() -> Any:
        async with DatasetsClient(args.dataplane_url, token=token_of(args)) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except WorkflowdError as exc:
        # Each refusal's reason names what it is about; its field would only repeat it. The
        # data plane speaks its HTTP API (`?replace=true`); the CLI's word is the flag.
        said = exc.reason if isinstance(exc, InvalidRequest) else exc.message
        raise CliError(said.replace("replace=true", "--replace")) from exc


def cmd_load(args: argparse.Namespace) -> int:
    file_format = args.format or ("parquet" if args.file.suffix == ".parquet" else "csv")
    described: JsonObject = _call(
        args,
        lambda c: c.load(args.file, args.name, file_format=file_format, replace=args.replace),
    )
    if args.output == "json":
        print_json(described)
    else:
        print(
            visible(
                f"loaded company_data.{described['dataset_name']} (dataset "
                f"{described['dataset_id']}): {plural(described['row_count'], 'row')}, "
                f"{plural(len(described['columns']), 'column')}"
            )
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records: list[JsonObject] = _call(args, lambda c: c.list())
    if args.output == "json":
        print_json(records)
        return 0
    rows = [[r["dataset_id"], r["dataset_name"], r["kind"], r["row_count"]] for r in records]
    print_table(["ID", "NAME", "KIND", "ROWS"], rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CliError("--limit must not be negative")

    async def both(client: DatasetsClient) -> tuple[JsonObject, JsonObject]:
        return await client.describe(args.name), await client.sample(args.name, args.limit)

    described, sample = _call(args, both)
    if args.output == "json":
        print_json({**described, "sample": sample})
        return 0
    # Every value comes from the data plane, and names, cells and queries from its users.
    print(
        visible(
            f"company_data.{described['dataset_name']}  (id {described['dataset_id']}, "
            f"{described['kind']}, {plural(described['row_count'], 'row')})"
        )
    )
    if described.get("query"):
        print(f"query: {visible(str(described['query']), multiline=True)}")
    for key, value in sorted((described.get("options") or {}).items()):
        print(visible(f"option {key}: {value}"))
    print("columns:")
    for column in described["columns"]:
        print(visible(f"  {column['name']}  {column['type']}"))
    snapshots = described["snapshots"]
    if snapshots:
        last = snapshots[-1]
        latest = f"latest {last['snapshot_id']} at {last['created_at']}"
        print(visible(f"snapshots: {len(snapshots)}, {latest}"))
    print()
    print_table(sample["columns"], sample["rows"])
    return 0
