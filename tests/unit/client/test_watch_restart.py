"""A watch that waits at the end of a history has received nothing from its server; the server restarts
meanwhile. The watch had reached it, so it resumes as one that had received events does (for
`RpcRetry.resume_s`), rather than giving up after the attempts of a call, as a watch of a wrong address does.

A taskwire-server sends such a watch nothing at all (not even headers) until the next event, so a test cannot
tell when the watch has reached it; the server here is an in-process gRPC server on 127.0.0.1 that says so,
stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from taskwire.client import AsyncClient, Client, ExecutionTransition, RpcRetry, State, WatchEvent
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.unit.client.records import event

# One attempt for a call that never reached a server: a watch taken for one that had not would end at its break.
RETRY = RpcRetry(max_attempts=1, initial_backoff_s=0.01, max_backoff_s=0.05, resume_s=30.0)
Watch = Callable[[tpb.WatchExecutionRequest, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


async def start(port: int, watch: Watch) -> tuple[grpc.aio.Server, int]:
    # Without SO_REUSEPORT: the port is this server's alone, as a real server's is.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=tpb.WatchExecutionRequest.FromString,
        response_serializer=tpb.WatchExecutionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("taskwire.v1.TaskService", {"WatchExecution": handler}),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


def sync_watch(address: str) -> list[WatchEvent]:
    with Client(address, retry=RETRY) as client:
        return list(client.watch("ex-1", after_sequence=4))


async def async_watch(address: str) -> list[WatchEvent]:
    async with AsyncClient(address, retry=RETRY) as client:
        return [seen async for seen in client.watch("ex-1", after_sequence=4)]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_watch_at_the_end_of_the_history_resumes_across_a_server_restart(kind: str) -> None:
    reached = asyncio.Event()
    resumed: list[int] = []

    async def nothing_new(request: tpb.WatchExecutionRequest, context: object) -> AsyncIterator[Any]:
        reached.set()
        await asyncio.Event().wait()  # no event after the one asked from, until the server stops
        yield tpb.WatchExecutionResponse()

    async def then_the_end(request: tpb.WatchExecutionRequest, context: object) -> AsyncIterator[Any]:
        resumed.append(request.after_sequence)
        transition = pb.ExecutionTransition(
            from_state=pb.EXECUTION_STATE_RUNNING,
            to_state=pb.EXECUTION_STATE_SUCCESS,
            reason_code=pb.REASON_CODE_COMPLETED,
        )
        yield tpb.WatchExecutionResponse(event=event(request.after_sequence + 1, execution_transition=transition))

    first, port = await start(0, nothing_new)
    address = f"127.0.0.1:{port}"
    watching = asyncio.ensure_future(asyncio.to_thread(sync_watch, address) if kind == "sync" else async_watch(address))
    try:
        async with asyncio.timeout(10):
            await reached.wait()
        await first.stop(None)  # the watch breaks: UNAVAILABLE
        restarted, _ = await start(port, then_the_end)
        try:
            async with asyncio.timeout(20):
                events = await watching
        finally:
            await restarted.stop(None)
    finally:
        watching.cancel()
        await first.stop(None)
    assert resumed == [4]
    assert [seen.sequence for seen in events] == [5]
    assert isinstance(events[0], ExecutionTransition)
    assert events[0].to_state is State.SUCCESS
