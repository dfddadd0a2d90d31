"""The WorkflowService servicer: protobuf in, engine calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from google.protobuf.message import Message
from opentelemetry.trace import Tracer

from workflowd.api import convert
from workflowd.api.auth import Authenticator
from workflowd.api.errors import Ctx, streaming, unary
from workflowd.domain import ids
from workflowd.domain.definition import WorkflowDefinition
from workflowd.domain.errors import InvalidRequest
from workflowd.domain.fairness import acting_for
from workflowd.domain.notify import DeliveryFilter
from workflowd.domain.page import Page
from workflowd.domain.retention import RetentionScope
from workflowd.domain.run import RunFilter, RunStatus, WatchFilter
from workflowd.domain.workflow import WorkflowFilter
from workflowd.engine.definitions import Definitions, WorkflowRef
from workflowd.engine.notify import DeliveryLog
from workflowd.engine.reruns import FROM_FAILURE
from workflowd.engine.retention import Retention
from workflowd.engine.runs import Runs, TriggerRequest
from workflowd.engine.schedules import PolicyChange, Schedules
from workflowd.v1 import workflow_service_pb2 as pb
from workflowd.v1 import workflow_service_pb2_grpc as pb_grpc

_PAGE_MARGIN_BYTES = 64 * 1024
_CLIENT_RECEIVE_BYTES = 4 * 1024 * 1024


def _headers(context: Ctx) -> Callable[[], Awaitable[None]]:
    """Send the response headers once the watch is subscribed, so a client that waits for
    them (`wait_for_connection`) knows that no later event can be missed."""

    async def send() -> None:
        await context.send_initial_metadata(())

    return send


def _run_statuses(values: Iterable[pb.RunStatus.ValueType]) -> tuple[RunStatus, ...]:
    statuses = []
    for i, status in enumerate(values):
        if status not in convert.RUN_STATUS_BACK:
            raise InvalidRequest(f"statuses[{i}]", f"unknown run status {status}")
        statuses.append(convert.RUN_STATUS_BACK[status])
    return tuple(statuses)


def _company(service: WorkflowService, context: Ctx) -> str:
    """The caller's company; the rest of the call acts for it (each call is a task of its own)."""
    company = service.authenticator.company(context)
    acting_for.set(company)
    return company


def _named(request: pb.GetWorkflowRequest | pb.ArchiveWorkflowRequest) -> WorkflowRef:
    """The workflow a request names by `workflow_id`, by its deprecated twin `id` (errors then
    name `id`, as they did), or by namespace and name."""
    if request.id and request.workflow_id and request.id != request.workflow_id:
        raise InvalidRequest(
            "id", "is the deprecated name of workflow_id and differs from it: give workflow_id"
        )
    field = "id" if request.id and not request.workflow_id else "workflow_id"
    version = request.version if isinstance(request, pb.GetWorkflowRequest) else ""
    return WorkflowRef(
        request.workflow_id or request.id, request.namespace, request.name, version, field
    )


