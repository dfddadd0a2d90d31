"""Per-company quotas: how much of the daemon one company may take, so that one company cannot
starve or stop the others. Each is a setting (`quota_*`); 0 turns it off. A refusal is
`QuotaExceeded` (RESOURCE_EXHAUSTED), one sentence naming the quota, its value and its setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflowd.domain.errors import QuotaExceeded

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Quotas:
    # Runs pending, running or cancelling (a backfill counts all the runs it creates).
    active_runs: int = 1000
    active_schedules: int = 100
    # The shortest `schedule.every` a schedule may fire at (a cron fires at most once a minute).
    min_every_s: float = 60.0
    # Runs asked for by a caller (TriggerWorkflow, trigger_immediately): a token bucket per
    # company, refilled at `trigger_rate_per_s` up to `trigger_burst` tokens.
    trigger_rate_per_s: float = 50.0
    trigger_burst: int = 500
    # Bytes of run values (run inputs, task inputs and outputs, job requests, contexts, run
    # outputs) the store keeps for the company, counted in the transactions that store them.
    stored_bytes: int = 10 * GIB

    def check_active_runs(self, active: int, adding: int = 1) -> None:
        """Refuse `adding` more runs to a company that has `active` runs."""
        limit = self.active_runs
        if limit and active + adding > limit:
            more = f"{adding} more" if adding > 1 else "another"
            raise QuotaExceeded(
                f"the company has {active} active runs, and {more} would pass its quota of "
                f"{limit} active runs (setting quota_active_runs): retry once runs have ended",
                "quota_active_runs",
            )

    def check_active_schedules(self, active: int) -> None:
        """Refuse one more active schedule to a company that has `active`."""
        limit = self.active_schedules
        if limit and active >= limit:
            raise QuotaExceeded(
                f"the company has {active} active schedules, its quota of {limit} "
                "(setting quota_active_schedules): unschedule a workflow first",
                "quota_active_schedules",
            )

    def check_every(self, every_s: float | None) -> None:
        """Refuse a schedule that fires more often than the quota allows."""
        limit = self.min_every_s
        if every_s is not None and limit and every_s < limit:
            raise QuotaExceeded(
                f"schedule.every is {every_s:g} s, shorter than the quota of {limit:g} s "
                "between fires (setting quota_min_every_s): use a longer interval",
                "quota_min_every_s",
            )

    def check_stored(self, stored: int, adding: int) -> None:
        """Refuse `adding` bytes of run values to a company that stores `stored`."""
        limit = self.stored_bytes
        if limit and adding > 0 and stored + adding > limit:
            raise QuotaExceeded(
                f"storing {adding} more bytes of run values would bring the company's to "
                f"{stored + adding}, over its quota of {limit} bytes (setting "
                "quota_stored_bytes)",
                "quota_stored_bytes",
            )
