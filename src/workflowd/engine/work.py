"""One advance of the interpreter in progress, and the helpers its parts share to read the tree.

`Work` holds the cursor an advance changes, its live task instances indexed by key and by owner
(the list, or the fork, that holds each), and what the advance has decided so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from workflowd.domain.json import Json
from workflowd.engine.cursor import Cursor, ListFrame, RunPhase, TaskFrame
from workflowd.engine.flow import RUN_KEY, Advance, TimedOut

CALL = "call"
SLEEP = "sleep"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def truthy(value: Json) -> bool:
    """jq's truthiness: only false and null are false."""
    return value is not None and value is not False


class Work:
    """One advance in progress: the cursor being changed, and what it decided so far."""

    def __init__(self, cursor: Cursor, now: datetime = datetime.min) -> None:
        self.cursor = cursor
        self.now = now
        self.at = iso(now)
        self.advance = Advance(cursor)
        self.frames: dict[str, TaskFrame] = {}
        self.owners: dict[int, ListFrame | TaskFrame | None] = {}
        if cursor.root is not None:
            self._index(cursor.root, None)

    def _index(self, lst: ListFrame, owner: TaskFrame | None) -> None:
        self.owners[id(lst)] = owner
        if lst.task is not None:
            self.adopt(lst.task, lst)

    def adopt(self, frame: TaskFrame, owner: ListFrame | TaskFrame) -> None:
        self.frames[frame.key] = frame
        self.owners[id(frame)] = owner
        if frame.body is not None:
            self._index(frame.body, frame)
        for branch in frame.branches or ():
            if branch is not None:
                self.adopt(branch, frame)

    def owner(self, frame: TaskFrame | ListFrame) -> ListFrame | TaskFrame | None:
        return self.owners.get(id(frame))

    def holder(self, lst: ListFrame) -> TaskFrame | None:
        """The task instance running `lst` (None: the run's own list)."""
        owner = self.owners.get(id(lst))
        assert owner is None or isinstance(owner, TaskFrame)
        return owner

    def stop(self, key: str) -> None:
        """The step of `key` is no longer awaited: not started if this advance asked for it,
        else cancelled."""
        steps = self.advance.steps
        kept = [step for step in steps if step.key != key]
        if len(kept) == len(steps):
            self.advance.cancels.append(key)
        else:
            steps[:] = kept


def walk(cursor: Cursor) -> Iterator[TaskFrame]:
    """Every live task instance of the cursor."""
    return iter(Work(cursor).frames.values())


def deadlines(cursor: Cursor) -> list[tuple[TimedOut, datetime]]:
    """Every deadline the cursor has, as the outcome it will be, and when."""
    if cursor.phase == RunPhase.DONE:
        return []
    found: list[tuple[TimedOut, datetime]] = []
    if cursor.deadline:
        found.append((TimedOut(RUN_KEY), parse_iso(cursor.deadline)))
    for frame in walk(cursor):
        if frame.deadline:
            found.append((TimedOut(frame.key), parse_iso(frame.deadline)))
        if frame.attempt_deadline:
            found.append((TimedOut(frame.key, True), parse_iso(frame.attempt_deadline)))
    return found
