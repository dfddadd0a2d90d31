"""Prometheus metrics of the data plane, served at `/metrics`.

Worker saturation (busy workers, queued jobs) is read from the companies at scrape time, so
it is never stale; job ends and durations are counted as jobs reach a final state. Each
data plane has its own registry, so several planes (and workflowd's own metrics) can live in
one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


@dataclass(frozen=True)
class Load:
    busy: int
    workers: int
    queued: int
    submitting: int = 0  # submissions waiting for their group commit

    @property
    def saturated(self) -> bool:
        """Every worker is busy and jobs are waiting for one."""
        return self.busy >= self.workers and self.queued > 0


Loads = Callable[[], Iterable[tuple[str, Load]]]


class PlaneMetrics:
    def __init__(self, loads: Loads) -> None:
        self.registry = CollectorRegistry()
        self._ended = Counter(
            "dataplane_jobs_ended",
            "Jobs that reached a final state",
            ["company", "type", "state"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "dataplane_job_duration_seconds",
            "Seconds from a job's start to its final state, for jobs started by this process",
            ["company", "type", "state"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LoadCollector(loads))

    def job_ended(self, company: str, job_type: str, state: str, seconds: float | None) -> None:
        self._ended.labels(company, job_type, state).inc()
        if seconds is not None:
            self._duration.labels(company, job_type, state).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LoadCollector(Collector):
    def __init__(self, loads: Loads) -> None:
        self._loads = loads

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "workers": GaugeMetricFamily(
                "dataplane_workers", "Job worker threads", labels=["company"]
            ),
            "busy": GaugeMetricFamily(
                "dataplane_workers_busy", "Workers running a job", labels=["company"]
            ),
            "queued": GaugeMetricFamily(
                "dataplane_jobs_queued", "Jobs waiting for a worker", labels=["company"]
            ),
            "submitting": GaugeMetricFamily(
                "dataplane_submissions_waiting",
                "Submissions waiting for the next group commit",
                labels=["company"],
            ),
        }
        for company, load in self._loads():
            for field, family in families.items():
                family.add_metric([company], getattr(load, field))
        yield from families.values()
