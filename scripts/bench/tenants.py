"""Several companies on one `workflowd serve` (a subprocess with a tokens file): a client per
company, and the latency of a call measured from the caller's side. Shared by the noisy-neighbour
benches (`large_input.py`, `fairness.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instant_jobs_api import Child, percentile
from overhead import SERVE_READY

from workflowd.api.client import Client


@dataclass
class Tenants:
    """A daemon and one client per company (each with its own token)."""

    child: Child
    clients: dict[str, Client]
    jobs_url: str

    @classmethod
    async def spawn(
        cls, work: Path, companies: Sequence[str], jobs_url: str | None, flags: Sequence[str] = ()
    ) -> Tenants:
        tokens = {company: secrets.token_urlsafe(24) for company in companies}
        tokens_file = work / "tokens.toml"
        tokens_file.write_text(
            "".join(
                f'[[tokens]]\ncompany = "{company}"\nname = "{company}-bench"\n'
                f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                for company, token in tokens.items()
            )
        )
        tokens_file.chmod(0o600)
        exe = str(Path(sys.executable).parent / "workflowd")
        argv = [exe, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
        argv += ["--dataplane-listen", "127.0.0.1:0", "--data-dir", str(work / "data")]
        argv += ["--tokens-file", str(tokens_file), *flags]
        if jobs_url:
            argv += ["--jobs-url", jobs_url]
        child = await Child.spawn(argv, SERVE_READY, work / "workflowd.log")
        address = f"127.0.0.1:{child.ready.group(1)}"
        clients = {company: Client(address, token=token) for company, token in tokens.items()}
        return cls(child, clients, child.ready.group(2))

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.__aexit__()
        await self.child.stop()


@dataclass
class Latencies:
    """Milliseconds of each call a probe made, from send to answer."""

    samples: list[float] = field(default_factory=list)

    async def probe(
        self, call: Callable[[], Awaitable[object]], stop: asyncio.Event, interval_s: float
    ) -> None:
        """`call` every `interval_s` (one at a time) until `stop` is set."""
        while not stop.is_set():
            started = time.perf_counter()
            await call()
            self.samples.append((time.perf_counter() - started) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    def figures(self, prefix: str) -> dict[str, float | int | None]:
        return {
            f"{prefix}_ms_p50": rounded(percentile(self.samples, 50)),
            f"{prefix}_ms_p99": rounded(percentile(self.samples, 99)),
            f"{prefix}_ms_max": rounded(max(self.samples, default=float("nan"))),
            f"{prefix}_samples": len(self.samples),
        }


def rounded(value: float) -> float | None:
    """Two decimals; None for no sample (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, 2)
