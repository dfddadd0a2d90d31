"""What every part of the engine shares, built once by the composition root."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from workflowd.engine.clock import Clock
from workflowd.engine.hub import EventHub
from workflowd.engine.metrics import EngineMetrics
from workflowd.engine.ports import ExpressionEvaluator, JobsPort, RunStore


@dataclass(frozen=True, slots=True)
class RunLimits:
    max_input_bytes: int = 1024 * 1024
    max_context_bytes: int = 1024 * 1024
    cancel_grace_s: float = 30.0


@dataclass(frozen=True, slots=True)
class EngineDeps:
    store: RunStore
    jobs: JobsPort
    evaluator: ExpressionEvaluator
    hub: EventHub
    clock: Clock
    metrics: EngineMetrics
    limits: RunLimits = field(default_factory=RunLimits)
    runtime_version: str = "0"
    # Fault injection for crash-recovery tests: the process kills itself (SIGKILL, no cleanup)
    # at the named points. Empty in production.
    crash_points: frozenset[str] = frozenset()

    def crash_point(self, name: str) -> None:
        if name in self.crash_points:
            os.kill(os.getpid(), signal.SIGKILL)
