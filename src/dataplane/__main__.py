"""`python -m dataplane serve --listen HOST:PORT --data-dir DIR [--workers N]
[--tokens-file F] [--insecure] [--job-timeout-s S] [--memory-limit SIZE]
[--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]] [--quota-dataset-bytes B]`.

Tokens come from `--tokens-file` (TOML, see `dataplane.auth`), re-read on SIGHUP; with none,
every request is company `default`, which is only allowed on a loopback address unless
`--insecure` is given. Exit status 2 means the configuration was refused.

For a supervising parent (workflowd): `--listen-fd N` serves on a listening socket the parent
bound and keeps, so that no other process can take the port while this one restarts; each
reload answers on stdout, `dataplane tokens <sha256 of the file read> reloaded` or `… refused:
<why>`, so the parent knows what is in force before it switches its own tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from dataplane.app import DataPlane
from dataplane.auth import TokenTable, load_tokens, read_tokens
from dataplane.http_common import ClientCerts
from dataplane.tracing import provider_from_env

log = logging.getLogger("dataplane")

CONFIG_REFUSED = 2
# Whatever this process creates (DuckDB files and their WAL, uploads) is its user's alone.
PRIVATE_UMASK = 0o077


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve beyond this machine


def exposure_refusal(listen: tuple[str, int], tokens: TokenTable | None, insecure: bool) -> str:
    """Why serving would be unsafe, or "" if it is not."""
    host, port = listen
    if tokens is not None or insecure or is_loopback(host):
        return ""
    return (
        f"refusing to serve {host}:{port} without tokens, as anyone who can reach it could read"
        " and change every company's data; give --tokens-file, or --insecure to serve anyway"
    )


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
        help="TOML file of [[tokens]] and [[service_tokens]] (SHA-256 digests); re-read on SIGHUP",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without tokens (every request is company default)",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS: certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        help="require client certificates chained to this CA (PEM); /healthz needs none",
    )
    parser.add_argument(
        "--service-tokens-need-no-client-cert",
        action="store_true",
        help=argparse.SUPPRESS,  # for workflowd's own child: its service token is per start
    )
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="stop when stdin ends (a supervising parent holds it open for as long as it lives)",
    )
    parser.add_argument(
        "--job-timeout-s",
        type=_positive_seconds,
        default=3600.0,
        help="a job running longer is interrupted and fails (default 3600)",
    )
    parser.add_argument(
        "--quota-dataset-bytes",
        type=_bytes,
        default=0,
        help="bytes of datasets each company may keep; 0 (the default) for no quota",
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


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context from `--tls-*`, or None; a ValueError says what is wrong."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot use the certificate {args.tls_cert} with the key {args.tls_key}: {exc}"
        ) from exc
    if args.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=args.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use the client CA {args.tls_client_ca}: {exc}") from exc
        # Asked for and checked in the handshake; the HTTP layer refuses a caller without one
        # (http_common.ClientCerts), so that it hears why.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _bytes(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of bytes, got {value!r}")
    return int(value)


async def serve(
    args: argparse.Namespace, tokens: TokenTable | None, tls: ssl.SSLContext | None
) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down cleanly; SIGHUP re-reads the tokens."""
    provider = provider_from_env(os.environ)
    plane = DataPlane(
        args.data_dir,
        workers=args.workers,
        tokens=tokens,
        job_timeout_s=args.job_timeout_s,
        memory_limit=args.memory_limit,
        client_certs=ClientCerts(
            required=args.tls_client_ca is not None,
            service_tokens_exempt=args.service_tokens_need_no_client_cert,
        ),
        dataset_quota_bytes=args.quota_dataset_bytes,
        tracer=None if provider is None else provider.get_tracer("dataplane"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    reloading = asyncio.Lock()  # so that reloads apply in the order the signals came

    def on_sighup() -> None:
        task = asyncio.create_task(_reload_tokens(plane, args.tokens_file, reloading))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if args.stop_on_stdin_eof:
        await loop.connect_read_pipe(lambda: _StopOnEof(stop), sys.stdin)
    host, port = args.listen
    sock = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    try:
        bound = await plane.start(host, port, sock=sock, tls=tls)
        scheme = "http" if tls is None else "https"
        print(f"dataplane listening on {scheme}://{host}:{bound}", flush=True)
        await stop.wait()
    finally:
        await plane.aclose()
        if provider is not None:
            await asyncio.wait(
                [asyncio.ensure_future(asyncio.to_thread(provider.shutdown))], timeout=1.0
            )


class _StopOnEof(asyncio.Protocol):
    """Stops the data plane when its stdin ends: the process that started it, and holds the
    pipe's other end, is gone (even if it was killed and could not stop us)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            log.warning("stdin closed: the process that started the data plane is gone; stopping")
        self._stop.set()


async def _reload_tokens(plane: DataPlane, path: Path | None, reloading: asyncio.Lock) -> None:
    if path is None:
        log.warning("SIGHUP: there is no --tokens-file to reload")
        return
    async with reloading:
        sha256 = "-"
        try:
            raw = await asyncio.to_thread(path.read_bytes)
            sha256 = hashlib.sha256(raw).hexdigest()
            tokens = read_tokens(raw, path)
        except OSError as exc:
            _answer_reload(sha256, f"cannot read the tokens file {path}: {exc}")
            return
        except ValueError as exc:
            _answer_reload(sha256, str(exc))
            return
        plane.set_tokens(tokens)
    log.info(
        "tokens reloaded from %s: %d company tokens, %d service tokens",
        path,
        tokens.company_tokens,
        tokens.service_tokens,
    )
    _answer_reload(sha256, None)


def _answer_reload(sha256: str, refusal: str | None) -> None:
    if refusal is None:
        print(f"dataplane tokens {sha256} reloaded", flush=True)
        return
    log.error("tokens not reloaded, the previous ones stay in force: %s", refusal)
    # One line whatever the reason holds: the parent reads it as one answer.
    print(f"dataplane tokens {sha256} refused: {' '.join(refusal.split())}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplane")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve the jobs HTTP API"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.umask(PRIVATE_UMASK)
    try:
        tokens = load_tokens(args.tokens_file) if args.tokens_file is not None else None
        refusal = exposure_refusal(args.listen, tokens, args.insecure)
        if refusal:
            raise ValueError(refusal)
        asyncio.run(serve(args, tokens, tls_context(args)))
    except ValueError as exc:  # the tokens file, the listen address or a limit
        print(f"dataplane: {exc}", file=sys.stderr)
        return CONFIG_REFUSED
    except OSError as exc:
        print(f"dataplane: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
