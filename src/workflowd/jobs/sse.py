"""A minimal server-sent-events reader (the subset of the WHATWG format the jobs API uses).

Parsed by hand over aiohttp's `StreamReader.readline()` so that the stream costs one buffered
socket and no extra dependency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "message" when the server sent no `event:` field
    data: str
    id: str | None  # the `id:` of this event; None when it carried none


class _LineReader(Protocol):
    async def readline(self, *, max_line_length: int | None = None) -> bytes: ...


class StreamIdle(Exception):
    """No bytes at all arrived within the idle timeout: the connection is presumed dead."""


class SseDecoder:
    """Line-at-a-time decoder: `feed(line)` returns an event when a blank line dispatches one."""

    __slots__ = ("_data", "_event", "_id")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment, e.g. the server's keepalive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # `retry:` and unknown fields are ignored, as the spec says

    def _dispatch(self) -> SseEvent | None:
        data, event, event_id = self._data, self._event, self._id
        self._data, self._event, self._id = [], "", None
        if not data:
            return None
        return SseEvent(event=event or "message", data="\n".join(data), id=event_id)


async def iter_events(
    reader: _LineReader, *, idle_timeout_s: float, max_line_bytes: int
) -> AsyncIterator[SseEvent]:
    """Yield events until the server ends the stream; raise `StreamIdle` on silence."""
    decoder = SseDecoder()
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):
                raw = await reader.readline(max_line_length=max_line_bytes)
        except TimeoutError:
            raise StreamIdle(f"no data for {idle_timeout_s:g} s") from None
        if not raw:
            return  # EOF; a partial event without its blank line is discarded, per the spec
        event = decoder.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if event is not None:
            yield event
