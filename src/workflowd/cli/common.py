"""What every subcommand shares: the error type, output formats, and address options."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A failure to report in one line, with the process exit code to use."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_output_option(parser: argparse.ArgumentParser, *, yaml: bool = False) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "yaml") if yaml else ("text", "json"),
        default="text",
        help="output format (default: text"
        + ("; yaml: the specification as stored)" if yaml else ")"),
    )


def add_token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        help="bearer token; visible to every user of the machine in the process list, so "
        "prefer env WORKFLOWD_TOKEN or --token-file",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("WORKFLOWD_TOKEN_FILE"),
        help="file holding the bearer token (env WORKFLOWD_TOKEN_FILE)",
    )


def token_of(args: argparse.Namespace) -> str:
    """The company's bearer token ("" when none is given: a daemon without tokens)."""
    if args.token:
        return str(args.token).strip()
    if args.token_file is None:
        return os.environ.get("WORKFLOWD_TOKEN", "").strip()
    token = read_file(args.token_file, "--token-file").decode("utf-8", "replace").strip()
    if not token:
        raise CliError(f"--token-file {args.token_file}: the file is empty")
    return token


def read_file(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}") from exc


def add_dataplane_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataplane-url",
        default=os.environ.get("WORKFLOWD_DATAPLANE_URL", "http://127.0.0.1:50052"),
        help="local data plane URL (env WORKFLOWD_DATAPLANE_URL, default http://127.0.0.1:50052)",
    )


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def print_json_line(value: Any) -> None:
    """One JSON Lines record, flushed: a stream's reader sees each event as it happens."""
    sys.stdout.write(json.dumps(value, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )
