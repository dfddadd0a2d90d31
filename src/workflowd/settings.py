"""Settings: a frozen value read once, from flags over `WORKFLOWD_*` environment over a TOML
file over defaults."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workflowd.address import Address
from workflowd.domain.errors import InvalidRequest
from workflowd.domain.quotas import GIB, Quotas
from workflowd.domain.retention import RetentionPolicy

_ENV_PREFIX = "WORKFLOWD_"
_QUOTAS = Quotas()
_JOBS_COMPANY = re.compile(r"[a-z0-9_-]{1,64}")
_RETENTION_SETTINGS = {
    "keep_for": "retention_keep_days",
    "keep_last": "retention_keep_last",
    "keep_failed_for": "retention_keep_failed_days",
}
_STORE_URLS = "sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DATABASE"


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    data_dir: Path = Path(".workflowd")
    # Empty: the SQLite file in the data directory.
    store: str = ""
    # Replicas on a shared (PostgreSQL) store: a replica that has not renewed its lease for
    # this long is taken for dead, and its runs are adopted by the others.
    replica_lease_s: float = 15.0
    http_listen: str = "127.0.0.1:9464"
    # The web page on the HTTP listener (docs/web.md); its live streams send a heartbeat this
    # often.
    web_enabled: bool = True
    web_heartbeat_s: float = 15.0
    dataplane_listen: str = "127.0.0.1:50052"
    dataplane_workers: int = 2
    dataplane_job_timeout_s: float = 3600.0
    dataplane_memory_limit: str = "1GiB"
    # The embedded data plane over HTTPS, and the CA its callers' certificates must chain to.
    dataplane_tls_cert: str = ""
    dataplane_tls_key: str = ""
    dataplane_tls_client_ca: str = ""
    jobs_url: str = ""
    jobs_token: str = ""
    # A daemon without a tokens file acts for one company; on a jobs system it shares with
    # other such daemons (one service token), each names a company of its own.
    jobs_company: str = ""
    jobs_retry_deadline_s: float = 300.0
    jobs_request_timeout_s: float = 10.0
    jobs_ca: str = ""
    insecure: bool = False
    tokens_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    max_spec_bytes: int = 256 * 1024
    max_tasks: int = 1000
    max_value_bytes: int = 1024 * 1024
    max_value_depth: int = 32
    max_backfill_runs: int = 1000
    # Control flow's bounds (docs/workflow-language.md, "Bounds").
    max_iterations: int = 1000
    max_fork_width: int = 64
    max_depth: int = 16
    max_instances: int = 5000
    max_attempts: int = 100
    max_wait_s: float = 7 * 86400.0
    # After downtime, a schedule's catch-up fires at most this many missed instants (the
    # latest) and records the others as missed.
    max_catchup_runs: int = 100
    max_message_bytes: int = 8 * 1024 * 1024
    # Per-company quotas (docs/operations.md, "Quotas"); 0 turns one off.
    quota_active_runs: int = _QUOTAS.active_runs
    quota_active_schedules: int = _QUOTAS.active_schedules
    quota_min_every_s: float = _QUOTAS.min_every_s
    quota_trigger_rate_per_s: float = _QUOTAS.trigger_rate_per_s
    quota_trigger_burst: int = _QUOTAS.trigger_burst
    quota_stored_bytes: int = _QUOTAS.stored_bytes
    # The embedded data plane's (a remote jobs system has its own).
    quota_dataset_bytes: int = 10 * GIB
    # Retention's default (docs/operations.md, "Retention"): ended runs are kept this many
    # days after their end (failed ones `retention_keep_failed_days`), except the newest
    # `retention_keep_last` of each workflow; 0 is no limit. Checked every
    # `retention_interval_s`.
    retention_keep_days: float = 0.0
    retention_keep_last: int = 0
    retention_keep_failed_days: float = 0.0
    retention_interval_s: float = 3600.0
    drain_grace_s: float = 1.0
    log_format: str = "text"
    log_level: str = "INFO"
    # Per-workflow metrics: this many workflows get series of their own, later ones `other`.
    metrics_max_workflows: int = 500
    # The TOML file these settings were read from (`--config`); its `[webhooks]` section is
    # read at start and again on SIGHUP. Not a setting itself: no flag, variable or key sets it.
    config_file: Path | None = None

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any],
        env: Mapping[str, str],
        config_file: Path | None = None,
    ) -> Settings:
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_from_toml(config_file))
        values.update(_from_env(env))
        values.update({k: v for k, v in flags.items() if v is not None})
        coerced = {k: _coerce(k, v) for k, v in values.items()}
        settings = cls(**coerced, config_file=config_file)
        settings.check()
        return settings

    def check(self) -> None:
        self._check_store()
        self._check_quotas()
        self._check_retention()
        for name in ("max_iterations", "max_fork_width", "max_depth", "max_instances"):
            if getattr(self, name) < 1:
                raise InvalidRequest(name, "must be at least 1")
        if self.max_attempts < 1:
            raise InvalidRequest("max_attempts", "must be at least 1 (one execution, no retry)")
        if not 0 < self.max_wait_s <= 366 * 86400.0:
            raise InvalidRequest("max_wait_s", "must be between 0 and 366 days")
        if not 1.0 <= self.replica_lease_s <= 3600.0:
            raise InvalidRequest("replica_lease_s", "must be between 1 and 3600 seconds")
        if not 1 <= self.max_catchup_runs <= 100_000:
            raise InvalidRequest("max_catchup_runs", "must be between 1 and 100000")
        if not 1 <= self.metrics_max_workflows <= 100_000:
            raise InvalidRequest("metrics_max_workflows", "must be between 1 and 100000")
        if not 0.05 <= self.web_heartbeat_s <= 3600.0:
            raise InvalidRequest("web_heartbeat_s", "must be between 0.05 and 3600 seconds")
        if self.log_format not in ("text", "json"):
            raise InvalidRequest("log_format", "must be text or json")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidRequest("tls_cert", "--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidRequest("tls_client_ca", "client certificates need --tls-cert/--tls-key")
        self._check_dataplane_tls()
        self._check_web_listener()
        self._check_jobs_company()
        for name, text in self.listeners().items():
            address = Address.parse(text, name)
            if not self.insecure and not self.authenticated and not address.is_loopback:
                raise InvalidRequest(
                    name,
                    f"{text} is not a loopback address and no tokens are configured: bind to "
                    "127.0.0.1, give --tokens-file, or pass --insecure to serve without "
                    "authentication",
                )

    def _check_jobs_company(self) -> None:
        if not self.jobs_company:
            return
        if not _JOBS_COMPANY.fullmatch(self.jobs_company):
            raise InvalidRequest(
                "jobs_company",
                f"{self.jobs_company!r} is not a company name: 1 to 64 of a-z, 0-9, _ and -",
            )
        if not self.jobs_url:
            raise InvalidRequest(
                "jobs_company", "names this daemon's company on a remote jobs API: give --jobs-url"
            )
        if self.tokens_file:
            raise InvalidRequest(
                "jobs_company",
                "is for a daemon without a tokens file: with one, each company's jobs are filed"
                " under its own name",
            )

    def _check_web_listener(self) -> None:
        """The web page takes tokens at sign-in and shows the companies' runs, over plain HTTP:
        beyond loopback it would be weaker than a gRPC that serves TLS (/metrics and /healthz
        alone may stay there)."""
        if not self.web_enabled or not self.tls_cert:
            return
        address = Address.parse(self.http_listen, "http_listen")
        if not address.is_loopback:
            raise InvalidRequest(
                "http_listen",
                f"gRPC serves TLS but the web page would serve {address} in plain HTTP (tokens"
                " at sign-in, session cookies, the companies' runs): serve it on loopback behind"
                " a TLS proxy, or pass --no-web to keep only /metrics and /healthz there",
            )

    def _check_dataplane_tls(self) -> None:
        """The data plane's TLS settings hang together, and its listener is no weaker than
        gRPC's: it serves the same companies' data (loopback is exempt: only this host
        reaches it, as it reaches the data directory)."""
        if bool(self.dataplane_tls_cert) != bool(self.dataplane_tls_key):
            raise InvalidRequest(
                "dataplane_tls_cert", "--dataplane-tls-cert and --dataplane-tls-key go together"
            )
        if self.dataplane_tls_client_ca and not self.dataplane_tls_cert:
            raise InvalidRequest(
                "dataplane_tls_client_ca",
                "client certificates need --dataplane-tls-cert/--dataplane-tls-key",
            )
        if not self.embedded_dataplane:
            if self.dataplane_tls_cert:
                raise InvalidRequest(
                    "dataplane_tls_cert",
                    "the data plane's TLS settings are for the embedded data plane, which does"
                    " not run with --jobs-url",
                )
            return
        plane = Address.parse(self.dataplane_listen, "dataplane_listen")
        if plane.is_loopback:
            return
        if self.tls_cert and not self.dataplane_tls_cert:
            raise InvalidRequest(
                "dataplane_listen",
                f"gRPC serves TLS but the data plane would serve {plane} in plain HTTP: give "
                "--dataplane-tls-cert and --dataplane-tls-key, or a loopback --dataplane-listen",
            )
        if self.tls_client_ca and not self.dataplane_tls_client_ca:
            raise InvalidRequest(
                "dataplane_listen",
                f"gRPC requires client certificates but the data plane on {plane} would not: "
                "give --dataplane-tls-client-ca, or a loopback --dataplane-listen",
            )

    def _check_quotas(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("quota_") and not 0 <= value < math.inf:
                raise InvalidRequest(f.name, "must be 0 (no quota) or a positive number")
        if self.quota_trigger_rate_per_s and self.quota_trigger_burst < 1:
            raise InvalidRequest(
                "quota_trigger_burst", "must be at least 1 while quota_trigger_rate_per_s is set"
            )

    def _check_retention(self) -> None:
        try:
            self.retention_policy().check()
        except InvalidRequest as exc:
            # The policy's words (the API's fields) as the settings name them.
            said = exc.reason.replace("keep_for", "retention_keep_days")
            raise InvalidRequest(_RETENTION_SETTINGS.get(exc.field, exc.field), said) from None
        if not 1.0 <= self.retention_interval_s <= 7 * 86400.0:
            raise InvalidRequest("retention_interval_s", "must be between 1 second and 7 days")

    def retention_policy(self) -> RetentionPolicy:
        """The default retention policy (days in the settings, seconds in the policy)."""
        for name in ("retention_keep_days", "retention_keep_failed_days"):
            if not 0 <= getattr(self, name) < math.inf:
                raise InvalidRequest(name, "must be 0 (no limit) or a positive number of days")
        return RetentionPolicy(
            keep_s=self.retention_keep_days * 86400.0 or None,
            keep_last=self.retention_keep_last,
            keep_failed_s=self.retention_keep_failed_days * 86400.0 or None,
        )

    def quotas(self) -> Quotas:
        return Quotas(
            active_runs=self.quota_active_runs,
            active_schedules=self.quota_active_schedules,
            min_every_s=self.quota_min_every_s,
            trigger_rate_per_s=self.quota_trigger_rate_per_s,
            trigger_burst=self.quota_trigger_burst,
            stored_bytes=self.quota_stored_bytes,
        )

    def _check_store(self) -> None:
        if not self.store:
            return
        # Named by its scheme only: the URL may hold a password.
        parts = urlsplit(self.store)
        if parts.scheme in ("postgresql", "postgres"):
            return
        if parts.scheme != "sqlite":
            scheme = parts.scheme or "no"
            raise InvalidRequest("store", f"{scheme} scheme is not a store: give {_STORE_URLS}")
        if parts.netloc or not parts.path.startswith("/"):
            raise InvalidRequest(
                "store", f"a SQLite store needs an absolute path: give {_STORE_URLS}"
            )

    @property
    def authenticated(self) -> bool:
        """Callers must present a token (a tokens file is configured)."""
        return bool(self.tokens_file)

    def listeners(self) -> dict[str, str]:
        """Every address the daemon listens on, by setting name."""
        found = {"listen": self.listen, "http_listen": self.http_listen}
        if self.embedded_dataplane:
            found["dataplane_listen"] = self.dataplane_listen
        return found

    @property
    def embedded_dataplane(self) -> bool:
        return not self.jobs_url


_FIELDS = {f.name: f for f in fields(Settings) if f.name != "config_file"}
# Sections of the file that are not settings: read by their own parts.
_SECTIONS = {"webhooks"}


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest("config", f"cannot read {path}: {exc}") from exc
    section = data.get("workflowd", data)
    unknown = set(section) - set(_FIELDS) - _SECTIONS
    if unknown:
        raise InvalidRequest("config", f"{path}: unknown settings {sorted(unknown)}")
    return {k: v for k, v in section.items() if k not in _SECTIONS}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        key = _ENV_PREFIX + name.upper()
        if key in env:
            out[name] = env[key]
    return out


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise InvalidRequest(name, "is not a setting")
    default = getattr(Settings(), name)
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, Path):
            return Path(value)
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(name, f"cannot use {value!r}: {exc}") from exc
