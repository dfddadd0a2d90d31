"""`dataplane serve`: the local data plane on its own, without a daemon."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dp = sub.add_parser("dataplane", help="run the local data plane on its own")
    dpsub = dp.add_subparsers(dest="dataplane_command", required=True, metavar="COMMAND")
    p = dpsub.add_parser("serve", help="serve the jobs HTTP API over per-company DuckDB files")
    p.add_argument(
        "--listen", default="127.0.0.1:50052", help="HOST:PORT (default 127.0.0.1:50052)"
    )
    p.add_argument("--data-dir", required=True, type=Path, help="directory of DuckDB files")
    p.add_argument("--workers", type=int, default=2, help="job worker threads per company")
    p.add_argument(
        "--tokens-file",
        type=Path,
        help="TOML file of [[tokens]] and [[service_tokens]] digests (re-read on SIGHUP)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without tokens",
    )
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS: certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    p.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates chained to this CA (PEM)"
    )
    p.add_argument("--job-timeout-s", help="a job running longer fails (default 3600)")
    p.add_argument("--memory-limit", help="DuckDB memory limit per company (default 1GiB)")
    p.add_argument(
        "--quota-dataset-bytes", help="bytes of datasets each company may keep (default: no quota)"
    )
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Replaces this process with `python -m dataplane serve`: workflowd does not import the
    data plane outside its composition root, and signals then reach the server directly."""
    argv = [sys.executable, "-m", "dataplane", "serve", "--listen", args.listen]
    argv += ["--data-dir", str(args.data_dir), "--workers", str(args.workers)]
    if args.tokens_file is not None:
        argv += ["--tokens-file", str(args.tokens_file)]
    if args.insecure:
        argv.append("--insecure")
    for flag in ("tls_cert", "tls_key", "tls_client_ca"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.job_timeout_s is not None:
        argv += ["--job-timeout-s", args.job_timeout_s]
    if args.memory_limit is not None:
        argv += ["--memory-limit", args.memory_limit]
    if args.quota_dataset_bytes is not None:
        argv += ["--quota-dataset-bytes", args.quota_dataset_bytes]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached: execv does not return
