"""What every subcommand shares: the error type, output formats, and address options."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

# What a terminal would act on instead of showing: C0 and C1 controls (ESC starts a sequence
# that can retitle the window, clear the screen or write the clipboard; U+009B is a one-byte
# CSI), DEL, and the invisible marks that reorder or break lines.
_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(text: str, multiline: bool = False) -> str:
    """`text` as a terminal shows it: every control character written as its escape (`\\x1b`,
    `\\u202e`), so text from callers, specifications, datasets or the daemon (task names, error
    details, cells) cannot move the cursor, clear the screen or reach the clipboard. With
    `multiline`, newlines and tabs stay (error details, a specification's text)."""
    if multiline:
        return _LINES.sub(_escape, text.replace("\r\n", "\n"))
    return _ONE_LINE.sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


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


def print_table(headers: list[Any], rows: list[list[Any]]) -> None:
    cells = [[visible(str(v)) for v in headers]]
    cells += [["" if v is None else visible(str(v)) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )
