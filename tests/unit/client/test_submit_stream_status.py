"""A submit stream the server refuses while the AsyncClient is writing to it: every submit fails with the
server's status, not with grpc.aio's INTERNAL "Internal error from Core" for the write that failed as the
call ended (grpc/grpc#36066; about one submit in seven, before the SDK kept the server's status)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from taskwire.client import AsyncClient, PermissionDenied, RpcRetry
from taskwire.common.aio_status import FirstStatus


async def _refuse(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "role worker may not call StreamSubmits")


@pytest.fixture
async def refusing() -> AsyncIterator[str]:
    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.stream_stream_rpc_method_handler(_refuse)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("taskwire.v1.TaskService", {"StreamSubmits": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.mark.parametrize("token", [None, "a-token"], ids=["plain", "with-token-interceptors"])
async def test_a_stream_refused_mid_write_fails_each_submit_with_the_servers_status(
    refusing: str, token: str | None
) -> None:
    async def submit(after_steps: int, client: AsyncClient) -> str:
        for _ in range(after_steps):  # each submit reaches the stream's writer in its own write
            await asyncio.sleep(0)
        try:
            await client.submit("echo", {})
        except PermissionDenied as refused:
            return f"PermissionDenied: {refused}"
        except Exception as other:
            return f"{type(other).__name__}: {other}"
        return "accepted"

    seen: collections.Counter[str] = collections.Counter()
    async with AsyncClient(refusing, retry=RpcRetry(max_attempts=1), token=token) as client:
        for _ in range(100):
            seen.update(await asyncio.gather(*(submit(steps, client) for steps in range(3))))
    assert seen == {"PermissionDenied: role worker may not call StreamSubmits": 300}, seen


async def test_first_status_gives_the_servers_status_for_a_write_that_failed_as_the_call_ended(refusing: str) -> None:
    """The helper the worker's stream uses too, on a raw call written three times in a row: grpc.aio's own
    error says INTERNAL for some of these calls, `FirstStatus.of` says what the server sent for every one."""
    raw: collections.Counter[str] = collections.Counter()
    kept: collections.Counter[str] = collections.Counter()
    async with grpc.aio.insecure_channel(refusing) as channel:
        same = lambda data: data  # noqa: E731
        method = channel.stream_stream(
            "/taskwire.v1.TaskService/StreamSubmits", request_serializer=same, response_deserializer=same
        )
        for _ in range(100):
            call = method()
            ended_with = FirstStatus(call)
            failure: grpc.aio.AioRpcError | None = None
            try:
                for _ in range(3):
                    await call.write(b"")
                await call.read()
            except grpc.aio.AioRpcError as error:
                failure = error
            except asyncio.InvalidStateError:  # a write after the status had arrived
                try:
                    await call.read()
                except grpc.aio.AioRpcError as error:
                    failure = error
            assert failure is not None
            raw[failure.code().name] += 1
            server = ended_with.of(failure)
            assert isinstance(server, grpc.aio.AioRpcError)
            kept[f"{server.code().name}: {server.details()}"] += 1
    assert kept == {"PERMISSION_DENIED: role worker may not call StreamSubmits": 100}, (kept, raw)
