"""Engine metrics, exposed in Prometheus format by the HTTP side of the daemon."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workflowd.domain.run import RunEvent, RunEventType

_RUN_END = {
    RunEventType.RUN_COMPLETED: "completed",
    RunEventType.RUN_FAILED: "failed",
    RunEventType.RUN_CANCELLED: "cancelled",
}
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs_started = Counter(
            "workflowd_runs_started", "Runs created", registry=self.registry
        )
        self.runs_ended = Counter(
            "workflowd_runs_ended",
            "Runs that reached a terminal status",
            ["status"],
            registry=self.registry,
        )
        self.active_runs = Gauge(
            "workflowd_active_runs", "Runs executing in this process", registry=self.registry
        )
        self.watchers = Gauge(
            "workflowd_watchers", "Open WatchRun/WatchRuns streams", registry=self.registry
        )
        self.task_duration = Histogram(
            "workflowd_task_duration_seconds",
            "Task start to end",
            ["call", "status"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.job_wait = Histogram(
            "workflowd_job_wait_seconds",
            "Job submitted to terminal",
            ["call"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "workflowd_event_loop_lag_seconds",
            "How late the event loop runs a timer it was asked to run",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1),
            registry=self.registry,
        )
        self.schedule_fires = Counter(
            "workflowd_schedule_fires",
            "Scheduler decisions, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.fire_lateness = Histogram(
            "workflowd_schedule_fire_lateness_seconds",
            "From a schedule's instant to its fire's commit (on-time fires)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60),
            registry=self.registry,
        )
        self.active_schedules = Gauge(
            "workflowd_active_schedules", "Schedules the scheduler waits on", registry=self.registry
        )
        self.store_writes_queued = Gauge(
            "workflowd_store_writes_queued",
            "Store changes waiting for the writer's next batch (a backlog grows here)",
            registry=self.registry,
        )
        self.jobs_awaited = Gauge(
            "workflowd_jobs_awaited",
            "Jobs whose end this process waits for (after a restart: the runs re-attached)",
            registry=self.registry,
        )
        self.jobs_api_errors = Counter(
            "workflowd_jobs_api_errors",
            "Jobs API calls that failed",
            ["kind"],
            registry=self.registry,
        )

    def observe_events(self, events: Iterable[RunEvent]) -> None:
        for event in events:
            if event.type == RunEventType.RUN_CREATED:
                self.runs_started.inc()
            elif event.type in _RUN_END:
                self.runs_ended.labels(_RUN_END[event.type]).inc()
