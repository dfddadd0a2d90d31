"""Retention: how long ended runs are kept, per workflow, per namespace, or by the daemon's
default, and which runs a sweep may delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from workflowd.domain.errors import InvalidRequest
from workflowd.domain.run import RunStatus

MAX_KEEP_S = 100 * 366 * 86400.0
PolicyKey = tuple[str, str, str]
"""(company, namespace, workflow_id) of a stored policy; a namespace's has no workflow id."""
MAX_KEEP_LAST = 1_000_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """An ended run goes once it is past its age limit (`keep_s` after its end; `keep_failed_s`
    for a failed one) and is not among the `keep_last` newest ended runs of its workflow; every
    limit that is set must let it go, and a run no limit applies to stays (None and 0 are no
    limit: a policy without any keeps everything)."""

    keep_s: float | None = None
    keep_last: int = 0
    keep_failed_s: float | None = None

    @property
    def empty(self) -> bool:
        return self.keep_s is None and not self.keep_last and self.keep_failed_s is None

    def check(self, prefix: str = "") -> None:
        for field, value in (("keep_for", self.keep_s), ("keep_failed_for", self.keep_failed_s)):
            if value is not None and not 0 < value <= MAX_KEEP_S:
                raise InvalidRequest(f"{prefix}{field}", "must be between 1 second and 100 years")
        if not 0 <= self.keep_last <= MAX_KEEP_LAST:
            raise InvalidRequest(f"{prefix}keep_last", f"must be between 0 and {MAX_KEEP_LAST}")
        if (
            self.keep_s is not None
            and self.keep_failed_s is not None
            and self.keep_failed_s < self.keep_s
        ):
            raise InvalidRequest(
                f"{prefix}keep_failed_for",
                "must be at least keep_for: failed runs are kept as long as the others, or longer",
            )

    def limit_s(self, status: RunStatus) -> float | None:
        """The age limit of an ended run in `status`."""
        if status == RunStatus.FAILED and self.keep_failed_s is not None:
            return self.keep_failed_s
        return self.keep_s

    def goes(self, status: RunStatus, ended_at: datetime | None, now: datetime) -> bool:
        """Whether an ended run beyond the `keep_last` newest goes: past the age limit of its
        status, or, without one, when `keep_last` is what limits it."""
        limit = self.limit_s(status)
        if limit is None:
            return bool(self.keep_last)
        return ended_at is not None and ended_at < now - timedelta(seconds=limit)

    def newest_cutoff(self, now: datetime) -> datetime | None:
        """No run created after this instant goes yet (its end came later still); None when
        a run may go whatever its age."""
        return None if self.keep_s is None else now - timedelta(seconds=self.keep_s)


class RetentionSource(StrEnum):
    NONE = "none"
    DEFAULT = "default"
    NAMESPACE = "namespace"
    WORKFLOW = "workflow"


@dataclass(frozen=True, slots=True)
class RetentionScope:
    """A company's workflow (`workflow_id`, with its namespace), a namespace, or neither: the
    daemon's default (or, to apply, every workflow of the company)."""

    namespace: str = ""
    workflow_id: str = ""


@dataclass(frozen=True, slots=True)
class RetentionView:
    policy: RetentionPolicy | None
    """The scope's own policy."""
    effective: RetentionPolicy
    source: RetentionSource


@dataclass(frozen=True, slots=True)
class Sweep:
    """One batch of one workflow's runs, looked at in `seq` order."""

    deleted: int
    protected: int
    next_after: int | None
    """The `seq` to go on after; None when the workflow has nothing more to look at."""


@dataclass(frozen=True, slots=True)
class RetentionOutcome:
    deleted: int = 0
    protected: int = 0
    workflows: int = 0
    dry_run: bool = False