class WorkflowService(pb_grpc.WorkflowServiceServicer):
    def __init__(
        self,
        definitions: Definitions,
        runs: Runs,
        schedules: Schedules,
        auth: Authenticator,
        *,
        retention: Retention,
        deliveries: DeliveryLog,
        tracer: Tracer | None = None,
        max_message_bytes: int,
    ) -> None:
        self.authenticator = auth
        self.tracer = tracer
        self._deliveries = deliveries
        self._definitions = definitions
        self._runs = runs
        self._schedules = schedules
        self._retention = retention
        # A page ends early rather than exceed what a response may carry: our own send limit,
        # and gRPC clients' default receive limit (4 MiB), which most callers never raise.
        self._page_budget = min(max_message_bytes, _CLIENT_RECEIVE_BYTES) - _PAGE_MARGIN_BYTES

    def _fit(self, page: Page[Any], messages: Sequence[Message]) -> tuple[int, str]:
        return page.cut([m.ByteSize() for m in messages], self._page_budget)

    async def _workflow_id(self, company: str, workflow_id: str, namespace: str, name: str) -> str:
        """The id of the workflow a request names by id, or by namespace and name."""
        ref = WorkflowRef(workflow_id, namespace, name)
        return (await self._definitions.head(company, ref)).id

    async def _runs_of(self, company: str, workflow_id: str, namespace: str, name: str) -> str:
        """The workflow id a run filter selects: namespace and name resolved to it; without a
        name, `workflow_id` and `namespace` filter on their own."""
        if not name:
            return workflow_id
        return await self._workflow_id(company, workflow_id, namespace, name)

    @unary
    async def ValidateWorkflow(
        self, request: pb.ValidateWorkflowRequest, context: Ctx
    ) -> pb.ValidateWorkflowResponse:
        result = await self._definitions.validate(request.specification)
        return pb.ValidateWorkflowResponse(
            valid=result.valid,
            diagnostics=[convert.diagnostic(d) for d in result.diagnostics],
        )

    @unary
    async def CreateWorkflow(
        self, request: pb.CreateWorkflowRequest, context: Ctx
    ) -> pb.CreateWorkflowResponse:
        company = _company(self, context)
        given = request.HasField("schedule_input")
        schedule_input = (
            convert.from_value(request.schedule_input, given, "schedule_input") if given else None
        )

        async def admit(definition: WorkflowDefinition) -> None:
            await self._schedules.admit_version(
                company, definition, request.schedule_immediately, schedule_input
            )

        workflow, created = await self._definitions.create(
            company,
            request.specification,
            tuple(request.tags),
            require_schedule=request.schedule_immediately,
            admit=admit,
        )
        await self._schedules.changed(workflow.id)
        if request.schedule_immediately:
            await self._schedules.activate(
                company, workflow.id, PolicyChange(), False, schedule_input, "schedule_input"
            )
        run_id = ""
        if request.trigger_immediately:
            run = await self._runs.trigger(
                company,
                TriggerRequest(
                    ref=WorkflowRef(workflow_id=workflow.id, version=workflow.version),
                    input=convert.from_value(request.input, request.HasField("input"), "input"),
                ),
            )
            run_id = run.id
        return pb.CreateWorkflowResponse(
            workflow=convert.workflow(workflow), created=created, run_id=run_id
        )

    @unary
    async def GetWorkflow(
        self, request: pb.GetWorkflowRequest, context: Ctx
    ) -> pb.GetWorkflowResponse:
        workflow = await self._definitions.get(_company(self, context), _named(request))
        return pb.GetWorkflowResponse(workflow=convert.workflow(workflow))

    @unary
    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: Ctx
    ) -> pb.ListWorkflowsResponse:
        filt = WorkflowFilter(
            namespace=request.namespace,
            tag=request.tag,
            status=convert.workflow_status_from(request.status),
            name=request.name,
        )
        page = await self._definitions.list(
            _company(self, context), filt, request.page_size, request.page_token
        )
        workflows = [convert.workflow(w) for w in page.items]
        kept, token = self._fit(page, workflows)
        return pb.ListWorkflowsResponse(workflows=workflows[:kept], next_page_token=token)

    @unary
    async def ArchiveWorkflow(
        self, request: pb.ArchiveWorkflowRequest, context: Ctx
    ) -> pb.ArchiveWorkflowResponse:
        company = _company(self, context)
        named = await self._definitions.get(company, _named(request))
        workflow = await self._definitions.archive(company, named.id)
        await self._schedules.changed(workflow.id)
        return pb.ArchiveWorkflowResponse(workflow=convert.workflow(workflow))

    @unary
    async def UnarchiveWorkflow(
        self, request: pb.UnarchiveWorkflowRequest, context: Ctx
    ) -> pb.UnarchiveWorkflowResponse:
        company = _company(self, context)
        workflow_id = await self._workflow_id(
            company, request.workflow_id, request.namespace, request.name
        )
        workflow = await self._definitions.unarchive(company, workflow_id)
        return pb.UnarchiveWorkflowResponse(workflow=convert.workflow(workflow))

    @unary
    async def DeleteWorkflow(
        self, request: pb.DeleteWorkflowRequest, context: Ctx
    ) -> pb.DeleteWorkflowResponse:
        company = _company(self, context)
        workflow_id = await self._workflow_id(
            company, request.workflow_id, request.namespace, request.name
        )
        runs, versions = await self._definitions.delete(company, workflow_id)
        self._schedules.forget(workflow_id)
        return pb.DeleteWorkflowResponse(deleted_runs=runs, deleted_versions=versions)

    @unary
    async def TriggerWorkflow(
        self, request: pb.TriggerWorkflowRequest, context: Ctx
    ) -> pb.TriggerWorkflowResponse:
        ref = WorkflowRef(request.workflow_id, request.namespace, request.name, request.version)
        run = await self._runs.trigger(
            _company(self, context),
            TriggerRequest(
                ref=ref,
                input=convert.from_value(request.input, request.HasField("input"), "input"),
                idempotency_key=request.idempotency_key,
            ),
        )
        return pb.TriggerWorkflowResponse(run=convert.run(run))

    @unary
    async def GetRun(self, request: pb.GetRunRequest, context: Ctx) -> pb.GetRunResponse:
        run = await self._runs.get(_company(self, context), request.run_id)
        return pb.GetRunResponse(run=convert.run(run))

    @unary
    async def ListRuns(self, request: pb.ListRunsRequest, context: Ctx) -> pb.ListRunsResponse:
        company = _company(self, context)
        filt = RunFilter(
            workflow_id=await self._runs_of(
                company, request.workflow_id, request.namespace, request.name
            ),
            namespace=request.namespace,
            id_prefix=request.run_id_prefix,
            statuses=_run_statuses(request.statuses),
            created_after=convert.from_timestamp(
                request.created_after, request.HasField("created_after"), "created_after"
            ),
            created_before=convert.from_timestamp(
                request.created_before, request.HasField("created_before"), "created_before"
            ),
        )
        page = await self._runs.list(company, filt, request.page_size, request.page_token)
        runs = [convert.run(r) for r in page.items]
        kept, token = self._fit(page, runs)
        return pb.ListRunsResponse(runs=runs[:kept], next_page_token=token)

    @unary
    async def CancelRun(self, request: pb.CancelRunRequest, context: Ctx) -> pb.CancelRunResponse:
        run = await self._runs.cancel(_company(self, context), request.run_id, request.reason)
        return pb.CancelRunResponse(run=convert.run(run))

    @unary
    async def DeleteRun(self, request: pb.DeleteRunRequest, context: Ctx) -> pb.DeleteRunResponse:
        await self._runs.delete(_company(self, context), request.run_id)
        return pb.DeleteRunResponse(run_id=request.run_id)

    @unary
    async def RerunRun(self, request: pb.RerunRunRequest, context: Ctx) -> pb.RerunRunResponse:
        given = request.HasField("input")
        run = await self._runs.rerun(
            _company(self, context),
            request.run_id,
            start=request.start or FROM_FAILURE,
            input=convert.from_value(request.input, given, "input") if given else None,
        )
        return pb.RerunRunResponse(run=convert.run(run))

    @streaming
    async def WatchRun(
        self, request: pb.WatchRunRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchRunResponse]:
        if request.after_seq < 0:
            raise InvalidRequest("after_seq", "must not be negative")
        async with self.authenticator.stream(context) as company:
            acting_for.set(company)
            events = self._runs.watch(company, request.run_id, request.after_seq, _headers(context))
            async for event in events:
                yield pb.WatchRunResponse(event=convert.run_event(event))

    @streaming
    async def WatchRuns(
        self, request: pb.WatchRunsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchRunsResponse]:
        async with self.authenticator.stream(context) as company:
            acting_for.set(company)
            filt = WatchFilter(
                workflow_id=await self._runs_of(
                    company, request.workflow_id, request.namespace, request.name
                ),
                namespace=request.namespace,
                statuses=_run_statuses(request.statuses),
                after_global_seq=request.after_global_seq,
            )
            async for event in self._runs.watch_many(company, filt, _headers(context)):
                yield pb.WatchRunsResponse(event=convert.run_event(event))

    @unary
    async def ScheduleWorkflow(
        self, request: pb.ScheduleWorkflowRequest, context: Ctx
    ) -> pb.ScheduleWorkflowResponse:
        change = PolicyChange(
            overlap=convert.overlap_from(request.overlap_policy, "overlap_policy"),
            catchup=convert.catchup_from(request.catchup_policy, "catchup_policy"),
            catchup_window_s=convert.from_duration(
                request.catchup_window, request.HasField("catchup_window"), "catchup_window"
            ),
        )
        company = _company(self, context)
        given = request.HasField("input")
        view, run_id = await self._schedules.activate(
            company,
            await self._workflow_id(company, request.workflow_id, request.namespace, request.name),
            change,
            request.trigger_immediately,
            convert.from_value(request.input, given, "input") if given else None,
        )
        return pb.ScheduleWorkflowResponse(schedule=convert.schedule(view), run_id=run_id)

    @unary
    async def UnscheduleWorkflow(
        self, request: pb.UnscheduleWorkflowRequest, context: Ctx
    ) -> pb.UnscheduleWorkflowResponse:
        company = _company(self, context)
        workflow_id = await self._workflow_id(
            company, request.workflow_id, request.namespace, request.name
        )
        view = await self._schedules.deactivate(company, workflow_id)
        return pb.UnscheduleWorkflowResponse(schedule=convert.schedule(view))

    @unary
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: Ctx
    ) -> pb.GetScheduleResponse:
        company = _company(self, context)
        workflow_id = await self._workflow_id(
            company, request.workflow_id, request.namespace, request.name
        )
        view = await self._schedules.get(company, workflow_id)
        return pb.GetScheduleResponse(schedule=convert.schedule(view))

    @unary
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Ctx
    ) -> pb.ListSchedulesResponse:
        page = await self._schedules.list_page(
            _company(self, context),
            request.namespace,
            request.page_size,
            request.page_token,
        )
        schedules = [convert.schedule(v) for v in page.items]
        kept, token = self._fit(page, schedules)
        return pb.ListSchedulesResponse(schedules=schedules[:kept], next_page_token=token)

    @unary
    async def BackfillWorkflow(
        self, request: pb.BackfillWorkflowRequest, context: Ctx
    ) -> pb.BackfillWorkflowResponse:
        start = convert.required_timestamp(
            request.start_time, request.HasField("start_time"), "start_time"
        )
        end = convert.required_timestamp(request.end_time, request.HasField("end_time"), "end_time")
        company = _company(self, context)
        workflow_id = await self._workflow_id(
            company, request.workflow_id, request.namespace, request.name
        )
        rerun = convert.rerun_policy(request.rerun)
        done = await self._schedules.backfill(
            company, workflow_id, start, end, not request.parallel, rerun
        )
        return pb.BackfillWorkflowResponse(
            run_ids=[run.id for run in done.runs],
            created=len(done.created),
            runs=[convert.backfill_run(run, run.id in done.created) for run in done.runs],
        )

    async def _retention_scope(
        self, company: str, workflow_id: str, namespace: str, name: str
    ) -> RetentionScope:
        """A workflow (by id, or namespace and name), a namespace alone, or neither."""
        if not (workflow_id or name):
            if namespace:
                ids.check_name("namespace", namespace)
            return RetentionScope(namespace=namespace)
        workflow = await self._definitions.get(company, WorkflowRef(workflow_id, namespace, name))
        return RetentionScope(namespace=workflow.namespace, workflow_id=workflow.id)

    @unary
    async def SetRetentionPolicy(
        self, request: pb.SetRetentionPolicyRequest, context: Ctx
    ) -> pb.SetRetentionPolicyResponse:
        company = _company(self, context)
        scope = await self._retention_scope(
            company, request.workflow_id, request.namespace, request.name
        )
        policy = (
            convert.retention_policy_from(request.policy, "policy")
            if request.HasField("policy")
            else None
        )
        own, effective, source = convert.retention_view(
            await self._retention.set_policy(company, scope, policy)
        )
        return pb.SetRetentionPolicyResponse(policy=own, effective=effective, source=source)

    @unary
    async def GetRetentionPolicy(
        self, request: pb.GetRetentionPolicyRequest, context: Ctx
    ) -> pb.GetRetentionPolicyResponse:
        company = _company(self, context)
        scope = await self._retention_scope(
            company, request.workflow_id, request.namespace, request.name
        )
        own, effective, source = convert.retention_view(
            await self._retention.get_policy(company, scope)
        )
        return pb.GetRetentionPolicyResponse(policy=own, effective=effective, source=source)

    @unary
    async def ApplyRetention(
        self, request: pb.ApplyRetentionRequest, context: Ctx
    ) -> pb.ApplyRetentionResponse:
        company = _company(self, context)
        scope = await self._retention_scope(
            company, request.workflow_id, request.namespace, request.name
        )
        outcome = await self._retention.apply(company, scope, request.dry_run)
        return pb.ApplyRetentionResponse(
            deleted_runs=outcome.deleted,
            protected_runs=outcome.protected,
            workflows=outcome.workflows,
            dry_run=outcome.dry_run,
        )

    @unary
    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Ctx
    ) -> pb.ListDeliveriesResponse:
        filt = DeliveryFilter(
            run_id=request.run_id,
            destination=request.destination,
            statuses=convert.delivery_statuses(request.statuses),
        )
        page = await self._deliveries.list(
            _company(self, context), filt, request.page_size, request.page_token
        )
        deliveries = [convert.delivery(d) for d in page.items]
        kept, token = self._fit(page, deliveries)
        return pb.ListDeliveriesResponse(deliveries=deliveries[:kept], next_page_token=token)
