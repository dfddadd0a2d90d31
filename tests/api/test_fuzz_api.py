"""Random and mutated specifications thrown at ValidateWorkflow and CreateWorkflow: the answer
is always a proper status (never INTERNAL or UNKNOWN) and always prompt."""

from __future__ import annotations

import asyncio
import json

import grpc
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

BASE = spec(
    tasks=(
        "  - build:\n"
        "      call: CreateMaterializedViewIfNotExists\n"
        "      with:\n"
        "        nql: SELECT user_id FROM company_data.events\n"
        "        datasetName: users\n"
        "      export: {as: '$context + {id: .datasetId}'}\n"
        "  - log:\n"
        "      call: ExecuteDml\n"
        "      with:\n"
        "        nql: '${ \"INSERT INTO company_data.audit VALUES (\\($context.id))\" }'\n"
    )
)

ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = BASE.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["drop", "dup", "insert", "char", "indent", "value"]))
        if kind == "drop" and len(lines) > 1:
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "insert":
            lines.insert(i, draw(st.text(max_size=30)))
        elif kind == "char" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(st.characters()) + lines[i][j + 1 :]
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 8)) + lines[i].lstrip()
        elif kind == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {json.dumps(draw(json_values))}"
    return "\n".join(lines)


documents = st.one_of(
    mutated(),
    st.text(max_size=300),
    json_values.map(lambda v: yaml.safe_dump(v)),
    st.dictionaries(
        st.sampled_from(["document", "do", "schedule", "input", "use", "output", "timeout"]),
        json_values,
    ).map(lambda v: yaml.safe_dump(v)),
)


async def check(call: object) -> None:
    code, details = grpc.StatusCode.OK, ""
    try:
        await asyncio.wait_for(call, timeout=10)  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
    assert code in ALLOWED | {grpc.StatusCode.OK}, (code, details)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=documents)
async def test_random_specs_never_crash_the_api(daemon: Daemon, text: str) -> None:
    await check(daemon.stub.ValidateWorkflow(pb.ValidateWorkflowRequest(specification=text)))
    await check(daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=text)))
