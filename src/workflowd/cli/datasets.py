"""`datasets load|list|show` against a data plane, and `dataplane serve` to run one alone."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from workflowd.cli.common import CliError, add_dataplane_option, add_output_option, print_json
from workflowd.domain.errors import WorkflowdError
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

    dp = sub.add_parser("dataplane", help="run the local data plane on its own")
    dpsub = dp.add_subparsers(dest="dataplane_command", required=True, metavar="COMMAND")
    p = dpsub.add_parser("serve", help="serve the jobs HTTP API over per-company DuckDB files")
    p.add_argument("--listen", default="127.0.0.1:50052", help="HOST:PORT (default :50052)")
    p.add_argument("--data-dir", required=True, type=Path, help="directory of DuckDB files")
    p.add_argument("--workers", type=int, default=2, help="job worker threads per company")
    p.add_argument("--tokens-file", type=Path, help="'token company' lines (or DATAPLANE_TOKENS)")
    p.set_defaults(handler=cmd_dataplane_serve)


def _common(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    add_dataplane_option(parser)
    parser.add_argument(
        "--token",
        default=os.environ.get("WORKFLOWD_DATAPLANE_TOKEN"),
        help="bearer token for the data plane (env WORKFLOWD_DATAPLANE_TOKEN)",
    )
    add_output_option(parser)
    parser.set_defaults(handler=handler)


def _call(args: argparse.Namespace, action: Callable[[DatasetsClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with DatasetsClient(args.dataplane_url, token=args.token) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except WorkflowdError as exc:
        raise CliError(exc.message) from exc


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
            f"loaded company_data.{described['dataset_name']} (dataset "
            f"{described['dataset_id']}): {described['row_count']} rows, "
            f"{len(described['columns'])} columns"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records: list[JsonObject] = _call(args, lambda c: c.list())
    if args.output == "json":
        print_json(records)
        return 0
    rows = [[r["dataset_id"], r["dataset_name"], r["kind"], r["row_count"]] for r in records]
    _table(["ID", "NAME", "KIND", "ROWS"], rows)
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
    print(f"company_data.{described['dataset_name']}  (id {described['dataset_id']}, ", end="")
    print(f"{described['kind']}, {described['row_count']} rows)")
    if described.get("query"):
        print(f"query: {described['query']}")
    for key, value in sorted((described.get("options") or {}).items()):
        print(f"option {key}: {value}")
    print("columns:")
    for column in described["columns"]:
        print(f"  {column['name']}  {column['type']}")
    snapshots = described["snapshots"]
    if snapshots:
        last = snapshots[-1]
        print(f"snapshots: {len(snapshots)}, latest {last['snapshot_id']} at {last['created_at']}")
    print()
    _table(sample["columns"], sample["rows"])
    return 0


def cmd_dataplane_serve(args: argparse.Namespace) -> int:
    """Replaces this process with `python -m dataplane serve`: workflowd does not import the
    data plane outside its composition root, and signals then reach the server directly."""
    argv = [sys.executable, "-m", "dataplane", "serve", "--listen", args.listen]
    argv += ["--data-dir", str(args.data_dir), "--workers", str(args.workers)]
    if args.tokens_file is not None:
        argv += ["--tokens-file", str(args.tokens_file)]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached: execv does not return


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )
