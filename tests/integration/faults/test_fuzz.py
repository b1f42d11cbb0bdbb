"""Fuzzing every method and the worker stream: raw bytes and structured messages with hostile values.

Never a crash, never UNKNOWN or INTERNAL for bad input, never a state change from a rejected call, at
most one log line per rejected request. `make soak` runs the same properties with far more examples
(TASKWIRE_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
            for _ in channel.unary_stream(path, **raw)(body, timeout=3):
                pass
        else:
            channel.unary_unary(path, **raw)(body, timeout=3)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


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

    @FUZZ
    @given(body=st.binary(max_size=256))
    def check(body: bytes) -> None:
        before_rows = _executions(channel)
        before_lines = len(server.process.lines)
        code = _call(channel, method, body)
        assert code in ACCEPTABLE, f"{_path(method)} answered {code} to {body!r}"
        if code is not grpc.StatusCode.OK:
            assert _executions(channel) == before_rows, "a rejected call changed state"
        new = server.process.lines[before_lines:]
        assert len(new) <= 1, "\n".join(new)
        assert not any("Traceback" in line for line in new), "\n".join(new)

    check()
    assert server.process.popen.poll() is None, "the server died"
