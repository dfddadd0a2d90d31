"""The `workflowd` command line. Each submodule registers its own subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from workflowd.cli import datasets, runs, schedules, serve, workflows
from workflowd.cli.common import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflowd",
        description="Workflow orchestration daemon for data pipelines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, workflows, runs, schedules, datasets):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"workflowd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
