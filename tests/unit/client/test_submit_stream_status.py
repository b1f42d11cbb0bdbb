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


async def test_a_stream_refused_mid_write_fails_each_submit_with_the_servers_status(refusing: str) -> None:
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
    async with AsyncClient(refusing, retry=RpcRetry(max_attempts=1)) as client:
        for _ in range(100):
            seen.update(await asyncio.gather(*(submit(steps, client) for steps in range(3))))
    assert seen == {"PermissionDenied: role worker may not call StreamSubmits": 300}, seen
