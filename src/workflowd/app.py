"""The composition root: builds every part, starts them in order, drains them in reverse."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

from workflowd import __version__
from workflowd.address import Address
from workflowd.api.auth import LOCAL_COMPANY, Authenticator
from workflowd.api.server import GrpcServer, Tls
from workflowd.api.tokens import Principal, TokenTable, load_tokens
from workflowd.datadir import DataDirLock, create_private, make_private
from workflowd.domain.definition import FlowLimits
from workflowd.domain.errors import InvalidRequest, WorkflowdError
from workflowd.domain.json import JsonBounds
from workflowd.domain.units import plural
from workflowd.engine.clock import Clock, SystemClock
from workflowd.engine.definitions import Definitions
from workflowd.engine.deps import EngineDeps, RunLimits
from workflowd.engine.hub import EventHub
from workflowd.engine.metrics import EngineMetrics
from workflowd.engine.notify import DeliveryLog
from workflowd.engine.orphans import OrphanJobs
from workflowd.engine.replicas import Replica, ReplicaSettings
from workflowd.engine.retention import Retention, RetentionSettings
from workflowd.engine.runs import Runs
from workflowd.engine.schedules import ScheduleLimits, Schedules
from workflowd.engine.tracing import Tracing
from workflowd.engine.views import Views
from workflowd.jobs import JobsClient, JobsClientConfig
from workflowd.jobs.credential import Credential
from workflowd.jobs.local import LocalDataPlane, LocalPlaneConfig
from workflowd.jobs.local_trust import CompanyToken, PlaneTls
from workflowd.observability import HttpEndpoint, LoopLagProbe
from workflowd.scheduler.loop import SchedulerLoop
from workflowd.settings import Settings
from workflowd.spec import Limits
from workflowd.spec.expressions import Evaluator
from workflowd.store import make_store
from workflowd.telemetry import Telemetry
from workflowd.web.auth import Sessions
from workflowd.web.live import LiveTiming
from workflowd.web.server import WebUi
from workflowd.webhooks import Webhooks

log = logging.getLogger("workflowd")

DATAPLANE_TOKENS = "dataplane-tokens.toml"
STORE_FILE = "workflowd.db"


class App:
    """`start()` then `drain()`; each refuses to run twice."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        crash_points: frozenset[str] = frozenset(),
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.crash_points = crash_points
        # Traces: none unless the OTEL_* variables ask for them (`workflowd serve` reads them).
        self.telemetry = telemetry or Telemetry()
        self.lock = DataDirLock(settings.data_dir)
        self.quotas = settings.quotas()
        self.store = make_store(settings.store, settings.data_dir / STORE_FILE, self.quotas)
        self.metrics = EngineMetrics(max_workflows=settings.metrics_max_workflows)
        self.lag_probe = LoopLagProbe(self.metrics.loop_lag.observe)
        self.hub = EventHub()
        self.evaluator = Evaluator()
        self.jobs_url = settings.jobs_url
        self.jobs: JobsClient | None = None
        self.dataplane: LocalDataPlane | None = None
        self._reloading = asyncio.Lock()  # one SIGHUP's reload at a time, in order
        self._reloads: set[asyncio.Task[bool]] = set()
        self.grpc: GrpcServer | None = None
        self.http: HttpEndpoint | None = None
        self.orphans: OrphanJobs | None = None
        self.definitions: Definitions | None = None
        self.deps: EngineDeps | None = None
        self.runs: Runs | None = None
        self.schedules: Schedules | None = None
        self.retention: Retention | None = None
        self.scheduler: SchedulerLoop | None = None
        self.replica: Replica | None = None
        self.webhooks = Webhooks(settings.config_file, self.store)
        self._background: set[asyncio.Task[None]] = set()
        # Set by a signal, or when this replica must stop (`failure` then says why).
        self.stop = asyncio.Event()
        self.failure = ""
        self.authenticator = Authenticator()
        self.grpc_port = 0
        self._serving = False
        self._started = False
        self._drained = False

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("workflowd app already started")
        self._started = True
        s = self.settings
        self.lock.acquire()
        make_private(s.data_dir)
        if not s.store:
            create_private(s.data_dir / STORE_FILE)
        if s.tokens_file:
            self.authenticator.table = load_tokens(Path(s.tokens_file))
        self.webhooks.load()
        await self.store.open()
        writer = self.store.db.writer
        self.metrics.store_writes_queued.set_function(lambda: writer.queued)
        credential: Credential | None = None
        pin: bytes | None = None
        if s.embedded_dataplane:
            plane = await self._start_dataplane()
            credential, pin = plane.credential, plane.pin
        self.jobs = JobsClient(
            JobsClientConfig(
                base_url=self.jobs_url,
                token=s.jobs_token or None,
                company=s.jobs_company or None,
                ca_file=s.jobs_ca or None,
                pinned_sha256=pin,
                retry_deadline_s=s.jobs_retry_deadline_s,
                request_timeout_s=s.jobs_request_timeout_s,
            ),
            credential=credential,
            spans=self.telemetry.spans,
        )
        await self.jobs.start()
        jobs = self.jobs
        self.metrics.jobs_awaited.set_function(lambda: jobs.stats["awaited"])
        clock = self.clock
        flow = FlowLimits(
            max_iterations=s.max_iterations,
            max_fork_width=s.max_fork_width,
            max_depth=s.max_depth,
            max_instances=s.max_instances,
            max_attempts=s.max_attempts,
            max_wait_s=s.max_wait_s,
            values=JsonBounds(s.max_value_depth, s.max_value_bytes),
        )
        self.definitions = definitions = Definitions(
            self.store, clock, Limits(s.max_spec_bytes, s.max_tasks, flow=flow), self.quotas
        )
        self.orphans = OrphanJobs(self.store, self.jobs)
        self.deps = deps = EngineDeps(
            store=self.store,
            jobs=self.jobs,
            evaluator=self.evaluator,
            hub=self.hub,
            clock=clock,
            metrics=self.metrics,
            orphans=self.orphans,
            limits=RunLimits(values=flow.values, flow=flow),
            quotas=self.quotas,
            runtime_version=__version__,
            tracing=Tracing(self.telemetry.spans),
            crash_points=self.crash_points,
        )
        self.runs = runs = Runs(deps, definitions)
        self.schedules = schedules = Schedules(
            deps,
            self.store,
            definitions,
            runs,
            ScheduleLimits(s.max_backfill_runs, max_catchup_runs=s.max_catchup_runs),
        )
        # Before the API serves, the launcher learns which runs it will resume (their executors
        # start in the background): a cancel or a waiting run that arrives meanwhile is kept.
        # Alone on its store the daemon takes every active run; a replica those no live
        # replica holds.
        shared_log = self.store.shared_log()
        if shared_log is not None:
            self.replica = Replica(
                deps,
                runs,
                ReplicaSettings(lease_s=s.replica_lease_s),
                shared_log,
                self._refresh_schedules,
                self._stop_replica,
            )
            resumed = await self.replica.start()
        else:
            # The only daemon on its store (the data-directory lock): it takes every active
            # run, under an identity of its own like a replica's, without a lease to renew.
            now = clock.now()
            await self.store.join(str(uuid.uuid4()), now, timedelta(0))
            resumed = await runs.recover(takeover=True)
        await self.orphans.resume()
        await self._start_deliveries()
        self.scheduler = SchedulerLoop(schedules, clock)
        schedules.attach(self.scheduler)
        self.metrics.watch_schedule_backlog(self.scheduler.backlog, clock.now)
        await self.scheduler.start()
        self.retention = retention = Retention(
            self.store,
            clock,
            RetentionSettings(s.retention_policy(), s.retention_interval_s),
        )
        self._in_background(retention.run(), "retention")
        self.grpc = GrpcServer(
            definitions,
            runs,
            schedules,
            self.authenticator,
            retention=retention,
            deliveries=DeliveryLog(self.store),
            tracer=self.telemetry.tracer("workflowd.api"),
            max_message_bytes=s.max_message_bytes,
            tls=_tls(s),
        )
        self.grpc_port = await self.grpc.start(s.listen)
        self.web: WebUi | None = None
        if s.web_enabled:
            self.web = WebUi(
                runs,
                schedules,
                Views(definitions, runs, schedules),
                Sessions(_WebTokens(self.authenticator)),
                clock,
                LiveTiming(heartbeat_s=s.web_heartbeat_s),
            )
        self.http = HttpEndpoint(
            self.metrics.registry,
            lambda: self._serving,
            self.web.install if self.web is not None else None,
            before_scrape=self.metrics.refresh,
        )
        await self.http.start(Address.parse(s.http_listen, "http_listen"))
        self.lag_probe.start()
        self._serving = True
        _tune_gc()
        log.info(
            "workflowd %s started (gRPC port %d, jobs API %s, %s resumed)",
            __version__,
            self.grpc_port,
            self.jobs_url,
            plural(resumed, "run"),
        )

    async def _start_deliveries(self) -> None:
        """The webhooks' deliverer, and the last successes the per-workflow metrics start
        from."""
        alone = self.store.shared_log() is None
        await self.webhooks.start(self.clock, self.metrics, alone)
        self._in_background(self._seed_last_successes(), "seed-last-successes")

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A task the drain cancels."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _seed_last_successes(self) -> None:
        try:
            found = await self.store.last_successes(self.settings.metrics_max_workflows)
        except WorkflowdError as exc:
            log.warning("the workflows' last successes are not known yet: %s", exc.message)
            return
        for company, namespace, name, at in found:
            self.metrics.succeeded(company, namespace, name, at)

    async def _refresh_schedules(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.refresh()

    def _stop_replica(self, reason: str) -> None:
        log.critical("%s; stopping", reason)
        self.failure = reason
        self.stop.set()

    async def _start_dataplane(self) -> LocalDataPlane:
        """Start the local data plane in its own process. With companies configured it
        accepts each company's own token for that company's data, and the service token it
        was started with (`plane.credential`) for any company the daemon names."""
        s = self.settings
        address = Address.parse(s.dataplane_listen, "dataplane_listen")
        table = self.authenticator.table
        tls = None
        if s.dataplane_tls_cert:
            client_ca = Path(s.dataplane_tls_client_ca) if s.dataplane_tls_client_ca else None
            tls = PlaneTls(Path(s.dataplane_tls_cert), Path(s.dataplane_tls_key), client_ca)
        self.dataplane = LocalDataPlane(
            LocalPlaneConfig(
                data_dir=s.data_dir / "dataplane",
                host=address.host,
                port=address.port,
                workers=s.dataplane_workers,
                job_timeout_s=s.dataplane_job_timeout_s,
                memory_limit=s.dataplane_memory_limit,
                tokens_file=None if table is None else s.data_dir / DATAPLANE_TOKENS,
                tls=tls,
                dataset_quota_bytes=s.quota_dataset_bytes,
                env=self.telemetry.env,
            ),
            () if table is None else _company_tokens(table),
        )
        self.jobs_url = await self.dataplane.start()
        return self.dataplane

    def request_reload(self) -> None:
        """SIGHUP: `reload_tokens` and `reload_webhooks` in the background, in the order the
        signals came."""
        task = asyncio.create_task(self._reload(), name="workflowd-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> bool:
        tokens = await self.reload_tokens()
        return self.reload_webhooks() and tokens

    def reload_webhooks(self) -> bool:
        return self.webhooks.reload()

    async def reload_tokens(self) -> bool:
        """Read the tokens file again and put it in force everywhere or nowhere: a file
        workflowd refuses changes nothing, and neither does one the embedded data plane
        refuses, since gRPC switches only once the data plane has. The log says which, and
        why; True when the new tokens are in force."""
        if not self.settings.tokens_file:
            return False
        async with self._reloading:
            try:
                table = load_tokens(Path(self.settings.tokens_file))
            except WorkflowdError as exc:
                log.error("tokens not reloaded, the old ones stay in force: %s", exc.message)
                return False
            if self.dataplane is not None:
                refusal = await self.dataplane.reload(_company_tokens(table))
                if refusal is not None:
                    log.error(
                        "tokens not reloaded, the old ones stay in force on gRPC and the data"
                        " plane: %s",
                        refusal,
                    )
                    return False
            self.authenticator.reload(table)
            if self.web is not None:
                self.web.tokens_reloaded()
            return True

    @property
    def drained(self) -> bool:
        return self._drained

    async def drain(self) -> None:
        """NOT_SERVING, stop the scheduler, refuse new runs, end streams, stop runs (their
        state stays), stop the server, then close the clients and the store ("Drain" in
        docs/architecture.md). Each step is logged."""
        if self._drained:
            return
        self._drained = True
        # A start that failed says why in one line: its undoing is not worth more lines.
        say = log.info if self._serving else log.debug
        began = asyncio.get_running_loop().time()
        say("draining: health NOT_SERVING, no new runs")
        self._serving = False
        if self.grpc is not None:
            await self.grpc.not_serving()
        if self.scheduler is not None:
            await self.scheduler.aclose()
        if self.replica is not None:
            await self.replica.aclose()
        if self.runs is not None:
            self.runs.refuse_new()
        for task in [*self._reloads, *self._background]:
            task.cancel()
        await asyncio.gather(*self._reloads, *self._background, return_exceptions=True)
        self.hub.close()
        say("draining: scheduler stopped, watch streams ended; stopping runs")
        if self.runs is not None:
            await self.runs.drain()
        if self.replica is not None and not self.failure:
            await self.replica.leave()
        await self.webhooks.aclose()
        if self.orphans is not None:
            await self.orphans.aclose()
        say("draining: runs and webhook deliveries stopped (their state is stored)")
        if self.grpc is not None:
            await self.grpc.stop(self.settings.drain_grace_s)
        say("draining: gRPC server stopped")
        await self._close_clients()
        say("draining: jobs client, data plane and HTTP endpoint closed")
        await self.store.aclose()
        self.lock.release()
        say("drained in %.2f s: store closed", asyncio.get_running_loop().time() - began)

    async def _close_clients(self) -> None:
        await self.lag_probe.aclose()
        if self.http is not None:
            await self.http.aclose()
        if self.jobs is not None:
            await self.jobs.aclose()
        await self.evaluator.aclose()
        if self.dataplane is not None:
            await self.dataplane.aclose()
        await self.telemetry.aclose()


class _WebTokens:
    """The web page's view of the tokens gRPC authenticates with: the same table, reloaded
    by SIGHUP in one place."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    @property
    def local_company(self) -> str | None:
        return LOCAL_COMPANY if self._authenticator.table is None else None

    def principal(self, token: str) -> tuple[str, str] | None:
        table = self._authenticator.table
        found = table.principal(token) if table is not None and token else None
        return None if found is None else (found.company, found.sha256)

    def grants(self, company: str, digest: str) -> bool:
        table = self._authenticator.table
        return table is not None and table.grants(Principal(company, "", digest))


def _company_tokens(table: TokenTable) -> list[CompanyToken]:
    return [CompanyToken(p.company, p.name, p.sha256) for p in table.principals()]


def _tls(settings: Settings) -> Tls | None:
    if not settings.tls_cert:
        return None
    try:
        return Tls(
            cert=Path(settings.tls_cert).read_bytes(),
            key=Path(settings.tls_key).read_bytes(),
            client_ca=Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None,
        )
    except OSError as exc:
        raise InvalidRequest("tls_cert", f"cannot read a TLS file: {exc}") from exc


def _tune_gc() -> None:
    """Full garbage collections walk every live object: with thousands of active runs they
    pause the event loop for hundreds of milliseconds. Everything built at start lives as long
    as the process, so take it out of the collector's view, and collect young objects less
    often (workflowd makes few reference cycles; most garbage is freed by reference counting)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
