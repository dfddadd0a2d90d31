"""The kinds that run their tasks more than once or side by side: `for` (an iteration is a
run of its list) and `fork` (each branch is an instance held by the fork). How they go where
the DSL leaves a choice is listed in `interpreter.py`."""

from __future__ import annotations

from workflowd.domain.definition import Flow, ForBody, ForkBody, Task
from workflowd.domain.json import Json, JsonObject, ValueTooLarge
from workflowd.domain.run import ErrorType, Problem
from workflowd.engine.cursor import TaskFrame
from workflowd.engine.flow import Evaluate, Purpose
from workflowd.engine.kinds import Kind
from workflowd.engine.work import Work, truthy
from workflowd.spec.fields import type_name


class For(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        self.core.await_step(work, frame, Purpose.IN)

    def evaluation(
        self, frame: TaskFrame, task: Task, purpose: Purpose, variables: JsonObject
    ) -> Evaluate:
        body, ref = task.body, task.reference
        assert isinstance(body, ForBody)
        if purpose == Purpose.IN:
            return Evaluate(frame.key, purpose, body.in_, frame.input, variables, f"{ref}/for/in")
        variables = {**variables, **_loop_scope(frame, body)}
        return Evaluate(frame.key, purpose, body.while_, frame.output, variables, f"{ref}/while")

    def evaluated(
        self, work: Work, frame: TaskFrame, task: Task, purpose: Purpose, value: Json
    ) -> None:
        if purpose == Purpose.IN:
            self._items(work, frame, task, value)
        elif truthy(value):
            self._iteration(work, frame, task)
        else:
            self.core.body_done(work, frame, task, frame.output)

    def done(self, work: Work, frame: TaskFrame, task: Task, data: Json) -> None:
        frame.item += 1
        frame.output = data
        self._iterate(work, frame, task)

    def _items(self, work: Work, frame: TaskFrame, task: Task, value: Json) -> None:
        limit = self.core.limits.max_iterations
        if not isinstance(value, list):
            title = f"task {task.name}'s for.in must yield an array"
            detail = f"it yielded {type_name(value)}"
            problem = Problem.of(ErrorType.VALIDATION, title, detail, task.reference)
            self.core.fault(work, frame, task, problem)
        elif len(value) > limit:
            title = f"task {task.name}'s for.in yielded {len(value)} items; the limit is {limit}"
            detail = "the limit is the setting max_iterations"
            problem = Problem.of(ErrorType.VALIDATION, title, detail, f"{task.reference}/for/in")
            self.core.fault(work, frame, task, problem)
        else:
            frame.items, frame.item, frame.output = value, 0, frame.input
            self._iterate(work, frame, task)

    def _iterate(self, work: Work, frame: TaskFrame, task: Task) -> None:
        assert isinstance(task.body, ForBody)
        assert frame.items is not None
        if frame.item >= len(frame.items):
            self.core.body_done(work, frame, task, frame.output)
        elif task.body.while_ is not None:
            self.core.await_step(work, frame, Purpose.WHILE)
        else:
            self._iteration(work, frame, task)

    def _iteration(self, work: Work, frame: TaskFrame, task: Task) -> None:
        body = task.body
        assert isinstance(body, ForBody)
        path = (*frame.path, f"i{frame.item}")
        self.core.open(work, frame, body.tasks, frame.output, path, _loop_scope(frame, body))


def _loop_scope(frame: TaskFrame, body: ForBody) -> JsonObject:
    assert frame.items is not None
    return {**frame.scope, body.each: frame.items[frame.item], body.at: frame.item}


class Fork(Kind):
    def start(self, work: Work, frame: TaskFrame, task: Task) -> None:
        assert isinstance(task.body, ForkBody)
        branches = task.body.branches.tasks
        count = len(branches)
        frame.branches, frame.results, frame.ended = [None] * count, [None] * count, [""] * count
        for index, branch in enumerate(branches):
            if frame.branches is None:
                return  # a branch ended the fork (or the run) as it began
            child = self.core.new_frame(work, frame, branch, frame.input, frame.path, frame.scope)
            if child is None:
                return
            frame.branches[index] = child
            work.adopt(child, frame)
            self.core.begin(work, child, branch)

    def branch_done(
        self, work: Work, fork: TaskFrame, branch: TaskFrame, output: Json, flow: str
    ) -> None:
        task = self.core.definition.task(fork.reference)
        body = task.body
        assert isinstance(body, ForkBody)
        assert fork.branches is not None
        index = _position(fork.branches, branch)
        fork.branches[index] = None
        if flow == Flow.END:
            self.core.end_workflow(work, fork, output)
            return
        assert fork.results is not None
        assert fork.ended is not None
        fork.results[index], fork.ended[index] = output, "done"
        if body.compete:
            won = self.core.definition.task(branch.reference).name
            self.core.cancel_branches(work, fork, f"cancelled: branch {won} completed first")
            self.core.body_done(work, fork, task, output)
        elif all(fork.ended):
            fork.branches = None
            outputs = list(fork.results)
            try:
                self.core.limits.values.measure(outputs)
            except ValueTooLarge as exc:
                # The branches' outputs are checked as they come, but together they may not
                # fit (and a fork that passes its input on, fed back by a `then` loop, grows
                # its output as a power of the rounds).
                title = f"the output of fork {task.name} cannot be kept"
                problem = Problem.of(ErrorType.VALIDATION, title, str(exc), task.reference)
                self.core.fault(work, fork, task, problem)
                return
            self.core.body_done(work, fork, task, outputs)

    def branch_failed(
        self, work: Work, fork: TaskFrame, branch: TaskFrame, problem: Problem
    ) -> None:
        task = self.core.definition.task(fork.reference)
        body = task.body
        assert isinstance(body, ForkBody)
        assert fork.branches is not None
        assert fork.ended is not None
        index = _position(fork.branches, branch)
        fork.branches[index], fork.ended[index] = None, "failed"
        if body.compete and not all(fork.ended):
            fork.failures = [*(fork.failures or []), problem.to_json()]
            return
        first = Problem.from_json(fork.failures[0]) if fork.failures else problem
        self.core.fault(work, fork, task, first)


def _position(branches: list[TaskFrame | None], branch: TaskFrame) -> int:
    return next(i for i, candidate in enumerate(branches) if candidate is branch)
