"""The `workflowd` command line. Each submodule registers its own subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence

from workflowd.cli import (
    dataplane,
    datasets,
    deliveries,
    retention,
    runs,
    schedules,
    serve,
    workflows,
)
from workflowd.cli.common import CliError, visible

# When the reader of stdout goes away (`workflowd runs list | head -1`), exit as a C tool
# killed by SIGPIPE does: shells report 128 + SIGPIPE = 141, scripts that run pipelines under
# `set -o pipefail` already expect it, and it is not mistaken for 1 (an error, or `trigger
# --watch`'s failed run). Python ignores SIGPIPE, so the closed pipe arrives as BrokenPipeError.
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflowd",
        description="Workflow orchestration daemon for data pipelines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, workflows, runs, schedules, retention, deliveries, datasets, dataplane):
        module.register(sub)
    for command in _commands(parser):
        command.set_defaults(command_parser=command)
    return parser


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers of the commands themselves (`runs list`), below the groups that hold them."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield parser
    for group in groups:
        for child in group.choices.values():
            yield from _commands(child)


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        # argparse leaves arguments no subcommand knows to the top-level parser, whose usage
        # says nothing about the command that was typed: let that command refuse them.
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe must surface here, not at interpreter exit
    except CliError as exc:
        print(f"workflowd: {visible(str(exc), multiline=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("workflowd: interrupted", file=sys.stderr)
        return runs.EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _discard_stdout() -> None:
    """Python's recipe for a closed stdout: what is still buffered goes to /dev/null, or the
    flush at exit would fail again and print a traceback of its own."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
