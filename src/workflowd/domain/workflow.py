"""Stored workflows and their versions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from workflowd.domain.definition import Schedule


class WorkflowStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow as seen at one `version` (the current one unless another was asked for)."""

    id: str
    company: str
    namespace: str
    name: str
    version: str
    current_version: str
    versions: tuple[str, ...]
    specification: str
    tags: tuple[str, ...]
    status: WorkflowStatus
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None

    @property
    def head(self) -> WorkflowHead:
        return WorkflowHead(
            self.id, self.company, self.namespace, self.name, self.version, self.status
        )


@dataclass(frozen=True, slots=True)
class WorkflowHead:
    """What a new run needs of its workflow: which one, at which version, and whether it still
    accepts runs (read in one statement: a trigger does not need the specification's text,
    whose parsed definition is cached by version)."""

    id: str
    company: str
    namespace: str
    name: str
    version: str
    status: WorkflowStatus


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    namespace: str = ""
    tag: str = ""
    status: WorkflowStatus | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class NewWorkflowVersion:
    """A validated specification to store as a version of (company, namespace, name)."""

    company: str
    namespace: str
    name: str
    version: str
    specification: str
    tags: tuple[str, ...]
    now: datetime
    schedule: Schedule | None = None
    """The version's `schedule` block: an active schedule follows it when the version is
    stored."""
