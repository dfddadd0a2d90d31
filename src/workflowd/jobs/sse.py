"""A minimal server-sent-events reader (the subset of the WHATWG format the jobs API uses).

Parsed by hand over aiohttp's `StreamReader.readany()` so that the stream costs one buffered
socket and no extra dependency: each chunk the socket delivers is read with one await (and one
idle timer), however many events it holds, and split into lines once.
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


class _ChunkReader(Protocol):
    async def readany(self) -> bytes: ...


class StreamIdle(Exception):
    """No bytes at all arrived within the idle timeout: the connection is presumed dead."""


class EventTooLarge(Exception):
    """A line longer than the bound: refused rather than buffered."""


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
    reader: _ChunkReader, *, idle_timeout_s: float, max_line_bytes: int
) -> AsyncIterator[SseEvent]:
    """Yield events until the server ends the stream; raise `StreamIdle` on silence and
    `EventTooLarge` for a line over `max_line_bytes`."""
    decoder = SseDecoder()
    partial: list[bytes] = []  # the pieces of a line that has not ended yet
    partial_bytes = 0
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):
                chunk = await reader.readany()
        except TimeoutError:
            raise StreamIdle(f"no data for {idle_timeout_s:g} s") from None
        if not chunk:
            return  # EOF; a partial event without its blank line is discarded, per the spec
        if b"\n" not in chunk:
            partial.append(chunk)
            partial_bytes += len(chunk)
            if partial_bytes > max_line_bytes:
                raise EventTooLarge(f"a line of more than {max_line_bytes} bytes")
            continue
        lines = b"".join([*partial, chunk]).split(b"\n")
        rest = lines.pop()
        partial, partial_bytes = ([rest], len(rest)) if rest else ([], 0)
        for raw in lines:
            if len(raw) > max_line_bytes:
                raise EventTooLarge(f"a line of more than {max_line_bytes} bytes")
            event = decoder.feed(raw.decode("utf-8", "replace").rstrip("\r"))
            if event is not None:
                yield event
        if partial_bytes > max_line_bytes:
            raise EventTooLarge(f"a line of more than {max_line_bytes} bytes")
