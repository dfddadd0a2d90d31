"""`AsyncClient`: workflowd from asyncio code, in plain Python values."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

from google.protobuf import json_format, struct_pb2

from workflowd.api.client import Client as _Transport
from workflowd.api.client import ClientError as _TransportError
from workflowd.api.client import ClientTls
from workflowd.client.errors import (
    CallError,
    InvalidArgument,
    RunCancelled,
    RunFailed,
    Unavailable,
    call_error,
)
from workflowd.client.models import (
    JsonValue,
    Run,
    RunEvent,
    RunStatus,
    Workflow,
    event_of,
    run_of,
    workflow_of,
)
from workflowd.v1 import workflow_service_pb2 as pb

DEFAULT_ADDRESS = "127.0.0.1:50051"
PathLike = str | os.PathLike[str]
_RECONNECT_FIRST_S = 0.2
_RECONNECT_MAX_S = 2.0


def _read(path: PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


class _Named(TypedDict, total=False):
    workflow_id: str
    namespace: str
    name: str


def _named(workflow: str) -> _Named:
    """`namespace/name` as namespace and name; anything else is a workflow id."""
    namespace, slash, name = workflow.partition("/")
    return {"namespace": namespace, "name": name} if slash else {"workflow_id": workflow}


def _value(data: JsonValue, field: str) -> struct_pb2.Value:
    try:
        return json_format.ParseDict(data, struct_pb2.Value())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise InvalidArgument("INVALID_ARGUMENT", f"{field}: is not JSON data: {exc}") from exc


class AsyncClient:
    """A connection to a workflowd daemon. Use it as `async with AsyncClient() as client:`,
    or call `aclose()` when done.

    `token` is a bearer token of your company (a daemon with a tokens file needs one); `tls`
    connects over TLS trusting the system's CAs, `tls_ca` trusting that CA's PEM file instead;
    `tls_cert` and `tls_key` are a client certificate for a daemon that asks for one.
    `timeout_s` bounds each call (not watches and waits, which take their own)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str = "",
        tls: bool = False,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
        timeout_s: float = 30.0,
        reconnect_s: float = 30.0,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        secure = tls or tls_ca is not None or tls_cert is not None
        options = ClientTls(_read(tls_ca), _read(tls_cert), _read(tls_key)) if secure else None
        self._transport = _Transport(address, token=token, tls=options)
        self._timeout_s = timeout_s
        self._reconnect_s = reconnect_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AsyncClient:
        """A client configured as the `workflowd` CLI is: WORKFLOWD_ADDRESS, WORKFLOWD_TOKEN
        or WORKFLOWD_TOKEN_FILE, WORKFLOWD_TLS=1, WORKFLOWD_TLS_CA, WORKFLOWD_TLS_CERT and
        WORKFLOWD_TLS_KEY."""
        return cls(**settings_from_env(os.environ if environ is None else environ))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.__aexit__(None, None, None)

    async def _call(self, rpc: str, request: Any) -> Any:
        try:
            return await self._transport.call(rpc, request, self._timeout_s)
        except _TransportError as exc:
            raise call_error(exc) from None

    async def trigger(
        self,
        workflow: str,
        *,
        input: JsonValue = None,
        version: str = "",
        idempotency_key: str = "",
    ) -> Run:
        """Start a run of `workflow` (`namespace/name` or its id) and return it as created.
        The same `idempotency_key` returns the same run instead of starting another."""
        request = pb.TriggerWorkflowRequest(
            version=version, idempotency_key=idempotency_key, **_named(workflow)
        )
        if input is not None:
            request.input.CopyFrom(_value(input, "input"))
        return run_of((await self._call("TriggerWorkflow", request)).run)

    async def rerun(self, run_id: str, *, start: str = "failure", input: JsonValue = None) -> Run:
        """Start a new run of the same version that redoes `run_id` from `start`: "failure"
        (its failed task; the instances before it keep their outcomes and send no job),
        "start", or a task's reference (`/do/1/refresh`). `input`: the new run's, instead of
        the original's. Returns the new run as created (`rerun_of` names the original)."""
        request = pb.RerunRunRequest(run_id=run_id, start=start)
        if input is not None:
            request.input.CopyFrom(_value(input, "input"))
        return run_of((await self._call("RerunRun", request)).run)

    async def run(self, run_id: str) -> Run:
        """The run as it stands, with its task instances."""
        return run_of((await self._call("GetRun", pb.GetRunRequest(run_id=run_id))).run)

    async def cancel(self, run_id: str, *, reason: str = "") -> Run:
        """Ask the run to stop (its job is cancelled); returns it as it stands after the
        request: CANCELLING until the job stopped, unchanged if it had ended."""
        request = pb.CancelRunRequest(run_id=run_id, reason=reason)
        return run_of((await self._call("CancelRun", request)).run)

    async def watch(self, run_id: str, *, after_seq: int = 0) -> AsyncGenerator[RunEvent, None]:
        """The run's events after `after_seq`, as they happen, ending after the run's last.
        When the daemon restarts, the watch resumes where it stopped (for up to
        `reconnect_s`): no event is missed or repeated."""
        await self.run(run_id)  # an unknown run or an unreachable daemon fails here, at once
        last = after_seq
        outage = _Outage(self._reconnect_s)
        while True:
            try:
                async for message in self._transport.watch_run(run_id, last):
                    outage.over()
                    event = event_of(message)
                    last = event.seq
                    yield event
                return
            except _TransportError as exc:
                error = call_error(exc)
            if not isinstance(error, Unavailable):
                raise error
            await outage.wait(error)

    async def wait(self, run_id: str, *, timeout_s: float | None = None, check: bool = True) -> Run:
        """The run once it has ended. With `check` (the default), a run that failed raises
        RunFailed and one that was cancelled RunCancelled, each carrying the run and its
        problem; without, the ended run is returned whatever its outcome. TimeoutError after
        `timeout_s` (None: no limit); the run goes on."""
        async with asyncio.timeout(timeout_s):
            run = await self.run(run_id)
            if not run.status.ended:
                async for _ in self.watch(run_id):
                    pass
                run = await self.run(run_id)
        if check and run.status == RunStatus.FAILED:
            raise RunFailed(run)
        if check and run.status == RunStatus.CANCELLED:
            raise RunCancelled(run)
        return run

    async def runs(
        self,
        *,
        workflow: str = "",
        namespace: str = "",
        status: RunStatus | str | Iterable[RunStatus | str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncGenerator[Run, None]:
        """Runs, newest first, page after page as the iteration goes: of `workflow`
        (`namespace/name` or id) or of every workflow in `namespace`; in any of the statuses
        `status`; created at or after `since` and before `until` (aware datetimes)."""
        if workflow and namespace:
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                "workflow, namespace: give one of them (`namespace/name` names its namespace)",
            )
        request = pb.ListRunsRequest(
            statuses=[_status(s) for s in _statuses(status)], page_size=page_size
        )
        for field, value in _named(workflow).items() if workflow else ():
            setattr(request, field, value)
        request.namespace = request.namespace or namespace
        if since is not None:  # the API's bound is exclusive; `since` includes its instant
            request.created_after.FromDatetime(since - timedelta(microseconds=1))
        if until is not None:
            request.created_before.FromDatetime(until)
        while True:
            page = await self._call("ListRuns", request)
            for message in page.runs:
                yield run_of(message)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def workflow(self, workflow: str, *, version: str = "") -> Workflow:
        """A stored workflow (`namespace/name` or id), at its current version or `version`."""
        request = pb.GetWorkflowRequest(version=version, **_named(workflow))
        return workflow_of((await self._call("GetWorkflow", request)).workflow)

    async def apply(self, specification: str, *, tags: Iterable[str] = ()) -> Workflow:
        """Store a workflow, or a new version of it (the same specification again changes
        nothing). InvalidArgument lists the specification's problems in `violations`."""
        request = pb.CreateWorkflowRequest(specification=specification, tags=list(tags))
        return workflow_of((await self._call("CreateWorkflow", request)).workflow)


class _Outage:
    """A watch's reconnection after UNAVAILABLE (a draining or restarting daemon): each try
    waits longer, up to a cap; after `limit_s` without a connection the error is raised."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self._since: float | None = None
        self._delay_s = _RECONNECT_FIRST_S

    def over(self) -> None:
        self._since, self._delay_s = None, _RECONNECT_FIRST_S

    async def wait(self, error: CallError) -> None:
        now = asyncio.get_running_loop().time()
        self._since = now if self._since is None else self._since
        if now - self._since > self._limit_s:
            raise error
        await asyncio.sleep(self._delay_s)  # ok: backoff before reconnecting
        self._delay_s = min(self._delay_s * 2, _RECONNECT_MAX_S)


def _statuses(status: RunStatus | str | Iterable[RunStatus | str]) -> list[RunStatus | str]:
    return [status] if isinstance(status, str) else list(status)


def _status(status: RunStatus | str) -> pb.RunStatus.ValueType:
    try:
        return pb.RunStatus.Value(f"RUN_STATUS_{RunStatus(status.lower()).name}")
    except ValueError:
        known = ", ".join(RunStatus)
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"status: {status!r} is not a run status ({known})"
        ) from None


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The client's settings from the CLI's environment variables."""
    token = environ.get("WORKFLOWD_TOKEN", "").strip()
    token_file = environ.get("WORKFLOWD_TOKEN_FILE")
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    return {
        "address": environ.get("WORKFLOWD_ADDRESS", DEFAULT_ADDRESS),
        "token": token,
        "tls": bool(environ.get("WORKFLOWD_TLS")),
        "tls_ca": environ.get("WORKFLOWD_TLS_CA"),
        "tls_cert": environ.get("WORKFLOWD_TLS_CERT"),
        "tls_key": environ.get("WORKFLOWD_TLS_KEY"),
    }
