"""Every RPC of WorkflowService, with random and boundary values in every field of its request
(built from the proto descriptors, so a new field is fuzzed the day it is added), and raw bytes
protobuf cannot decode: the answer is never INTERNAL or UNKNOWN, and afterwards the daemon is
healthy and a workflow still runs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon
from tests.engine.support import finished
from tests.specs import spec
from workflowd.v1 import workflow_service_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["WorkflowService"]
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
BOUNDARY_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**53, 2**63 - 1, -(2**63)]
EXISTING: dict[str, str] = {}  # filled by the test: ids that exist, so handlers go deep

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)


def deep_value(depth: int) -> struct_pb2.Value:
    """Lists nested `depth` deep (within what protobuf itself will build and parse)."""
    value = struct_pb2.Value(number_value=1)
    for _ in range(depth):
        outer = struct_pb2.Value()
        outer.list_value.values.append(value)
        value = outer
    return value


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def too_deep_trigger(workflow_id: str, depth: int) -> bytes:
    """A TriggerWorkflowRequest whose input nests `depth` lists, encoded by hand: protobuf's
    own encoder refuses to build what its decoder would refuse to read."""
    value = b"\x11" + b"\x00" * 7 + b"\xf0"  # Value.number_value = 1.0
    for _ in range(depth):
        listed = b"\x0a" + varint(len(value)) + value  # ListValue.values
        value = b"\x32" + varint(len(listed)) + listed  # Value.list_value
    wid = workflow_id.encode()
    return b"\x0a" + varint(len(wid)) + wid + b"\x2a" + varint(len(value)) + value


def strings(name: str) -> st.SearchStrategy[str]:
    hostile = st.sampled_from(
        ["", "a/b?c#d", "../x", "x" * 5000, "ünï", "\x00", "%2F", str(uuid.uuid4()), " "]
    )
    known = st.sampled_from(list(EXISTING.values()) or [""])
    return st.one_of(hostile, known, st.text(max_size=40))


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return strings(field.name)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 100))
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return st.one_of(st.sampled_from(BOUNDARY_INTS[:5]), st.integers(-(2**31), 2**31 - 1))
    if kind == FieldDescriptor.TYPE_INT64:
        return st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**63), 2**63 - 1))
    raise AssertionError(f"no strategy for field {field.full_name} of type {kind}")


def message(descriptor: Descriptor) -> st.SearchStrategy[Any]:
    """A strategy for a message built field by field from its descriptor."""
    name = descriptor.full_name
    if name == "google.protobuf.Value":
        return st.one_of(
            json_values.map(lambda v: json_format.ParseDict(v, struct_pb2.Value())),
            st.sampled_from([deep_value(20), deep_value(40)]),
        )
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.builds(
            lambda s, n: {"seconds": s, "nanos": n},
            st.one_of(st.sampled_from([0, -1, 2**40, -(2**40)]), st.integers(-(10**12), 10**12)),
            st.one_of(st.sampled_from([0, 999_999_999, -1, 10**9]), st.integers(0, 10**9 - 1)),
        )
    fields = {}
    for field in descriptor.fields:
        inner = message(field.message_type) if field.message_type else scalar(field)
        if field.is_repeated:
            inner = st.lists(inner, max_size=3)
        fields[field.name] = st.one_of(st.none(), inner)
    return st.fixed_dictionaries(fields)


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    out = cls()
    for key, value in values.items():
        if value is None:
            continue
        field = out.DESCRIPTOR.fields_by_name[key]
        if field.is_repeated:
            target = getattr(out, key)
            for item in value:
                if isinstance(item, dict):
                    build_into(target.add(), item)
                else:
                    target.append(item)
        elif isinstance(value, Message):
            getattr(out, key).CopyFrom(value)
        elif isinstance(value, dict):
            build_into(getattr(out, key), value)
        else:
            setattr(out, key, value)
    return out


def build_into(target: Message, values: dict[str, Any]) -> None:
    target.CopyFrom(build(type(target), values))


requests = st.sampled_from(list(SERVICE.methods)).flatmap(
    lambda method: st.tuples(st.just(method), message(method.input_type))
)


async def call(daemon: Daemon, method: Any, request: bytes) -> grpc.StatusCode:
    """One call with the given request bytes; a stream is read until its headers arrive (the
    daemon sends them once the watch is set up) or it fails, then cancelled."""
    path = f"/{SERVICE.full_name}/{method.name}"
    identity = lambda data: data  # noqa: E731
    if method.server_streaming:
        stream = daemon.channel.unary_stream(
            path, request_serializer=identity, response_deserializer=identity
        )(request)
        try:
            async with asyncio.timeout(20):
                await stream.initial_metadata()
                code = await stream.code() if stream.done() else grpc.StatusCode.OK
        finally:
            stream.cancel()
        return code
    unary = daemon.channel.unary_unary(
        path, request_serializer=identity, response_deserializer=identity
    )
    try:
        async with asyncio.timeout(20):
            await unary(request)
    except grpc.aio.AioRpcError as exc:
        if "Traceback" in (exc.details() or ""):
            return grpc.StatusCode.UNKNOWN  # a traceback shown to a caller counts as a crash
        return exc.code()
    return grpc.StatusCode.OK


async def seed(daemon: Daemon) -> None:
    if EXISTING.get("address") == daemon.address:
        return
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(), trigger_immediately=True)
    )
    EXISTING.update(
        address=daemon.address,
        workflow=created.workflow.id,
        run=created.run_id,
        namespace=created.workflow.namespace,
    )


async def still_healthy_and_working(daemon: Daemon) -> None:
    health = health_pb2_grpc.HealthStub(daemon.channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    # A workflow of its own: the fuzzing may well have archived the seeded one.
    name = f"healthy-{uuid.uuid4().hex[:8]}"
    created = await daemon.stub.CreateWorkflow(
        pb.CreateWorkflowRequest(specification=spec(name=name), trigger_immediately=True)
    )
    done = await finished(daemon, created.run_id)
    assert done.status == pb.RUN_STATUS_COMPLETED, done.error


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(requests, min_size=1, max_size=12))
async def test_random_requests_to_every_rpc_never_fail_internally(
    daemon: Daemon, batch: list[tuple[Any, dict[str, Any]]]
) -> None:
    await seed(daemon)
    for method, values in batch:
        message_class = getattr(pb, method.input_type.name)
        try:
            data = build(message_class, values).SerializeToString()
        except (ValueError, TypeError, OverflowError):
            continue  # a value protobuf itself refuses to encode never leaves a client
        code = await call(daemon, method, data)
        assert code not in REFUSED, (method.name, values, code)
    await still_healthy_and_working(daemon)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(
        st.tuples(
            st.sampled_from(list(SERVICE.methods)),
            st.one_of(
                st.binary(max_size=200),
                st.just(b"\x0a\x03\xff\xfe\xfd"),  # field 1: a string of invalid UTF-8
                st.just(b"\x2a" + b"\x80" * 10),  # a length that never ends
            ),
        ),
        min_size=1,
        max_size=10,
    )
)
async def test_undecodable_request_bytes_never_fail_internally(
    daemon: Daemon, batch: list[tuple[Any, bytes]]
) -> None:
    await seed(daemon)
    for method, data in batch:
        code = await call(daemon, method, data)
        assert code not in REFUSED, (method.name, data, code)
    await still_healthy_and_working(daemon)


async def test_too_deep_and_invalid_utf8_requests_say_so(daemon: Daemon) -> None:
    created = await daemon.stub.CreateWorkflow(pb.CreateWorkflowRequest(specification=spec()))
    for depth, says in [
        (40, "input: cannot be stored: it is nested deeper than 32 levels"),
        (
            120,
            "request: cannot be decoded: it is nested too deeply (protobuf reads at most 100 levels)",
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw_unary(daemon, "TriggerWorkflow")(too_deep_trigger(created.workflow.id, depth))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == says
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_unary(daemon, "GetRun")(b"\x0a\x02\xc3\x28")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "request: cannot be decoded: it is not a valid protobuf message (bad field or UTF-8 text)"
    )
    runs = await daemon.stub.ListRuns(pb.ListRunsRequest(workflow_id=created.workflow.id))
    assert list(runs.runs) == []


def raw_unary(daemon: Daemon, name: str) -> Any:
    return daemon.channel.unary_unary(
        f"/{SERVICE.full_name}/{name}",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
