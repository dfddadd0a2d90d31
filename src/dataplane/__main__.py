"""`python -m dataplane serve --listen HOST:PORT --data-dir DIR [--workers N] [--tokens-file F]
[--job-timeout-s S] [--memory-limit SIZE]`.

Tokens come from `--tokens-file` (lines of `token company`) or env `DATAPLANE_TOKENS`
(`tok1=acme,tok2=globex`); with neither, every request is company `default`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dataplane.app import DataPlane


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_tokens(path: Path | None, env: Mapping[str, str]) -> dict[str, str] | None:
    """token → company, from the file if given, else from `DATAPLANE_TOKENS`; None if neither."""
    pairs: list[tuple[str, str]] = []
    if path is not None:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{path}:{number}: expected 'token company'")
                pairs.append((parts[0], parts[1]))
    elif env.get("DATAPLANE_TOKENS"):
        for item in env["DATAPLANE_TOKENS"].split(","):
            token, sep, company = item.strip().partition("=")
            if not sep or not token or not company:
                raise ValueError(f"DATAPLANE_TOKENS: expected token=company, got {item!r}")
            pairs.append((token, company))
    return dict(pairs) if pairs else None


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 50052),
        help="HOST:PORT to listen on (default 127.0.0.1:50052)",
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="directory of the per-company DuckDB files"
    )
    parser.add_argument("--workers", type=int, default=2, help="job worker threads per company")
    parser.add_argument(
        "--tokens-file",
        type=Path,
        default=None,
        help="file of 'token company' lines (else env DATAPLANE_TOKENS)",
    )
    parser.add_argument(
        "--job-timeout-s",
        type=_positive_seconds,
        default=3600.0,
        help="a job running longer is interrupted and fails (default 3600)",
    )
    parser.add_argument(
        "--memory-limit",
        default="1GiB",
        help="DuckDB memory limit per company database, e.g. 1GiB or 50%% (default 1GiB)",
    )


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


async def serve(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down cleanly."""
    plane = DataPlane(
        args.data_dir,
        workers=args.workers,
        tokens=read_tokens(args.tokens_file, env),
        job_timeout_s=args.job_timeout_s,
        memory_limit=args.memory_limit,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = args.listen
    try:
        bound = await plane.start(host, port)
        print(f"dataplane listening on http://{host}:{bound}", flush=True)
        await stop.wait()
    finally:
        await plane.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplane")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve the jobs HTTP API"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(args, os.environ))
    except (OSError, ValueError) as exc:
        print(f"dataplane: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
