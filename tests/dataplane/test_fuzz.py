"""Random bodies, query strings, Last-Event-ID headers and path segments at every endpoint:
never a 500, always problem+json on a 4xx, and the data plane stays healthy.

Hypothesis drives the examples from a worker thread; each request runs on the test's event
loop against one data plane shared by all examples, which keeps the whole test fast.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dataplane.dp_support import EVENTS_CSV, Running

ENDPOINTS = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{}"),
    ("POST", "/jobs/{}/cancel"),
    ("GET", "/jobs/{}/events"),
    ("GET", "/jobs/events"),
    ("GET", "/datasets"),
    ("GET", "/datasets/{}"),
    ("GET", "/datasets/{}/sample"),
    ("POST", "/datasets/{}/load"),
]
PARAMS = ["offset", "per_page", "limit", "last_event_id", "ids", "state", "tag", "type"]
PARAMS += ["workflow_run_id", "order_by", "format", "replace"]
NQL = [
    "SELECT 1 AS x",
    "DELETE FROM company_data.events WHERE event_id < 0",
    "SELECT * FROM _dataplane.datasets",
    "INSTALL httpfs",
    "SELECT current_setting('threads') AS t",
]

# Strings as an attacker writes them: any code point, lone surrogates and NULs included.
chars = st.characters(exclude_categories=("Cs",))
specials = st.sampled_from(["\ud800", "\udfff", "\x00"])
strings = st.one_of(
    st.text(chars, max_size=30), st.lists(st.one_of(chars, specials), max_size=30).map("".join)
)
numbers = st.one_of(
    st.integers(-(10**30), 10**30), st.integers(-5, 600), st.sampled_from([2**63 - 1, 2**63])
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.floats(), strings)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
    max_leaves=12,
)
names = st.one_of(st.sampled_from(["events", "v1", "42", "a" * 300]), strings)
nql_texts = st.one_of(st.sampled_from(NQL), strings)
VALID_INPUTS = {
    "materialize-view": st.fixed_dictionaries({"nql": nql_texts, "dataset_name": names}),
    "refresh-materialized-view": st.one_of(
        st.fixed_dictionaries({"dataset_id": numbers}),
        st.fixed_dictionaries({"dataset_name": names}),
    ),
    "execute-dml": st.fixed_dictionaries({"nql": nql_texts}),
}


@st.composite
def submissions(draw: st.DrawFn) -> dict[str, object]:
    """A well-formed submission whose every string may be hostile, and one field of which
    may be any JSON at all: hostile values get past the shape checks this way."""
    job_type = draw(st.sampled_from(sorted(VALID_INPUTS)))
    body: dict[str, object] = {
        "type": job_type,
        "input": draw(VALID_INPUTS[job_type]),
        "tags": draw(st.lists(strings, max_size=3)),
        "metadata": draw(st.dictionaries(strings, strings, max_size=3)),
        "idempotency_key": draw(strings),
    }
    field = draw(st.sampled_from([None, "type", "input", "tags", "metadata", "idempotency_key"]))
    if field is not None:
        body[field] = draw(json_values)
    return body


bodies = st.one_of(
    submissions().map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(30, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.binary(max_size=200),
)
segments = st.one_of(
    st.text(chars, max_size=300),
    st.sampled_from(["events", "1", "00", "9" * 30, "événement", "\x00", "..", "%"]),
    st.uuids().map(str),
)
query_values = st.one_of(st.text(chars, max_size=40), numbers.map(str))
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
# Submitting jobs is where most input goes, so half of the requests do.
endpoints = st.one_of(st.just(("POST", "/jobs")), st.sampled_from(ENDPOINTS))


@dataclass
class Probe:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@st.composite
def probes(draw: st.DrawFn) -> Probe:
    method, template = draw(endpoints)
    segment = quote(draw(segments), safe="")
    keys = st.one_of(st.sampled_from(PARAMS), st.text(chars, min_size=1, max_size=10))
    query = draw(st.lists(st.tuples(keys, query_values), max_size=4))
    headers = {}
    if draw(st.booleans()):
        headers["Last-Event-ID"] = draw(st.one_of(header_text, numbers.map(str)))
    body = draw(bodies) if method == "POST" else None
    return Probe(method, template.format(segment), query, headers, body)


async def _send(dp: Running, probe: Probe) -> None:
    url = yarl.URL(dp.client.url + probe.path + "?" + urlencode(probe.query), encoded=True)
    async with dp.client.session.request(
        probe.method, url, headers=probe.headers, data=probe.body
    ) as response:
        assert response.status < 500, (probe, await response.text())
        if response.content_type == "text/event-stream":
            assert response.status == 200
            return  # a live stream: its headers are the answer
        text = await response.text()
    if response.status >= 400:
        assert response.content_type == "application/problem+json", (probe, text)
        problem = json.loads(text)
        assert set(problem) == {"type", "title", "status", "detail"}, problem
        assert problem["status"] == response.status
        assert 0 < len(problem["detail"]) < 1000, problem
    elif response.content_type == "application/json":
        json.loads(text)


async def test_random_requests_never_break_the_data_plane(dp: Running) -> None:
    await dp.client.load_csv("events", EVENTS_CSV)
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(probes())
    def examples(probe: Probe) -> None:
        asyncio.run_coroutine_threadsafe(_send(dp, probe), loop).result(timeout=30)

    await asyncio.to_thread(examples)

    status, health = await dp.client.request("GET", "/healthz")
    assert (status, health["status"]) == (200, "ok")
    job = await dp.client.run("materialize-view", {"nql": "SELECT 1 AS x", "dataset_name": "after"})
    assert job["state"] == "completed", job
    assert dp.query("SELECT x FROM company_data.after") == [(1,)]
