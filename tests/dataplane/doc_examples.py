"""Replays the request/response examples of docs/jobs-api.md against a running data plane.

An example is a fenced ```http block holding a request, followed by one holding the response.
An HTML comment `<!-- wait: STATE -->` before a request waits until the job it names (or the
job submitted last) reaches STATE. Responses are compared as JSON: UUIDs stand for whatever
the server generated (consistently: a UUID seen once means the same job everywhere after),
timestamps for any timestamp; everything else must be equal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.dataplane.dp_support import Client, eventually, sse_events

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
BLOCK = re.compile(r"(?:<!-- wait: (\w+) -->\s*)?```http\n(.*?)```", re.S)


@dataclass
class Example:
    wait: str | None
    request: str
    response: str

    @property
    def title(self) -> str:
        return self.request.splitlines()[0]


def parse(markdown: str) -> list[Example]:
    blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(markdown)]
    examples = []
    for (wait, request), (_, response) in zip(blocks[::2], blocks[1::2], strict=True):
        assert not request.startswith("HTTP/"), request
        assert response.startswith("HTTP/1.1 "), response
        examples.append(Example(wait, request, response))
    return examples


def split_message(text: str) -> tuple[str, dict[str, str], str]:
    head, _, body = text.partition("\n\n")
    first, *header_lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return first, headers, body.strip()


@dataclass
class Replayer:
    client: Client
    ids: dict[str, str] = field(default_factory=dict)
    last_job: str | None = None
    # Changes the documented exchanges recorded that the server did not: a cancel that found
    # its job's query not yet begun ends it at once, with no `pending_cancellation` change, so
    # the event ids after it may be lower by as many.
    skipped_changes: int = 0

    def _actual_ids(self, text: str) -> str:
        return UUID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), text)

    async def check(self, example: Example) -> None:
        first, headers, body = split_message(self._actual_ids(example.request))
        method, target, _ = first.split(" ")
        if example.wait:
            await self._wait(target, example.wait)
        status_line, expected_headers, expected_body = split_message(example.response)
        status = int(status_line.split(" ")[1])
        async with self.client.session.request(
            method, self.client.url + target, headers=headers, data=body.encode() or None
        ) as response:
            assert response.status == status, (example.title, await response.text())
            content_type = expected_headers["Content-Type"]
            assert response.headers["Content-Type"].startswith(content_type), example.title
            if content_type == "text/event-stream":
                await self._match_stream(response, expected_body)
                return
            actual = json.loads(await response.text())
        expected = json.loads(expected_body)
        if target.endswith("/cancel") and (expected.get("state"), actual.get("state")) == (
            "pending_cancellation",
            "cancelled",
        ):
            expected = {**expected, "state": "cancelled", "ended_at": actual["ended_at"]}
            self.skipped_changes += 1
        self.match(expected, actual, example.title)
        if method == "POST" and target == "/jobs" and status == 201:
            self.last_job = actual["job_id"]

    async def _wait(self, target: str, state: str) -> None:
        found = UUID.search(target)
        job_id = found.group(0) if found else self.last_job

        async def reached() -> bool:
            _, job = await self.client.request("GET", f"/jobs/{job_id}")
            return bool(job["state"] == state)

        await eventually(reached)

    async def _match_stream(self, response: Any, expected: str) -> None:
        wanted = [split_event(chunk) for chunk in expected.split("\n\n") if chunk.strip()]
        got = [e async for e in sse_events(response, limit=len(wanted))]
        assert len(got) == len(wanted)
        for want, have in zip(wanted, got, strict=True):
            self.match(want, have, "event stream")

    def match(self, expected: Any, actual: Any, where: str) -> None:
        if isinstance(expected, dict):
            assert isinstance(actual, dict), (where, actual)
            assert set(expected) == set(actual), (where, actual)
            for key, value in expected.items():
                self.match(value, actual[key], f"{where}.{key}")
        elif isinstance(expected, list):
            assert isinstance(actual, list), (where, actual)
            assert len(expected) == len(actual), (where, actual)
            for index, (want, have) in enumerate(zip(expected, actual, strict=True)):
                self.match(want, have, f"{where}[{index}]")
        elif isinstance(expected, str) and UUID.fullmatch(expected):
            assert isinstance(actual, str), (where, actual)
            assert UUID.fullmatch(actual), (where, actual)
            assert self.ids.setdefault(expected, actual) == actual, where
        elif isinstance(expected, str) and TIMESTAMP.match(expected):
            assert isinstance(actual, str), (where, actual)
            assert TIMESTAMP.match(actual), (where, actual)
        elif isinstance(expected, str) and self.skipped_changes and expected != actual:
            self._match_numbers(expected, actual, where)
        else:
            assert expected == actual, (where, expected, actual)

    def _match_numbers(self, expected: str, actual: str, where: str) -> None:
        """`actual` is `expected` with each number in it lower by at most `skipped_changes`."""
        pattern = re.sub(r"\d+", lambda _: r"(\d+)", re.escape(expected))
        found = re.fullmatch(pattern, actual)
        assert found is not None, (where, expected, actual)
        documented = [int(n) for n in re.findall(r"\d+", expected)]
        for want, have in zip(documented, map(int, found.groups()), strict=True):
            assert want - self.skipped_changes <= have <= want, (where, expected, actual)


def split_event(chunk: str) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for line in chunk.strip().splitlines():
        key, _, value = line.partition(": ")
        event[key] = json.loads(value) if key == "data" else value
    return event
