"""Protocol errors on the worker stream end it with a status, never OK and never silence: a stream that
never says hello, a frame whose bytes do not parse, a second hello. The server keeps serving others.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from taskwire.v1 import worker_service_pb2 as wpb
from tests.harness import ServerProcess

CONNECT = "/taskwire.v1.WorkerService/Connect"
LEASE_S = 2.0


def _hello(name: str = "probe") -> bytes:
    hello = wpb.WorkerHello(name=name, instance_id=f"{name}-instance", handlers=["echo"], slots=1)
    return wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)]).SerializeToString()


def _identity(data: bytes) -> bytes:
    return data


async def _session(server: ServerProcess, frames: list[bytes], *, read_first: bool = True) -> grpc.aio.AioRpcError:
    """Open a stream, send `frames` (reading the welcome after the first when asked) and return how it ended."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = channel.stream_stream(CONNECT, request_serializer=_identity, response_deserializer=_identity)()
        for index, frame in enumerate(frames):
            await call.write(frame)
            if index == 0 and read_first:
                first = await call.read()
                assert isinstance(first, bytes), first
                welcome = wpb.ConnectResponse.FromString(first)
                assert welcome.messages[0].WhichOneof("kind") == "welcome"
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(_drain(call), LEASE_S * 5)
        return ended.value


async def _drain(call: grpc.aio.StreamStreamCall[bytes, bytes]) -> None:
    """Read until the stream ends; a stream ending with OK falls through (and fails the caller's raises)."""
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_a_stream_that_never_says_hello_is_closed_after_the_lease(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = channel.stream_stream(CONNECT, request_serializer=_identity, response_deserializer=_identity)()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
    assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, ended.value
    assert "no hello" in (ended.value.details() or "")


async def test_a_garbage_frame_ends_the_stream_with_invalid_argument(server: ServerProcess) -> None:
    error = await _session(server, [_hello(), b"\x0a\x03\xff\xfe\xfd"])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert "frame" in (error.details() or "")
    assert "Traceback" not in server.process.output


async def test_a_second_hello_ends_the_stream_with_invalid_argument(server: ServerProcess) -> None:
    error = await _session(server, [_hello(), _hello("again")])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert "hello once" in (error.details() or "")


async def test_a_first_frame_that_is_not_a_hello_is_refused(server: ServerProcess) -> None:
    heartbeat = wpb.ConnectRequest(messages=[wpb.WorkerMessage(heartbeat=wpb.Heartbeat())]).SerializeToString()
    error = await _session(server, [heartbeat], read_first=False)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert "messages[0]" in (error.details() or "")
    assert server.stats().connected_workers == 0  # and the server still answers
