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
