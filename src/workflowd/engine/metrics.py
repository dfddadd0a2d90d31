"""Engine metrics, exposed in Prometheus format by the HTTP side of the daemon.

The `workflowd_workflow_*` families are per workflow (labels `company` and `workflow`, the
latter `namespace/name`), for alerts on one pipeline: runs ended by status, run durations, the
last success, schedule lateness and decisions, retries, webhook deliveries. Their cardinality is
bounded: the first `max_workflows` workflows seen get their own series, any later one shares
`workflow="other"` (docs/operations.md, "Metrics and alerts").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workflowd.domain.run import Run, RunEvent, RunEventType

_RUN_END = {
    RunEventType.RUN_COMPLETED: "completed",
    RunEventType.RUN_FAILED: "failed",
    RunEventType.RUN_CANCELLED: "cancelled",
}
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600)


OTHER = "other"
Backlog = Callable[[datetime], tuple[int, datetime | None]]
_RUN_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class WorkflowLabels:
    """(company, workflow) label values: `namespace/name` for the first `cap` workflows seen,
    `other` for any after them."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._known: dict[tuple[str, str, str], tuple[str, str]] = {}

    def __call__(self, company: str, namespace: str, name: str) -> tuple[str, str]:
        key = (company, namespace, name)
        found = self._known.get(key)
        if found is not None:
            return found
        if len(self._known) >= self._cap:
            return company, OTHER
        found = self._known[key] = (company, f"{namespace}/{name}")
        return found


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_workflows: int = 500) -> None:
        self.registry = registry or CollectorRegistry()
        self.workflow = WorkflowLabels(max_workflows)
        self._run_started: dict[str, datetime] = {}
        self._last_success: dict[tuple[str, str], float] = {}
        self._backlog: tuple[Backlog, Callable[[], datetime]] | None = None
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
        self.schedule_backlog = Gauge(
            "workflowd_schedule_backlog",
            "Schedules whose instant has come and is not fired yet (waiting for a slot, or "
            "firing): grows when schedules come due faster than the daemon fires them",
            registry=self.registry,
        )
        self.schedule_backlog_age = Gauge(
            "workflowd_schedule_backlog_seconds",
            "How long the oldest instant in the schedule backlog has waited (0: none waits)",
            registry=self.registry,
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

        self._per_workflow()

    def _per_workflow(self) -> None:
        by = ["company", "workflow"]
        self.workflow_runs_ended = Counter(
            "workflowd_workflow_runs_ended",
            "Runs that reached a terminal status, per workflow",
            [*by, "status"],
            registry=self.registry,
        )
        self.workflow_run_duration = Histogram(
            "workflowd_workflow_run_duration_seconds",
            "A run's start to its end, per workflow",
            [*by, "status"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.workflow_last_success = Gauge(
            "workflowd_workflow_last_success_timestamp_seconds",
            "When a run of the workflow last completed (Unix time)",
            by,
            registry=self.registry,
        )
        self.workflow_retries = Counter(
            "workflowd_workflow_task_retries",
            "Task instances a `try` runs again, per workflow",
            by,
            registry=self.registry,
        )
        self.workflow_schedule_decisions = Counter(
            "workflowd_workflow_schedule_decisions",
            "Scheduler decisions, per workflow and outcome",
            [*by, "outcome"],
            registry=self.registry,
        )
        self.workflow_schedule_lateness = Histogram(
            "workflowd_workflow_schedule_lateness_seconds",
            "From a schedule's instant to its fire's commit, per workflow (on-time fires)",
            by,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60),
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "workflowd_webhook_deliveries",
            "Webhook delivery attempts: delivered, retried (an attempt failed), failed (gave up)",
            ["destination", "outcome", *by],
            registry=self.registry,
        )

    def watch_schedule_backlog(
        self,
        backlog: Backlog,
        now: Callable[[], datetime],
    ) -> None:
        """The scheduler's backlog, read when the metrics are scraped (`refresh`)."""
        self._backlog = (backlog, now)

    def refresh(self) -> None:
        """Set what is read from the engine's own state when the metrics are scraped. On the
        event loop, before the text is rendered on a thread: the scheduler's entries are the
        loop's alone, and a walk of them from another thread could meet them changing."""
        if self._backlog is None:
            return
        backlog, now = self._backlog
        at = now()
        count, oldest = backlog(at)
        self.schedule_backlog.set(count)
        age = 0.0 if oldest is None else max((at - oldest).total_seconds(), 0.0)
        self.schedule_backlog_age.set(age)

    def observe_events(self, events: Iterable[RunEvent], run: Run | None = None) -> None:
        for event in events:
            if event.type == RunEventType.RUN_CREATED:
                self.runs_started.inc()
            elif event.type in _RUN_END:
                self.runs_ended.labels(_RUN_END[event.type]).inc()
            if run is not None:
                self._observe_run(event, run)

    def _observe_run(self, event: RunEvent, run: Run) -> None:
        if event.type == RunEventType.RUN_STARTED:
            self._run_started[run.id] = event.time
            return
        labels = self.workflow(run.company, run.namespace, run.name)
        if event.type == RunEventType.TASK_RETRYING:
            self.workflow_retries.labels(*labels).inc()
        status = _RUN_END.get(event.type)
        if status is None:
            return
        self.workflow_runs_ended.labels(*labels, status).inc()
        started = self._run_started.pop(run.id, None) or run.started_at or run.created_at
        took = max((event.time - started).total_seconds(), 0.0)
        self.workflow_run_duration.labels(*labels, status).observe(took)
        if event.type == RunEventType.RUN_COMPLETED:
            self.succeeded(run.company, run.namespace, run.name, event.time)

    def succeeded(self, company: str, namespace: str, name: str, at: datetime) -> None:
        """The workflow's last success is at `at` (or later, if one was seen already)."""
        labels = self.workflow(company, namespace, name)
        latest = max(self._last_success.get(labels, 0.0), at.timestamp())
        self._last_success[labels] = latest
        self.workflow_last_success.labels(*labels).set(latest)
