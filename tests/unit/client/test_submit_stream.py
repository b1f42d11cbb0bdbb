"""The submit stream of a client: the deadline each submit carries, how the server groups a client's submits,
and what becomes of the submits in flight when the client closes.

The servers here are in-process gRPC servers on 127.0.0.1:0: one that hosts the server's own stream
(`taskwire.server._submit_stream.SubmitStream`) over recording fakes of the engine, and ones that never answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio
import pytest

from taskwire import common as d
from taskwire.client import AsyncClient, Client, RpcRetry, TaskwireError, _submit_stream
from taskwire.client._submit_stream import streamed
from taskwire.server._submit_stream import SubmitStream
from taskwire.v1 import task_service_pb2 as tpb
from tests.unit.client.records import execution_proto, snapshot

SERVICE = "taskwire.v1.TaskService"
NO_RETRY = RpcRetry(max_attempts=1)


@pytest.mark.parametrize(
    "admission",
    [tpb.ADMISSION_MODE_UNSPECIFIED, tpb.ADMISSION_MODE_FAIL_FAST, tpb.ADMISSION_MODE_WAIT_FOR_ROOM],
    ids=["unspecified", "fail-fast", "wait-for-room"],
)
def test_every_streamed_submit_carries_the_callers_deadline(admission: tpb.AdmissionMode.ValueType) -> None:
    """As a unary call's deadline would: the server gives up on the submit when the caller does."""
    request = tpb.SubmitExecutionRequest(admission=admission)
    submit = streamed(7, request, 2.5)
    assert submit.id == 7
    assert submit.request == request
    assert submit.HasField("timeout")
    assert submit.timeout.ToTimedelta() == timedelta(seconds=2.5)


# ---- A client's submits on the server's stream ------------------------------------------------------------


@dataclass
class Engine:
    """What the server's stream calls, recorded: the submits made one by one, and those made together."""

    one: list[str] = field(default_factory=list)
    together: list[list[str]] = field(default_factory=list)
    timeouts: list[timedelta] = field(default_factory=list)

    async def submit_one(
        self, request: tpb.SubmitExecutionRequest, budget_s: float, response: tpb.SubmitExecutionResponse
    ) -> None:
        self.one.append(request.execution.name)
        response.execution.CopyFrom(execution_proto(snapshot(d.State.PENDING)))

    async def submit_each(
        self, requests: Sequence[tpb.SubmitExecutionRequest], responses: Sequence[tpb.SubmitExecutionResponse]
    ) -> list[d.TaskwireError | None]:
        self.together.append([request.execution.name for request in requests])
        for response in responses:
            response.execution.CopyFrom(execution_proto(snapshot(d.State.PENDING)))
        return [None] * len(requests)

    def charge(self, count: int) -> d.RateLimited | None:
        return None


