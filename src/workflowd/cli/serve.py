"""`workflowd serve`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflowd.address import Address
from workflowd.cli.common import CliError
from workflowd.datadir import DataDirInUse
from workflowd.domain.errors import WorkflowdError
from workflowd.settings import Settings

if TYPE_CHECKING:
    from workflowd.app import App

# Whatever the daemon creates (its store, the data plane's files) is its user's alone.
PRIVATE_UMASK = 0o077


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the daemon (gRPC API, engine, embedded data plane)")
    p.add_argument("--listen", help="gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--data-dir", type=Path, help="state directory (default ./.workflowd)")
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument(
        "--store",
        help="sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DATABASE "
        "(default: workflowd.db in the data directory)",
    )
    p.add_argument(
        "--replica-lease-s",
        type=float,
        help="replicas on PostgreSQL: seconds before a silent replica's runs are adopted "
        "(default 15)",
    )
    p.add_argument(
        "--http-listen",
        help="the web page, /metrics and /healthz address (default 127.0.0.1:9464)",
    )
    p.add_argument(
        "--no-web",
        dest="web_enabled",
        action="store_false",
        default=None,
        help="serve /metrics and /healthz only, not the web page",
    )
    p.add_argument("--jobs-url", help="a remote jobs API; without it the local data plane runs")
    p.add_argument("--jobs-token", help="bearer token for the jobs API")
    p.add_argument(
        "--jobs-company",
        help="without a tokens file: the company to file jobs under on a jobs API shared with"
        " other daemons (with a service token)",
    )
    p.add_argument(
        "--dataplane-listen", help="embedded data plane address (default 127.0.0.1:50052)"
    )
    p.add_argument("--dataplane-workers", type=int, help="data plane worker threads")
    p.add_argument(
        "--dataplane-job-timeout-s",
        type=float,
        help="a local job running longer fails (default 3600)",
    )
    p.add_argument(
        "--dataplane-memory-limit", help="DuckDB memory limit per company (default 1GiB)"
    )
    p.add_argument(
        "--jobs-ca", help="CA certificate (PEM) the jobs API's certificate must chain to"
    )
    p.add_argument("--tokens-file", help="TOML file of token hashes and their companies")
    p.add_argument("--tls-cert", help="server certificate chain (PEM) for gRPC over TLS")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates chained to this CA (PEM)")
    p.add_argument(
        "--dataplane-tls-cert", help="serve the embedded data plane over HTTPS: certificate (PEM)"
    )
    p.add_argument("--dataplane-tls-key", help="its private key (PEM)")
    p.add_argument(
        "--dataplane-tls-client-ca",
        help="require client certificates chained to this CA (PEM) at the data plane",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback address without authentication",
    )
    _quota_arguments(p)
    p.add_argument("--log-format", choices=("text", "json"), help="log format (default text)")
    p.add_argument("--log-level", help="log level (default INFO)")
    p.add_argument(
        "--metrics-max-workflows",
        type=int,
        help="workflows with metrics series of their own; later ones share `other` (default 500)",
    )
    p.set_defaults(handler=run)


_QUOTAS = (
    ("--quota-active-runs", int, "runs pending or running at once (default 1000)"),
    ("--quota-active-schedules", int, "active schedules (default 100)"),
    ("--quota-min-every-s", float, "shortest schedule.every, in seconds (default 60)"),
    ("--quota-trigger-rate-per-s", float, "runs asked for per second, sustained (default 50)"),
    ("--quota-trigger-burst", int, "runs asked for in one burst (default 500)"),
    ("--quota-stored-bytes", int, "bytes of run values stored (default 10 GiB)"),
    ("--quota-dataset-bytes", int, "bytes of datasets in the embedded data plane (10 GiB)"),
)


def _quota_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("per-company quotas (0 turns one off)")
    for flag, kind, help_text in _QUOTAS:
        group.add_argument(flag, type=kind, help=help_text)


def settings_of(args: argparse.Namespace) -> Settings:
    """The daemon's settings: these flags over `WORKFLOWD_*` over the TOML file."""
    flags: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "listen",
            "data_dir",
            "store",
            "replica_lease_s",
            "http_listen",
            "web_enabled",
            "jobs_url",
            "jobs_token",
            "jobs_company",
            "dataplane_listen",
            "dataplane_workers",
            "dataplane_job_timeout_s",
            "dataplane_memory_limit",
            "jobs_ca",
            "tokens_file",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "dataplane_tls_cert",
            "dataplane_tls_key",
            "dataplane_tls_client_ca",
            "insecure",
            "log_format",
            "log_level",
            *(flag.removeprefix("--").replace("-", "_") for flag, _, _ in _QUOTAS),
            "metrics_max_workflows",
        )
    }
    try:
        settings = Settings.load(flags, os.environ, args.config)
    except WorkflowdError as exc:
        raise CliError(exc.message, exit_code=2) from exc
    from workflowd.observability import configure_logging  # with the daemon's other parts

    configure_logging(settings.log_format, settings.log_level)
    return settings


def run(args: argparse.Namespace) -> int:
    # Imported here: the daemon's parts (gRPC server, engine, jobs client) load only for
    # `serve`, so every other subcommand starts in a fraction of the time.
    from workflowd.app import App
    from workflowd.telemetry import telemetry_from_env

    settings = settings_of(args)
    try:
        telemetry = telemetry_from_env(os.environ)
    except WorkflowdError as exc:
        raise CliError(f"cannot start: {exc.message}", exit_code=2) from exc
    os.umask(PRIVATE_UMASK)
    serve(App(settings, telemetry=telemetry))
    return 0


def serve(app: App) -> None:
    """Run `app` until SIGTERM or SIGINT (or until it must stop), then drain it. A failure to
    start is one line, `cannot start: <why>` (exit status 2 when workflowd refused what it
    was given or found, 1 when the system failed it)."""
    from workflowd.observability import log_directly  # with the daemon's other parts

    try:
        try:
            asyncio.run(_serve(app))
        finally:
            log_directly()
    except DataDirInUse as exc:
        raise CliError(str(exc)) from exc
    except WorkflowdError as exc:  # a bad tokens or TLS file, a data plane that did not start
        raise CliError(f"cannot start: {_reason(exc)}", exit_code=2) from exc
    except OSError as exc:
        raise CliError(f"cannot start: {_reason(exc)}") from exc
    if app.failure:
        raise CliError(app.failure)


def _reason(exc: BaseException) -> str:
    """Never empty: an exception without a message is named by its type."""
    return " ".join(str(exc).split()) or type(exc).__name__


async def _serve(app: App) -> None:
    settings = app.settings
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.request_reload)
    try:
        await app.start()
        bound = Address.parse(settings.listen, "listen").with_port(app.grpc_port)
        metrics = ""
        if app.http is not None:
            http = Address.parse(settings.http_listen, "http_listen").with_port(app.http.port)
            metrics = f"metrics http://{http}/metrics, "
        print(
            f"workflowd serving gRPC on {bound} (jobs API {app.jobs_url}, {metrics}"
            f"data in {settings.data_dir})",
            flush=True,
        )
        await app.stop.wait()
    finally:
        await app.drain()
