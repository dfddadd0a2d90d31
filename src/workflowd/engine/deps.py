"""What every part of the engine shares, built once by the composition root."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from workflowd.domain.definition import FlowLimits
from workflowd.domain.json import JsonBounds
from workflowd.domain.quotas import Quotas
from workflowd.engine.clock import Clock
from workflowd.engine.hub import EventHub
from workflowd.engine.metrics import EngineMetrics
from workflowd.engine.orphans import OrphanJobs
from workflowd.engine.ports import ExpressionEvaluator, JobsPort, RunStore
from workflowd.engine.tracing import Tracing


@dataclass(frozen=True, slots=True)
class RunLimits:
    cancel_grace_s: float = 30.0
    # Every value a run stores (its input, each task's input and output, the context, the run's
    # output) is checked against these where it enters, so nothing stored is unreadable.
    values: JsonBounds = field(default_factory=JsonBounds)
    # All of them together, so that one run always fits one API response (gRPC clients
    # receive 4 MiB by default; the rest is the run's own fields and its tasks').
    max_run_value_bytes: int = 3 * 1024 * 1024
    flow: FlowLimits = field(default_factory=FlowLimits)


@dataclass(frozen=True, slots=True)
class EngineDeps:
    store: RunStore
    jobs: JobsPort
    evaluator: ExpressionEvaluator
    hub: EventHub
    clock: Clock
    metrics: EngineMetrics
    orphans: OrphanJobs
    limits: RunLimits = field(default_factory=RunLimits)
    # Per company; the store enforces those counted in its transactions by itself.
    quotas: Quotas = field(default_factory=Quotas)
    runtime_version: str = "0"
    tracing: Tracing = field(default_factory=Tracing)
    # Fault injection for the crash-recovery tests, which start the daemon through their own
    # entry point (tests/crashing_daemon.py): the process kills itself (SIGKILL, no cleanup)
    # at the named points. No setting, flag or environment variable can fill it.
    crash_points: frozenset[str] = frozenset()

    def crash_point(self, name: str) -> None:
        if name in self.crash_points:
            os.kill(os.getpid(), signal.SIGKILL)
