"""The trigger-rate quota: a token bucket per company, kept in this process (each replica keeps
its own, so N replicas admit up to N times the rate)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from workflowd.domain.errors import QuotaExceeded
from workflowd.domain.quotas import Quotas


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TriggerRate:
    def __init__(self, quotas: Quotas, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = quotas.trigger_rate_per_s
        self._burst = float(quotas.trigger_burst)
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def take(self, company: str) -> None:
        """One run for `company`, or QuotaExceeded saying when to retry."""
        if not self._rate:
            return
        now = self._monotonic()
        bucket = self._buckets.get(company)
        if bucket is None:
            bucket = self._buckets[company] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens < 1:
            wait_s = (1 - bucket.tokens) / self._rate
            raise QuotaExceeded(
                f"the company asks for runs faster than its quota of {self._rate:g} per second "
                f"in bursts of up to {self._burst:g} (settings quota_trigger_rate_per_s and "
                f"quota_trigger_burst): retry in {wait_s:.2g} s",
                "quota_trigger_rate_per_s",
            )
        bucket.tokens -= 1
