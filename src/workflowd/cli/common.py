"""What every subcommand shares: the error type, output format, and address options."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


class CliError(Exception):
    """A failure to report in one line, with the process exit code to use."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="output format (default: text)",
    )


def add_address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("WORKFLOWD_ADDRESS", "127.0.0.1:50051"),
        help="workflowd gRPC address (env WORKFLOWD_ADDRESS, default 127.0.0.1:50051)",
    )


def add_dataplane_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataplane-url",
        default=os.environ.get("WORKFLOWD_DATAPLANE_URL", "http://127.0.0.1:50052"),
        help="local data plane URL (env WORKFLOWD_DATAPLANE_URL, default http://127.0.0.1:50052)",
    )


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
