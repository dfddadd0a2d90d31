"""`workflowd serve` with crash points, for the crash-recovery tests only: the daemon kills
itself (SIGKILL) at the named points. Production has no setting that can do this.

Usage: python -m tests.crashing_daemon POINT[,POINT…] [workflowd serve flags…]
"""

from __future__ import annotations

import sys

from workflowd.app import App
from workflowd.cli import build_parser
from workflowd.cli.serve import serve, settings_of


def main() -> None:
    points, argv = sys.argv[1], sys.argv[2:]
    args = build_parser().parse_args(["serve", *argv])
    serve(App(settings_of(args), crash_points=frozenset(points.split(","))))


if __name__ == "__main__":
    main()
