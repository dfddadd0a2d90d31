"""The composition root: builds every part, starts them in order, drains them in reverse."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import uuid
from datetime import timedelta
from pathlib import Path

from workflowd import __version__
from workflowd.address import Address
from workflowd.api.auth import Authenticator
from workflowd.api.server import GrpcServer, Tls
from workflowd.api.tokens import TokenTable, load_tokens, sha256_hex
from workflowd.datadir import DataDirLock
from workflowd.domain.errors import InvalidRequest, WorkflowdError
from workflowd.domain.json import JsonBounds
from workflowd.engine.clock import Clock, SystemClock
from workflowd.engine.definitions import Definitions
from workflowd.engine.deps import EngineDeps, RunLimits
from workflowd.engine.hub import EventHub
from workflowd.engine.metrics import EngineMetrics
from workflowd.engine.orphans import OrphanJobs
from workflowd.engine.replicas import Replica, ReplicaSettings
from workflowd.engine.runs import Runs
from workflowd.engine.schedules import ScheduleLimits, Schedules
from workflowd.jobs import JobsClient, JobsClientConfig
from workflowd.jobs.local import LocalDataPlane, LocalPlaneConfig
from workflowd.observability import HttpEndpoint, LoopLagProbe
from workflowd.scheduler.loop import SchedulerLoop
from workflowd.settings import Settings
from workflowd.spec import Limits
from workflowd.spec.expressions import Evaluator
from workflowd.store import make_store

log = logging.getLogger("workflowd")

DATAPLANE_TOKENS = "dataplane-tokens.toml"


class App:
    """`start()` then `drain()`; each refuses to run twice."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        crash_points: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.crash_points = crash_points
        self.lock = DataDirLock(settings.data_dir)
        self.store = make_store(settings.store, settings.data_dir / "workflowd.db")
        self.metrics = EngineMetrics()
        self.lag_probe = LoopLagProbe(self.metrics.loop_lag.observe)
        self.hub = EventHub()
        self.evaluator = Evaluator()
        self.jobs_url = settings.jobs_url
        self.jobs: JobsClient | None = None
        self.dataplane: LocalDataPlane | None = None
        # The daemon's own token for its embedded data plane, made afresh at each start.
        self._service_token = secrets.token_urlsafe(32)
        self.grpc: GrpcServer | None = None
        self.http: HttpEndpoint | None = None
        self.orphans: OrphanJobs | None = None
        self.definitions: Definitions | None = None
        self.deps: EngineDeps | None = None
        self.runs: Runs | None = None
        self.schedules: Schedules | None = None
        self.scheduler: SchedulerLoop | None = None
        self.replica: Replica | None = None
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
        if s.tokens_file:
            self.authenticator.table = load_tokens(Path(s.tokens_file))
        await self.store.open()
        jobs_token = s.jobs_token
        if s.embedded_dataplane:
            jobs_token = await self._start_dataplane()
        self.jobs = JobsClient(
            JobsClientConfig(
                base_url=self.jobs_url,
                token=jobs_token or None,
                ca_file=s.jobs_ca or None,
                retry_deadline_s=s.jobs_retry_deadline_s,
                request_timeout_s=s.jobs_request_timeout_s,
            )
        )
        await self.jobs.start()
        jobs = self.jobs
        self.metrics.jobs_awaited.set_function(lambda: jobs.stats["awaited"])
        clock = self.clock
        self.definitions = definitions = Definitions(
            self.store, clock, Limits(s.max_spec_bytes, s.max_tasks)
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
            limits=RunLimits(values=JsonBounds(s.max_value_depth, s.max_value_bytes)),
            runtime_version=__version__,
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
        self.scheduler = SchedulerLoop(schedules, clock)
        schedules.attach(self.scheduler)
        await self.scheduler.start()
        self.grpc = GrpcServer(
            definitions,
            runs,
            schedules,
            self.authenticator,
            max_message_bytes=s.max_message_bytes,
            tls=_tls(s),
        )
        self.grpc_port = await self.grpc.start(s.listen)
        self.http = HttpEndpoint(self.metrics.registry, lambda: self._serving)
        await self.http.start(Address.parse(s.http_listen, "http_listen"))
        self.lag_probe.start()
        self._serving = True
        _tune_gc()
        log.info(
            "workflowd %s started (gRPC port %d, jobs API %s, %d runs resumed)",
            __version__,
            self.grpc_port,
            self.jobs_url,
            resumed,
        )

    async def _refresh_schedules(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.refresh()

    def _stop_replica(self, reason: str) -> None:
        log.critical("%s; stopping", reason)
        self.failure = reason
        self.stop.set()

    async def _start_dataplane(self) -> str:
        """Start the local data plane in its own process; the token to call it with. With
        companies configured it accepts each company's own token for that company's data,
        and the daemon's service token for any company the daemon names."""
        s = self.settings
        address = Address.parse(s.dataplane_listen, "dataplane_listen")
        tokens_file: Path | None = None
        if self.authenticator.table is not None:
            tokens_file = s.data_dir / DATAPLANE_TOKENS
            self._write_dataplane_tokens(self.authenticator.table)
        self.dataplane = LocalDataPlane(
            LocalPlaneConfig(
                data_dir=s.data_dir / "dataplane",
                host=address.host,
                port=address.port,
                workers=s.dataplane_workers,
                job_timeout_s=s.dataplane_job_timeout_s,
                memory_limit=s.dataplane_memory_limit,
                tokens_file=tokens_file,
            )
        )
        self.jobs_url = await self.dataplane.start()
        return "" if tokens_file is None else self._service_token

    def _write_dataplane_tokens(self, table: TokenTable) -> None:
        """The data plane's tokens file: the companies' token hashes, and the hash of the
        daemon's service token (never the token itself), readable by this user only."""
        lines = [
            f'[[tokens]]\ncompany = "{p.company}"\nname = "{p.name}"\nsha256 = "{p.sha256}"\n'
            for p in table.principals()
        ]
        taken = {p.name for p in table.principals()}
        name = next(n for n in (f"workflowd-{i}" for i in range(len(taken) + 1)) if n not in taken)
        digest = sha256_hex(self._service_token)
        lines.append(f'[[service_tokens]]\nname = "{name}"\nsha256 = "{digest}"\n')
        path = self.settings.data_dir / DATAPLANE_TOKENS
        staged = path.with_suffix(".tmp")
        staged.write_text("\n".join(lines))
        staged.chmod(0o600)
        staged.replace(path)  # the data plane never reads half a file

    def reload_tokens(self) -> None:
        """SIGHUP: read the tokens file again (and hand it on to the embedded data plane); a
        bad file keeps the tokens in use."""
        if not self.settings.tokens_file:
            return
        try:
            table = load_tokens(Path(self.settings.tokens_file))
        except WorkflowdError as exc:
            log.error("tokens not reloaded, the old ones stay in use: %s", exc.message)
            return
        self.authenticator.reload(table)
        if self.dataplane is not None:
            self._write_dataplane_tokens(table)
            self.dataplane.reload()

    @property
    def drained(self) -> bool:
        return self._drained

    async def drain(self) -> None:
        """NOT_SERVING, stop the scheduler, refuse new runs, end streams, stop runs (their
        state stays), stop the server, then close the clients and the store ("Drain" in
        docs/architecture.md)."""
        if self._drained:
            return
        self._drained = True
        self._serving = False
        if self.grpc is not None:
            await self.grpc.not_serving()
        if self.scheduler is not None:
            await self.scheduler.aclose()
        if self.replica is not None:
            await self.replica.aclose()
        if self.runs is not None:
            self.runs.refuse_new()
        self.hub.close()
        if self.runs is not None:
            await self.runs.drain()
        if self.replica is not None and not self.failure:
            await self.replica.leave()
        if self.orphans is not None:
            await self.orphans.aclose()
        if self.grpc is not None:
            await self.grpc.stop(self.settings.drain_grace_s)
        await self.lag_probe.aclose()
        if self.http is not None:
            await self.http.aclose()
        if self.jobs is not None:
            await self.jobs.aclose()
        await self.evaluator.aclose()
        if self.dataplane is not None:
            await self.dataplane.aclose()
        await self.store.aclose()
        self.lock.release()


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
