"""One retry policy for every place workflowd tries again: a DSL `try`'s `retry`, the jobs
client's transport faults, the background cancels of orphaned jobs, the local data plane's
restarts.

`Backoff` says how long to wait before the n-th retry; `RetryPolicy` adds when to stop (how many
attempts, how long in all) and, for the DSL, how long one attempt may take.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from workflowd.domain.json import Json

Uniform = Callable[[float, float], float]
"""A source of randomness: a number drawn uniformly from [a, b] (`random.uniform`)."""


class BackoffKind(StrEnum):
    CONSTANT = "constant"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before retry n (1, 2, …): constant `delay_s`, linear `delay_s · n` or
    exponential `delay_s · 2^(n-1)`, capped at `max_delay_s`; then `spread` takes a random
    share off it (0: none, 0.5: "equal jitter", 1: "full jitter", drawn from [0, delay]) and a
    random extra from `jitter_s` is added (the DSL's `jitter: {from, to}`)."""

    delay_s: float
    kind: BackoffKind = BackoffKind.EXPONENTIAL
    max_delay_s: float | None = None
    spread: float = 0.0
    jitter_s: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.delay_s < 0 or not 0 <= self.spread <= 1:
            raise ValueError("a backoff needs delay_s >= 0 and 0 <= spread <= 1")
        if not 0 <= self.jitter_s[0] <= self.jitter_s[1]:
            raise ValueError("a backoff's jitter must satisfy 0 <= from <= to")

    def delay(self, retry: int, uniform: Uniform = random.uniform) -> float:
        base = self.delay_s
        if self.kind is BackoffKind.LINEAR:
            base *= retry
        elif self.kind is BackoffKind.EXPONENTIAL:
            # 2**n overflows a float long before a retry count does.
            base *= 2.0 ** min(retry - 1, 1000)
        if self.max_delay_s is not None:
            base = min(base, self.max_delay_s)
        if self.spread:
            base = uniform(base * (1 - self.spread), base)
        low, high = self.jitter_s
        return base + (uniform(low, high) if high else 0.0)

    def delays(self, uniform: Uniform = random.uniform) -> BackoffDelays:
        """The delays of successive retries, from the first; `reset()` starts over."""
        return BackoffDelays(self, uniform)


class BackoffDelays:
    """Successive delays of one backoff (a connection that retries until it holds)."""

    def __init__(self, backoff: Backoff, uniform: Uniform) -> None:
        self._backoff = backoff
        self._uniform = uniform
        self._retry = 0

    def next(self) -> float:
        self._retry += 1
        return self._backoff.delay(self._retry, self._uniform)

    def reset(self) -> None:
        self._retry = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again and when to stop. `max_attempts` counts executions (the DSL's
    `limit.attempt.count` retries are count + 1 executions); `max_elapsed_s` bounds the whole
    (no retry starts later than that after the first attempt started); `attempt_timeout_s`
    bounds one attempt. `when` and `except_when` are the DSL's expressions, kept as written
    (None elsewhere)."""

    backoff: Backoff
    max_attempts: int | None = None
    max_elapsed_s: float | None = None
    attempt_timeout_s: float | None = None
    when: Json = None
    except_when: Json = None

    def next_delay(
        self, failed_attempt: int, elapsed_s: float, uniform: Uniform = random.uniform
    ) -> float | None:
        """The delay before the attempt after `failed_attempt` (1-based), `elapsed_s` after the
        first attempt started; None when the policy allows no more."""
        if self.max_attempts is not None and failed_attempt >= self.max_attempts:
            return None
        delay = self.backoff.delay(failed_attempt, uniform)
        if self.max_elapsed_s is not None and elapsed_s + delay > self.max_elapsed_s:
            return None
        return delay
