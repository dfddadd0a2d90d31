"""Pure parts: the SSE decoder, the job JSON parser, problem details, backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workflowd.domain.jobs import JobState
from workflowd.jobs import MalformedResponse, job_info_from_json
from workflowd.jobs.config import JobsClientConfig
from workflowd.jobs.parse import problem_detail
from workflowd.jobs.sse import EventTooLarge, SseDecoder, SseEvent, iter_events


def _decode(text: str) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [decoder.feed(line.rstrip("\r")) for line in text.split("\n")]
    return [event for event in events if event is not None]


def test_sse_fields_comments_and_multiline_data() -> None:
    stream = (
        ": keepalive\n\n"
        'id: 7\nevent: job\ndata: {"a":\ndata: 1}\n\n'
        'event: reset\r\ndata:{"reason": "old"}\r\n\r\n'
        "id: 9\n\n"  # an id without data dispatches nothing
        "data: plain\nretry: 10\nbogus: x\n\n"
        "data: cut off without its blank line"
    )
    assert _decode(stream) == [
        SseEvent(event="job", data='{"a":\n1}', id="7"),
        SseEvent(event="reset", data='{"reason": "old"}', id=None),
        SseEvent(event="message", data="plain", id=None),
    ]


class _Chunks:
    """A stream that delivers these chunks, then ends."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


async def _events(*chunks: bytes, limit: int = 1000) -> list[SseEvent]:
    stream = iter_events(_Chunks(*chunks), idle_timeout_s=5, max_line_bytes=limit)
    return [event async for event in stream]


async def test_sse_events_split_anywhere_across_chunks_read_the_same() -> None:
    stream = 'id: 1\nevent: job\ndata: {"é": 1}\n\n: keepalive\n\nid: 2\r\ndata: x\r\n\r\nid: 3\n'
    expected = [
        SseEvent(event="job", data='{"é": 1}', id="1"),
        SseEvent(event="message", data="x", id="2"),
    ]
    raw = stream.encode()
    assert await _events(raw) == expected
    # Every split point, the two-byte "é" and the CRLFs included; the unfinished event is dropped.
    for cut in range(1, len(raw)):
        assert await _events(raw[:cut], raw[cut:]) == expected, cut
    assert await _events(*(raw[i : i + 1] for i in range(len(raw)))) == expected


async def test_an_sse_line_over_the_bound_is_refused_however_it_arrives() -> None:
    line = b"data: " + b"x" * 20
    with pytest.raises(EventTooLarge):
        await _events(line + b"\n\n", limit=20)
    with pytest.raises(EventTooLarge):
        await _events(line[:10], line[10:], b"\n\n", limit=20)  # no end of line yet
    with pytest.raises(EventTooLarge):
        await _events(b"data: a\n" + line, limit=20)
    assert await _events(b"data: " + b"x" * 14 + b"\n\n", limit=20) == [
        SseEvent(event="message", data="x" * 14, id=None)
    ]


def test_job_parser_is_tolerant_of_extra_and_missing_optional_fields() -> None:
    info = job_info_from_json(
        {
            "job_id": "j1",
            "state": "failed",
            "failures": [{"message": "boom", "timestamp": "x", "value": None}, "bare"],
            "created_at": "2026-11-24T01:02:03.123456Z",
            "ended_at": "not a time",
            "something_new": [1, 2],
        }
    )
    assert info.state is JobState.FAILED
    assert info.failure_messages == ("boom", "bare")
    assert info.created_at == datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)
    assert info.ended_at is None
    assert info.result is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"state": "pending"},
        {"job_id": "", "state": "pending"},
        {"job_id": "j", "state": "exploded"},
        {"job_id": "j", "state": "completed", "result": [1]},
    ],
)
def test_job_parser_refuses_what_is_not_a_job(body: object) -> None:
    with pytest.raises(MalformedResponse, match="malformed response from jobs API"):
        job_info_from_json(body)


def test_problem_detail_prefers_detail_then_title_then_text() -> None:
    assert problem_detail(b'{"title": "T", "detail": "D"}', 400, "Bad") == "D"
    assert problem_detail(b'{"title": "T"}', 400, "Bad") == "T"
    assert problem_detail(b"plain text", 400, "Bad") == "plain text"
    assert problem_detail(b"", 400, "Bad") == "Bad"
    assert problem_detail(b"", 400, None) == "HTTP 400"


def test_transport_backoff_is_capped_full_jitter() -> None:
    config = JobsClientConfig("http://jobs", backoff_initial_s=0.1, backoff_max_s=0.4)
    backoff = config.backoff.delays()
    delays = [backoff.next() for _ in range(50)]
    assert all(0 <= d <= 0.4 for d in delays)
    assert delays[0] <= 0.1
    ceilings = config.backoff.delays(uniform=lambda _low, high: high)
    assert [ceilings.next() for _ in range(4)] == [0.1, 0.2, 0.4, 0.4]
    assert config.backoff.delay(1, uniform=lambda low, _high: low) == 0  # full jitter
    backoff.reset()
    assert backoff.next() <= 0.1
