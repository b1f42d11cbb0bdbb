"""The checks catch what they claim to: a worker that resets its stream where the protocol asks for a half-close,
and one that goes silent about a fenced attempt without stopping its handler, fail them; the same fake worker
doing it right passes. The fake workers are small gRPC clients of the scripted server, in this process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import pytest

from taskwire.conformance._checks import Kit, _lease_lost, _reconnect_rejected
from taskwire.conformance._scripted import Mismatch, Ref, ScriptedServer
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.v1 import worker_service_pb2_grpc


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _hello(instance_id: str, running: list[Ref]) -> wpb.ConnectRequest:
    hello = wpb.WorkerHello(
        name="fake",
        instance_id=instance_id,
        slots=2,
        handlers=["conformance.sleep"],
        running_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in running],
    )
    return wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)])


# ---- A: half-close, not a reset ----------------------------------------------------------------------------


@pytest.mark.parametrize("resets", [False, True], ids=["half-closes", "resets"])
async def test_only_a_half_close_counts_as_one(server: ScriptedServer, resets: bool) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = worker_service_pb2_grpc.WorkerServiceStub(channel).Connect()
        await call.write(_hello("fake-1", []))
        session = await server.next_session(timeout_s=5)
        await session.next("hello", timeout_s=5)
        if resets:
            call.cancel()
            with pytest.raises(Mismatch, match="expected the worker to half-close its stream; got it reset"):
                await session.wait_half_closed(timeout_s=5)
        else:
            await call.done_writing()
            await session.wait_half_closed(timeout_s=5)
            assert await call.read() == grpc.aio.EOF  # the server then ends the stream
        await session.wait_worker_done(timeout_s=5)  # either way the worker's side is over


# ---- B: a fenced handler really stops -----------------------------------------------------------------------


class FakeWorker:
    """Runs `conformance.sleep` attempts that never end by themselves. On a fence (LEASE_LOST, rejected) it goes
    silent about the attempt; `honours_fence` says whether the handler also stops. A broken one keeps it running,
    so the same attempt invoked again waits behind it (here: for ever)."""

    def __init__(self, address: str, *, honours_fence: bool) -> None:
        self.address = address
        self.honours_fence = honours_fence
        self.instance_id = f"fake-{uuid.uuid4().hex[:8]}"
        self.running: set[Ref] = set()
        self.fenced_still_running: set[Ref] = set()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
            while True:  # a new stream whenever the server ends one
                call = stub.Connect()
                await call.write(_hello(self.instance_id, sorted(self.running)))
                while (frame := await call.read()) != grpc.aio.EOF:
                    assert isinstance(frame, wpb.ConnectResponse)
                    for message in frame.messages:
                        for reply in self._handle(message):
                            await call.write(wpb.ConnectRequest(messages=[reply]))

    def _fence(self, ref: Ref) -> None:
        if ref in self.running:
            self.running.discard(ref)
            if not self.honours_fence:
                self.fenced_still_running.add(ref)

    def _handle(self, message: wpb.ServerMessage) -> list[wpb.WorkerMessage]:
        kind = message.WhichOneof("kind")
        if kind == "welcome":
            for r in message.welcome.rejected_attempts:
                self._fence((r.task_run_id, r.attempt))
        elif kind == "invocation":
            r = message.invocation.ref
            ref = (r.task_run_id, r.attempt)
            if ref not in self.running and ref not in self.fenced_still_running:
                self.running.add(ref)
                return [wpb.WorkerMessage(started=wpb.AttemptStarted(ref=r))]
        elif kind == "cancel":
            r = message.cancel.ref
            ref = (r.task_run_id, r.attempt)
            if message.cancel.reason == wpb.CANCEL_REASON_LEASE_LOST:
                self._fence(ref)
            else:
                self.running.discard(ref)
                return [wpb.WorkerMessage(cancel_acknowledged=wpb.CancelAcknowledged(ref=r))]
        return []


async def _check_against(server: ScriptedServer, check: Callable[[Kit], Awaitable[None]], *, honours: bool) -> None:
    worker = asyncio.create_task(FakeWorker(server.address, honours_fence=honours).run())
    try:
        async with asyncio.timeout(20):
            await check(Kit(server, connect_s=5))
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
            await worker


@pytest.mark.parametrize("check", [_lease_lost, _reconnect_rejected], ids=["lease-lost", "reconnect-rejected"])
async def test_a_worker_that_stops_its_fenced_handler_passes(
    server: ScriptedServer, check: Callable[[Kit], Awaitable[None]]
) -> None:
    await _check_against(server, check, honours=True)


@pytest.mark.parametrize("check", [_lease_lost, _reconnect_rejected], ids=["lease-lost", "reconnect-rejected"])
async def test_a_worker_silent_about_a_fenced_handler_it_never_stopped_fails(
    server: ScriptedServer, check: Callable[[Kit], Awaitable[None]]
) -> None:
    with pytest.raises(Mismatch, match=r"invoked again: its fenced handler stopped.*got none in 3s"):
        await _check_against(server, check, honours=False)
