"""The operator's webhooks, assembled for the composition root: the `[webhooks]` section of the
settings file (read at start and on SIGHUP), the store's outbox policy, the HTTP sender and the
deliverer (docs/operations.md, "Webhooks")."""

from __future__ import annotations

import logging
from pathlib import Path

from workflowd.domain.errors import WorkflowdError
from workflowd.domain.retry import Backoff
from workflowd.engine.clock import Clock
from workflowd.engine.metrics import EngineMetrics
from workflowd.engine.notify import Deliverer, DeliveryLimits
from workflowd.notify.config import WebhookSettings, load_webhooks
from workflowd.notify.sender import WebhookSender
from workflowd.store import Store

log = logging.getLogger("workflowd")


class Webhooks:
    """`load()` (refuses a bad section), `start()`, `reload()` any number of times, `aclose()`."""

    def __init__(self, config_file: Path | None, store: Store) -> None:
        self._config_file = config_file
        self._store = store
        self.settings = WebhookSettings()
        self._sender: WebhookSender | None = None
        self._deliverer: Deliverer | None = None

    def load(self) -> None:
        self.settings = load_webhooks(self._config_file)
        self._store.outbox.policy = self.settings.policy

    async def start(self, clock: Clock, metrics: EngineMetrics, alone: bool) -> None:
        """Deliver (idle without destinations: deliveries left from an earlier configuration
        still get their outcome). `alone`: the only daemon on its store, which takes over every
        claim a process that died left."""
        if alone:
            await self._store.release_deliveries()
        hooks = self.settings
        self._sender = WebhookSender(hooks.ca_file)
        await self._sender.start()
        limits = DeliveryLimits(
            max_concurrent=hooks.max_concurrent,
            backoff=Backoff(hooks.retry_initial_s, max_delay_s=hooks.retry_max_s, spread=0.5),
        )
        outbox = self._store.outbox
        self._deliverer = Deliverer(
            self._store, self._sender, clock, metrics, lambda: outbox.policy, limits
        )
        self._deliverer.start()

    def reload(self) -> bool:
        """Read the section again: every event recorded from now on follows the new
        destinations (deliveries still pending go to their destination as now configured). A
        section workflowd refuses changes nothing, and the log says why; True when the new one
        is in force. `max_concurrent`, `ca_file` and the retry backoff are read at start."""
        if self._config_file is None:
            return False
        try:
            self.load()
        except WorkflowdError as exc:
            log.error("webhooks not reloaded, the old ones stay in force: %s", exc.message)
            return False
        log.info("webhooks reloaded: %d destinations", len(self.settings.policy.destinations))
        return True

    async def aclose(self) -> None:
        if self._deliverer is not None:
            await self._deliverer.aclose()
        if self._sender is not None:
            await self._sender.aclose()
