"""Workflow definitions: validate, store as versions, read, list, archive."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from workflowd.domain import ids
from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.errors import (
    FailedPrecondition,
    InvalidRequest,
    InvalidSpecification,
    NotFound,
)
from workflowd.domain.page import Page
from workflowd.domain.quotas import Quotas
from workflowd.domain.workflow import NewWorkflowVersion, Workflow, WorkflowFilter, WorkflowHead
from workflowd.engine import fires
from workflowd.engine.clock import Clock
from workflowd.engine.ports import WorkflowStore
from workflowd.spec import Limits, ValidationResult, parse, validate

_DEFINITION_CACHE = 256


HOW_TO_NAME = "name a workflow by its workflow_id, or by namespace and name"

Admit = Callable[[WorkflowDefinition], Awaitable[None]]

# Runs deleted per write: each batch holds the store's writer for a few milliseconds.
DELETE_BATCH = 25


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """A workflow named by id, or by namespace and name (both: they must name the same
    workflow); `version` empty means current."""

    workflow_id: str = ""
    namespace: str = ""
    name: str = ""
    version: str = ""
    id_field: str = "workflow_id"  # what the request calls the id, for error messages

    def check(self) -> None:
        if self.version:
            ids.check_version("version", self.version)
        if self.workflow_id:
            try:
                ids.check_uuid(self.id_field, self.workflow_id, "workflow")
            except InvalidRequest as exc:
                raise InvalidRequest(self.id_field, f"{exc.reason}: {HOW_TO_NAME}") from None
            if not (self.namespace or self.name):
                return
        elif not (self.namespace or self.name):
            raise InvalidRequest(self.id_field, f"is required: {HOW_TO_NAME}")
        if not self.namespace:
            raise InvalidRequest("namespace", f"is required with name: {HOW_TO_NAME}")
        if not self.name:
            raise InvalidRequest("name", f"is required with namespace: {HOW_TO_NAME}")
        ids.check_name("namespace", self.namespace)
        ids.check_name("name", self.name)

    def agrees(self, workflow: Workflow | WorkflowHead) -> None:
        """A workflow found by id must also be the one namespace and name say, when given."""
        named = self.namespace or self.name
        if named and (workflow.namespace, workflow.name) != (self.namespace, self.name):
            raise InvalidRequest(
                self.id_field,
                f"names {workflow.namespace}/{workflow.name}, but namespace and name say "
                f"{self.namespace}/{self.name}: give one or the other",
            )


class Definitions:
    def __init__(
        self, store: WorkflowStore, clock: Clock, limits: Limits, quotas: Quotas | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._limits = limits
        self._quotas = quotas or Quotas()
        self._parsed: OrderedDict[tuple[str, str], WorkflowDefinition] = OrderedDict()

    async def definition(self, workflow: Workflow) -> WorkflowDefinition:
        """The parsed definition of the workflow's version, cached (LRU) since runs of the
        same version share it; parsing a large spec must not stall the event loop."""
        cached = self._cached(workflow.id, workflow.version)
        if cached is not None:
            return cached
        return await self._parse(workflow.id, workflow.version, workflow.specification)

    async def head(self, company: str, ref: WorkflowRef) -> WorkflowHead:
        """The workflow a new run is of, at its current version (or `ref.version`): what
        `get` says of it, in one statement rather than three, without its specification."""
        ref.check()
        head = await self._store.workflow_head(
            company,
            workflow_id=ref.workflow_id,
            namespace=ref.namespace,
            name=ref.name,
            version=ref.version,
        )
        if head is None:
            # The refusal's words (which of the workflow or its version is missing) are
            # `get`'s; it answers only if the workflow appeared meanwhile.
            return (await self.get(company, ref)).head
        ref.agrees(head)
        return head

    async def definition_of(self, head: WorkflowHead) -> WorkflowDefinition:
        """`definition`, reading the version's specification only when it is not cached."""
        cached = self._cached(head.id, head.version)
        if cached is not None:
            return cached
        text = await self._store.specification(head.id, head.version)
        if text is None:  # a workflow deleted since its head was read
            raise NotFound(f"workflow {head.namespace}/{head.name} not found")
        return await self._parse(head.id, head.version, text)

    def _cached(self, workflow_id: str, version: str) -> WorkflowDefinition | None:
        key = (workflow_id, version)
        cached = self._parsed.get(key)
        if cached is not None:
            self._parsed.move_to_end(key)
        return cached

    async def _parse(self, workflow_id: str, version: str, text: str) -> WorkflowDefinition:
        parsed = await asyncio.to_thread(parse, text, self._limits)
        self._remember((workflow_id, version), parsed)
        return parsed

    def _remember(self, key: tuple[str, str], definition: WorkflowDefinition) -> None:
        self._parsed[key] = definition
        if len(self._parsed) > _DEFINITION_CACHE:
            self._parsed.popitem(last=False)

    async def validate(self, text: str) -> ValidationResult:
        # Parsing 256 KiB of YAML takes long enough to stall other RPCs: keep it off the loop.
        return await asyncio.to_thread(validate, text, self._limits)

    async def create(
        self,
        company: str,
        text: str,
        tags: tuple[str, ...],
        require_schedule: bool = False,
        admit: Admit | None = None,
    ) -> tuple[Workflow, bool]:
        """Store a version; `admit`, given the valid definition, may refuse it before it is
        stored (its schedule's input, which its input.schema must accept)."""
        result = await self.validate(text)
        if result.definition is None or not result.valid:
            raise InvalidSpecification(result.diagnostics)
        if require_schedule and result.definition.schedule is None:
            raise FailedPrecondition(
                "the specification has no schedule block to activate: add schedule.cron or "
                "schedule.every, or create it without schedule_immediately"
            )
        if require_schedule and result.definition.schedule is not None:
            self._quotas.check_every(result.definition.schedule.every_s)
        ids.check_tags("tags", tags)
        definition = result.definition
        if admit is not None:
            await admit(definition)
        new = NewWorkflowVersion(
            company=company,
            namespace=definition.namespace,
            name=definition.name,
            version=definition.version,
            specification=text,
            tags=tags,
            now=self._clock.now(),
            schedule=definition.schedule,
        )
        workflow, created = await self._store.save_version(new, fires.next_fire)
        self._remember((workflow.id, workflow.version), definition)
        return workflow, created

    async def get(self, company: str, ref: WorkflowRef) -> Workflow:
        ref.check()
        workflow = await self._store.get_workflow(
            company,
            workflow_id=ref.workflow_id,
            namespace=ref.namespace,
            name=ref.name,
            version=ref.version,
        )
        ref.agrees(workflow)
        return workflow

    async def list(
        self, company: str, filt: WorkflowFilter, size: int, token: str
    ) -> Page[Workflow]:
        if filt.namespace:
            ids.check_name("namespace", filt.namespace)
        if filt.name:
            ids.check_name("name", filt.name)
        if filt.tag:
            ids.check_tag("tag", filt.tag)
        return await self._store.list_workflows(company, filt, size, token)

    async def unarchive(self, company: str, workflow_id: str) -> Workflow:
        ids.check_uuid("workflow_id", workflow_id, "workflow")
        return await self._store.unarchive_workflow(company, workflow_id, self._clock.now())

    async def delete(self, company: str, workflow_id: str) -> tuple[int, int]:
        """Delete an archived workflow with everything it has; (runs, versions) deleted. Its
        runs go in batches (each a short write), then the workflow itself: a delete cut short
        leaves the workflow archived with fewer runs, and is finished by asking again."""
        ids.check_uuid("workflow_id", workflow_id, "workflow")
        runs = 0
        while deleted := await self._store.delete_workflow_runs(company, workflow_id, DELETE_BATCH):
            runs += deleted
        versions = await self._store.delete_workflow(company, workflow_id)
        self._parsed = OrderedDict(
            (key, parsed) for key, parsed in self._parsed.items() if key[0] != workflow_id
        )
        return runs, versions

    async def archive(self, company: str, workflow_id: str) -> Workflow:
        if not workflow_id:
            raise InvalidRequest("id", "is required")
        ids.check_uuid("id", workflow_id, "workflow")
        return await self._store.archive_workflow(company, workflow_id, self._clock.now())
