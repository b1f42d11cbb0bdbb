"""Fuzzing every method and the worker stream: raw bytes and structured messages with hostile values.

Never a crash, never UNKNOWN or INTERNAL for bad input, never a state change from a rejected call, at
most one log line per rejected request. `make soak` runs the same properties with far more examples
(TASKWIRE_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskwire.server._auth_policy import AUDITED
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import worker_service_pb2 as wpb  # noqa: F401  (registers WorkerService in the pool)
from tests.harness import ServerProcess, start_server

EXAMPLES = int(os.environ.get("TASKWIRE_FUZZ_EXAMPLES", "60"))
# What a caller's mistake may get; UNKNOWN and INTERNAL are the server's own failures.
ACCEPTABLE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("TASKWIRE_FUZZ_RANDOM") is None,
)


def _methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [
        method
        for name in ("taskwire.v1.TaskService", "taskwire.v1.WorkerService")
        for method in pool.FindServiceByName(name).methods
    ]


METHODS = _methods()
# Streams that never end by themselves: a request they accept is followed for a moment only.
ENDLESS = frozenset({"/taskwire.v1.TaskService/WatchEvents"})
ENDLESS_DEADLINE_S = 0.1


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, grpc.Channel]]:
    server = start_server(
        Path(tmp_path_factory.mktemp("fuzz")) / "taskwire.db", "--lease-timeout", "2", "--heartbeat-interval", "0.5"
    )
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, channel
    finally:
        channel.close()
        server.process.kill()


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _identity(data: bytes) -> bytes:
    return data


def _call(channel: grpc.Channel, method: MethodDescriptor, body: bytes) -> grpc.StatusCode:
    path = _path(method)
    raw = {"request_serializer": _identity, "response_deserializer": _identity}
    try:
        if method.client_streaming:
            for _ in channel.stream_stream(path, **raw)(iter([body]), timeout=3):
                pass
        elif method.server_streaming:
            deadline_s = ENDLESS_DEADLINE_S if path in ENDLESS else 3
            for _ in channel.unary_stream(path, **raw)(body, timeout=deadline_s):
                pass
        else:
            channel.unary_unary(path, **raw)(body, timeout=3)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def _exercise(server: ServerProcess, channel: grpc.Channel, method: MethodDescriptor, body: bytes, shown: str) -> bool:
    """One call: an acceptable status, and no state change if refused. Returns whether it was refused."""
    before_rows = _executions(channel)
    code = _call(channel, method, body)
    assert code in ACCEPTABLE, f"{_path(method)} answered {code} to {shown}"
    if code is not grpc.StatusCode.OK:
        assert _executions(channel) == before_rows, "a rejected call changed state"
    return code is not grpc.StatusCode.OK


class _LogBudget:
    """At most one log line per refused call over a run, and no traceback; an audited method (cancel, delete,
    drain, the bulk actions) also writes its one audit line for every call. Counted over the whole run: the
    server's lines reach the test through a pipe, so one may arrive after the next call has started."""

    def __init__(self, server: ServerProcess, method: MethodDescriptor) -> None:
        self._server = server
        self._start = len(server.process.lines)
        self._audited = _path(method) in AUDITED
        self.refused = 0
        self.calls = 0

    def count(self, refused: bool) -> None:
        self.calls += 1
        self.refused += refused

    def check(self) -> None:
        lines = self._server.process.lines[self._start :]
        assert len(lines) <= self.refused + (self.calls if self._audited else 0), "\n".join(lines[-20:])
        assert not any("Traceback" in line for line in lines), "\n".join(lines[-20:])


def _executions(channel: grpc.Channel) -> int:
    response = channel.unary_unary(
        "/taskwire.v1.TaskService/ListExecutions",
        request_serializer=tpb.ListExecutionsRequest.SerializeToString,
        response_deserializer=tpb.ListExecutionsResponse.FromString,
    )(tpb.ListExecutionsRequest(page_size=1000), timeout=5)
    return len(response.executions)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_raw_bytes_never_crash_or_change_state(
    fuzzed: tuple[ServerProcess, grpc.Channel], method: MethodDescriptor
) -> None:
    server, channel = fuzzed
    budget = _LogBudget(server, method)

    @FUZZ
    @given(body=st.binary(max_size=256))
    def check(body: bytes) -> None:
        budget.count(_exercise(server, channel, method, body, shown=repr(body)))

    check()
    assert server.process.popen.poll() is None, "the server died"
    budget.check()


_INTS = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 10**9, 10**14 % 2**31]),
)
_INT64S = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 10**14, 253_402_300_800, -62_135_596_801, 315_576_000_001]),
)
_SCALARS: dict[int, st.SearchStrategy[object]] = {
    FieldDescriptor.TYPE_STRING: st.text(max_size=40),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: _INTS,
    FieldDescriptor.TYPE_SINT32: _INTS,
    FieldDescriptor.TYPE_ENUM: _INTS,
    FieldDescriptor.TYPE_UINT32: st.integers(min_value=0, max_value=2**32 - 1),
    FieldDescriptor.TYPE_INT64: _INT64S,
    FieldDescriptor.TYPE_SINT64: _INT64S,
    FieldDescriptor.TYPE_UINT64: st.integers(min_value=0, max_value=2**64 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
}


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """Any message of the type: each field set or not, with hostile values, nested up to a few levels."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if depth > 3 or not draw(st.booleans()):
            continue
        count = draw(st.integers(min_value=1, max_value=3)) if field.is_repeated else 1
        for _ in range(count):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                assert field.message_type is not None
                value: Any = draw(_message(field.message_type, depth + 1))
                if field.message_type.GetOptions().map_entry:
                    entries = getattr(message, field.name)
                    if isinstance(value.value, Message):
                        entries[value.key].CopyFrom(value.value)
                    else:
                        entries[value.key] = value.value
                elif field.is_repeated:
                    getattr(message, field.name).add().CopyFrom(value)
                else:
                    getattr(message, field.name).CopyFrom(value)
            else:
                scalar = draw(_SCALARS[field.type])
                if field.is_repeated:
                    getattr(message, field.name).append(scalar)
                else:
                    setattr(message, field.name, scalar)
    return message


TASK_METHODS = [method for method in METHODS if not method.client_streaming]


@pytest.mark.parametrize("method", TASK_METHODS, ids=[m.name for m in TASK_METHODS])
def test_hostile_messages_get_a_status_not_a_crash(
    fuzzed: tuple[ServerProcess, grpc.Channel], method: MethodDescriptor
) -> None:
    server, channel = fuzzed
    budget = _LogBudget(server, method)

    @FUZZ
    @given(request=_message(method.input_type))
    def check(request: Message) -> None:
        budget.count(_exercise(server, channel, method, request.SerializeToString(), shown=str(request)))

    check()
    assert server.process.popen.poll() is None, "the server died"
    budget.check()
