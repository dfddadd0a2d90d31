"""The jobs client's settings: a frozen value built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from workflowd.domain.retry import Backoff


@dataclass(frozen=True, slots=True)
class JobsClientConfig:
    base_url: str
    token: str | None = None
    # Every call names this company instead of the caller's: a daemon without tokens (one
    # company) sharing a jobs system with others through one service token.
    company: str | None = None
    # A CA certificate (PEM file) the jobs API's TLS certificate must chain to, instead of the
    # system's trust store.
    ca_file: str | None = None
    # The SHA-256 of the one certificate the jobs API must present (the local data plane's):
    # checked before any request is sent, instead of a CA and a host name.
    pinned_sha256: bytes | None = None
    # Connecting, and each wait for the server's bytes, may take this long before it is a fault.
    request_timeout_s: float = 10.0
    # Transport faults are retried for this long, then the call fails with a communication error.
    retry_deadline_s: float = 300.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    poll_interval_initial_s: float = 0.1
    poll_interval_max_s: float = 5.0
    # No bytes at all (keepalives included) for this long means a dead stream: reconnect.
    stream_idle_timeout_s: float = 45.0
    # Even with a healthy stream, awaited jobs are re-read this often (one batched request).
    reconcile_interval_s: float = 60.0
    tag: str = "workflow_enqueued"
    # A single SSE line (one job's JSON) larger than this is refused rather than buffered.
    max_event_bytes: int = 16 * 1024 * 1024
    # Connection-pool size of the shared session (the stream holds one of them).
    max_connections: int = 100

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"jobs base_url must be http(s)://…, got {self.base_url!r}")
        for name in (
            "request_timeout_s",
            "retry_deadline_s",
            "stream_idle_timeout_s",
            "reconcile_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff must satisfy 0 < backoff_initial_s <= backoff_max_s")
        if not 0 < self.poll_interval_initial_s <= self.poll_interval_max_s:
            raise ValueError("poll intervals must satisfy 0 < initial <= max")

    @property
    def backoff(self) -> Backoff:
        """Transport faults' retries: capped exponential with full jitter."""
        return Backoff(self.backoff_initial_s, max_delay_s=self.backoff_max_s, spread=1.0)