class Recorded:
    """A call's context that records the timeout of every submit the stream reads through it."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], engine: Engine) -> None:
        self._context = context
        self._engine = engine

    async def read(self) -> Any:
        message = await self._context.read()
        if isinstance(message, tpb.StreamSubmitsRequest):
            self._engine.timeouts.extend(submit.timeout.ToTimedelta() for submit in message.submits)
        return message

    async def write(self, response: tpb.StreamSubmitsResponse) -> None:
        await self._context.write(response)


async def serve(handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def stream_server() -> AsyncIterator[tuple[Engine, str]]:
    """The server's StreamSubmits, its engine recorded, with a call timeout of a minute."""
    engine = Engine()

    async def stream_submits(requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        stream = SubmitStream(
            submit_one=engine.submit_one,
            submit_each=engine.submit_each,
            budget_s=60.0,
            charge=engine.charge,
            max_message_bytes=4 * 1024 * 1024,
        )
        assert await stream.serve(Recorded(context, engine)) is None  # type: ignore[arg-type]

    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(
        stream_submits,
        request_deserializer=tpb.StreamSubmitsRequest.FromString,
        response_serializer=tpb.StreamSubmitsResponse.SerializeToString,
    )
    server, address = await serve({"StreamSubmits": handler})
    yield engine, address
    await server.stop(None)


async def test_a_clients_submits_carry_its_timeout_and_are_made_together(stream_server: tuple[Engine, str]) -> None:
    """Every submit of a client carries the client's timeout, the same for all: so the server makes those that
    arrive together (without a key, failing fast) as one group, under one deadline."""
    engine, address = stream_server
    async with AsyncClient(address, timeout=timedelta(seconds=7), retry=NO_RETRY) as client:
        # Started in one loop turn: they go out in one message.
        await asyncio.gather(*(client.submit("echo", name=f"s{index}") for index in range(5)))
        await client.submit("echo", name="keyed", key="k")
    assert engine.timeouts == [timedelta(seconds=7)] * 6
    assert engine.together == [[f"s{index}" for index in range(5)]]
    assert engine.one == ["keyed"]


# ---- Closing a client with submits in flight ----------------------------------------------------------------


@dataclass
class Silent:
    """A server that never answers a call, nor ends one, as one stuck on its store: it notes each call that
    reached it, a submit stream once its first submits have."""

    reached: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def stream_submits(self, requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.read()
        self.reached.put_nowait("StreamSubmits")
        await asyncio.Event().wait()

    async def get_stats(self, request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.reached.put_nowait("GetStats")
        await asyncio.Event().wait()


@pytest.fixture
async def silent() -> AsyncIterator[tuple[Silent, str]]:
    calls = Silent()
    server, address = await serve(
        {
            "StreamSubmits": grpc.stream_stream_rpc_method_handler(calls.stream_submits),
            "GetStats": grpc.unary_unary_rpc_method_handler(calls.get_stats),
        }
    )
    yield calls, address
    await server.stop(None)


async def outcome(call: Awaitable[object]) -> str:
    """How a call ended, in words."""
    try:
        await call
    except asyncio.CancelledError as cancelled:  # the call's, not this task's: nothing cancelled it
        return f"cancelled: {cancelled}".strip()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "answered"


async def test_closing_an_async_client_cancels_its_submits_in_flight_as_its_other_calls(
    silent: tuple[Silent, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server does not end the submit stream within the wait of close(): the submits still unanswered end
    then, cancelled as a unary call in flight is, not at their own deadline (a minute here)."""
    calls, address = silent
    monkeypatch.setattr(_submit_stream, "CLOSE_WAIT_S", 0.2)
    client = AsyncClient(address, timeout=timedelta(seconds=60), retry=NO_RETRY)
    submits = [asyncio.ensure_future(outcome(client.submit("echo"))) for _ in range(3)]
    stats = asyncio.ensure_future(outcome(client.stats()))
    async with asyncio.timeout(10):
        assert {await calls.reached.get(), await calls.reached.get()} == {"StreamSubmits", "GetStats"}
    await client.close()
    async with asyncio.timeout(5):
        assert await asyncio.gather(*submits) == ["cancelled: the client was closed"] * 3
        assert (await stats).startswith("cancelled")


@dataclass
class SilentSubmits:
    """A sync StreamSubmits that reads the client's submits and never answers them, until `release`."""

    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def stream_submits(
        self, requests: Iterator[tpb.StreamSubmitsRequest], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        next(requests)
        self.arrived.set()
        self.release.wait(30)
        yield from ()


def test_closing_a_client_fails_its_submits_in_flight_as_its_other_calls() -> None:
    """A CANCELLED call's error, as a unary call in flight raises then, saying why."""
    silent = SilentSubmits()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(
        silent.stream_submits,
        request_deserializer=tpb.StreamSubmitsRequest.FromString,
        response_serializer=tpb.StreamSubmitsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"StreamSubmits": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = Client(f"127.0.0.1:{port}", timeout=timedelta(seconds=60), retry=NO_RETRY)
        with futures.ThreadPoolExecutor(max_workers=1) as pool:
            submit = pool.submit(client.submit, "echo")
            assert silent.arrived.wait(10)
            client.close()
            with pytest.raises(TaskwireError, match=r"^the client was closed$") as raised:
                submit.result(timeout=10)
        assert type(raised.value) is TaskwireError  # CANCELLED: no status of its own
    finally:
        silent.release.set()
        server.stop(None)
