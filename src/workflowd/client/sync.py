"""`Client`: workflowd from ordinary (blocking) Python code.

It runs an `AsyncClient` on an event loop of its own, in one background thread, and waits for
each call there: the same behaviour and errors, and it works where an event loop is already
running (a notebook, a web handler), which `asyncio.run` per call would not.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from workflowd.client.aio import DEFAULT_ADDRESS, AsyncClient, PathLike, settings_from_env
from workflowd.client.models import JsonValue, Run, RunEvent, RunStatus, Workflow

T = TypeVar("T")


async def _step(events: AsyncGenerator[T, None]) -> T:
    """The next item; StopAsyncIteration at the end, raised in the caller's thread."""
    return await anext(events)


class Client:
    """A blocking connection to a workflowd daemon: `with Client() as client:`, or `close()`
    when done. The options are AsyncClient's."""

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="workflowd-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def connect() -> AsyncClient:
            # Made on the loop it will run on: a gRPC channel belongs to one event loop.
            return AsyncClient(
                address, token=token, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert,
                tls_key=tls_key, timeout_s=timeout_s, reconnect_s=reconnect_s,
            )  # fmt: skip

        try:
            self._client = self._wait(connect())
        except BaseException:
            self._stop()
            raise

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Client:
        """Configured as the `workflowd` CLI is (see AsyncClient.from_env)."""
        return cls(**settings_from_env(os.environ if environ is None else environ))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the background thread; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wait(self._client.aclose())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        """`work`'s result, run on the client's loop; an interrupt (Ctrl-C) cancels it there."""
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _iterate(self, events: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    item = self._wait(_step(events))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._closed:  # a loop left early: end the stream on the daemon too
                self._wait(events.aclose())

    def trigger(
        self,
        workflow: str,
        *,
        input: JsonValue = None,
        version: str = "",
        idempotency_key: str = "",
    ) -> Run:
        """Start a run of `workflow` (`namespace/name` or its id); see AsyncClient.trigger."""
        return self._wait(
            self._client.trigger(
                workflow, input=input, version=version, idempotency_key=idempotency_key
            )
        )

    def rerun(self, run_id: str, *, start: str = "failure", input: JsonValue = None) -> Run:
        """Redo `run_id` from `start` as a new run; see AsyncClient.rerun."""
        return self._wait(self._client.rerun(run_id, start=start, input=input))

    def run(self, run_id: str) -> Run:
        """The run as it stands, with its task instances."""
        return self._wait(self._client.run(run_id))

    def cancel(self, run_id: str, *, reason: str = "") -> Run:
        """Ask the run to stop; see AsyncClient.cancel."""
        return self._wait(self._client.cancel(run_id, reason=reason))

    def watch(self, run_id: str, *, after_seq: int = 0) -> Iterator[RunEvent]:
        """The run's events as they happen, until its last; see AsyncClient.watch."""
        return self._iterate(self._client.watch(run_id, after_seq=after_seq))

    def wait(self, run_id: str, *, timeout_s: float | None = None, check: bool = True) -> Run:
        """The run once it has ended; RunFailed or RunCancelled with `check` (see
        AsyncClient.wait)."""
        return self._wait(self._client.wait(run_id, timeout_s=timeout_s, check=check))

    def runs(
        self,
        *,
        workflow: str = "",
        namespace: str = "",
        status: RunStatus | str | Iterable[RunStatus | str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """Runs, newest first, page after page; see AsyncClient.runs."""
        return self._iterate(
            self._client.runs(
                workflow=workflow, namespace=namespace, status=status, since=since,
                until=until, page_size=page_size,
            )
        )  # fmt: skip

    def workflow(self, workflow: str, *, version: str = "") -> Workflow:
        """A stored workflow (`namespace/name` or id)."""
        return self._wait(self._client.workflow(workflow, version=version))

    def apply(self, specification: str, *, tags: Iterable[str] = ()) -> Workflow:
        """Store a workflow, or a new version of it."""
        return self._wait(self._client.apply(specification, tags=tags))
