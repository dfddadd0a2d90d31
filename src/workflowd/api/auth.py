"""Who is calling: the bearer token in the call's `authorization` metadata names a company.

Without a tokens file the daemon serves one company (`local`), on loopback addresses only
(see settings). With one, every WorkflowService call must carry a known token; health and
reflection need none. Tokens are re-read on SIGHUP: a removed token stops working for new
calls at once, and the watch streams it opened end with UNAUTHENTICATED; so do the streams of
a token the new file gives to another company (they were opened for the old one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from workflowd.api.tokens import Principal, TokenTable
from workflowd.domain.errors import Unauthenticated
from workflowd.domain.units import plural

log = logging.getLogger("workflowd.api")

LOCAL_COMPANY = "local"
_REQUIRED = "a valid 'authorization: Bearer <token>' metadata entry is required"
_LOCAL = Principal(LOCAL_COMPANY, "local", "")


@dataclass(eq=False)
class _Stream:
    principal: Principal
    task: asyncio.Task[object] | None
    revoked: bool = False


@dataclass
class Authenticator:
    table: TokenTable | None = None
    """None: no authentication, one local company."""
    _streams: set[_Stream] = field(default_factory=set)

    def principal(self, context: grpc.aio.ServicerContext[object, object]) -> Principal:
        if self.table is None:
            return _LOCAL
        token = _bearer(context)
        found = self.table.principal(token) if token else None
        if found is None:
            raise Unauthenticated(_REQUIRED)
        return found

    def company(self, context: grpc.aio.ServicerContext[object, object]) -> str:
        return self.principal(context).company

    @asynccontextmanager
    async def stream(self, context: grpc.aio.ServicerContext[object, object]) -> AsyncIterator[str]:
        """The caller's company, for the life of a stream that ends if its token is revoked."""
        entry = _Stream(self.principal(context), asyncio.current_task())
        self._streams.add(entry)
        try:
            yield entry.principal.company
        except asyncio.CancelledError:
            if not entry.revoked:
                raise
            if entry.task is not None:
                entry.task.uncancel()
            raise Unauthenticated(
                "the token this stream was opened with was revoked, or now belongs to another"
                " company"
            ) from None
        finally:
            self._streams.discard(entry)

    def reload(self, table: TokenTable) -> int:
        """Use `table` from now on; end the streams of tokens it no longer grants their
        company."""
        self.table = table
        ended = 0
        for entry in list(self._streams):
            if not table.grants(entry.principal) and entry.task is not None:
                entry.revoked = True
                entry.task.cancel("token revoked")
                ended += 1
        log.info(
            "tokens reloaded: %s, %s ended", plural(len(table), "token"), plural(ended, "stream")
        )
        return ended


def _bearer(context: grpc.aio.ServicerContext[object, object]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
