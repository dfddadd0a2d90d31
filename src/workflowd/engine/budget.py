"""What a run may store: each value within `JsonBounds`, and all of them together within the
run's budget, so that nothing stored is unreadable and one run always fits one API response."""

from __future__ import annotations

from workflowd.domain.json import Json, JsonBounds, ValueTooLarge
from workflowd.domain.run import Run


class OverBudget(Exception):
    """A value cannot be stored; the message says why, in one sentence."""


class ValueBudget:
    def __init__(self, bounds: JsonBounds, limit: int, run: Run) -> None:
        self._bounds = bounds
        self._limit = limit
        stored = [run.input, *(t.input for t in run.tasks), *(t.output for t in run.tasks)]
        self._spent = sum(self._size(v) for v in stored)
        self._context = self._size(run.context)

    def _size(self, value: Json) -> int:
        try:
            return self._bounds.measure(value)
        except ValueTooLarge as exc:
            raise OverBudget(str(exc)) from None

    def check(self, value: Json) -> None:
        """Raise `OverBudget` if `value` alone breaks the per-value bounds."""
        self._size(value)

    def charge(self, value: Json) -> None:
        """Account for one more stored value (a task's input or output, the run's output)."""
        size = self._size(value)
        self._require(self._spent + self._context + size)
        self._spent += size

    def replace_context(self, context: Json) -> None:
        """The context is replaced, not added to: only its newest size counts."""
        size = self._size(context)
        self._require(self._spent + size)
        self._context = size

    def _require(self, total: int) -> None:
        if total > self._limit:
            raise OverBudget(
                f"the run's stored values would take {total} bytes, over its limit of {self._limit}"
            )
