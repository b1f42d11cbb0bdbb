"""A light, benchmark-only stand-in for many workers: N real ``WorkerService.Connect`` streams from one
process (grpc.aio), each on its own channel and TCP connection, with the HTTP/2 options of
taskwire-worker (``taskwire.common.http2``).

Each stream says hello (serving ``echo`` with `--slots` slots), waits for its Welcome, then answers
every Invocation at once with AttemptStarted and AttemptCompleted (the input as the output), one
frame per frame received, and heartbeats as the Welcome asks. No handler runs: this measures the
control plane's side of many worker streams, not a worker agent.

``python -m bench.stream_workers --server ADDR --streams N --slots S`` prints
``stream-workers: N streams connected`` once every stream is welcomed, runs until SIGTERM, then
prints ``stream-workers: completed C``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence

import grpc
import grpc.aio

from bench._common import channel
from taskwire.common.http2 import HTTP2_OPTIONS
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.v1 import worker_service_pb2_grpc

READY = r"stream-workers: (\d+) streams connected"
COMPLETED = r"stream-workers: completed (\d+)"


class _Streams:
    def __init__(self, address: str, *, streams: int, slots: int, handler: str) -> None:
        self._address = address
        self._streams = streams
        self._slots = slots
        self._handler = handler
        self.completed = 0
        self._welcomed = 0
        self._all_welcomed = asyncio.Event()
        self._stop = asyncio.Event()

    async def _one(self, number: int) -> None:
        async with channel(self._address, ("grpc.use_local_subchannel_pool", 1), *HTTP2_OPTIONS) as chan:
            call = worker_service_pb2_grpc.WorkerServiceStub(chan).Connect()
            hello = wpb.WorkerHello(
                name=f"stream-worker-{number}",
                instance_id=str(uuid.uuid4()),
                handlers=[self._handler],
                slots=self._slots,
                agent_version="bench-stream-worker",
            )
            await call.write(wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)]))
            frame = await call.read()
            if (
                not isinstance(frame, wpb.ConnectResponse)
                or not frame.messages
                or not frame.messages[0].HasField("welcome")
            ):
                raise RuntimeError(f"stream {number}: no Welcome")
            welcome = frame.messages[0].welcome
            interval_s = welcome.heartbeat_interval.ToTimedelta().total_seconds() or 5.0
            self._welcomed += 1
            if self._welcomed == self._streams:
                self._all_welcomed.set()
            writing = asyncio.Lock()  # one write at a time on a stream: answers and heartbeats take turns

            async def send(request: wpb.ConnectRequest) -> None:
                async with writing:
                    await call.write(request)

            heartbeats = asyncio.create_task(self._heartbeat(send, interval_s))
            answering = asyncio.create_task(self._answer(call, send, list(frame.messages[1:])))
            stopping = asyncio.create_task(self._stop.wait())
            try:
                done, _ = await asyncio.wait({heartbeats, answering, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stopping not in done:
                    failed = next(iter(done))
                    raise RuntimeError(f"stream {number} stopped early: {failed.exception()!r}")
            finally:
                for task in (heartbeats, answering, stopping):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                    await call.done_writing()
                call.cancel()

    async def _heartbeat(self, send: Callable[[wpb.ConnectRequest], Awaitable[None]], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await send(wpb.ConnectRequest(messages=[wpb.WorkerMessage(heartbeat=wpb.Heartbeat())]))

    async def _answer(
        self,
        call: grpc.aio.StreamStreamCall[wpb.ConnectRequest, wpb.ConnectResponse],
        send: Callable[[wpb.ConnectRequest], Awaitable[None]],
        pending: list[wpb.ServerMessage],
    ) -> None:
        while True:
            reply = wpb.ConnectRequest()
            for message in pending:
                if message.HasField("invocation"):
                    invocation = message.invocation
                    reply.messages.add().started.ref.CopyFrom(invocation.ref)
                    completed = reply.messages.add().completed
                    completed.ref.CopyFrom(invocation.ref)
                    completed.output.CopyFrom(invocation.input)
            if reply.messages:
                await send(reply)
                self.completed += len(reply.messages) // 2
            frame = await call.read()
            if not isinstance(frame, wpb.ConnectResponse):
                raise RuntimeError("the server ended the stream")
            pending = list(frame.messages)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        tasks = [asyncio.create_task(self._one(number)) for number in range(self._streams)]
        waiting = asyncio.ensure_future(self._all_welcomed.wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if self._all_welcomed.is_set():
            print(f"stream-workers: {self._streams} streams connected", flush=True)
        else:
            waiting.cancel()
        await asyncio.gather(*tasks)
        print(f"stream-workers: completed {self.completed}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_workers", description=__doc__)
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True, help="slots declared by each stream")
    parser.add_argument("--handler", default="echo")
    args = parser.parse_args(argv)
    asyncio.run(_Streams(args.server, streams=args.streams, slots=args.slots, handler=args.handler).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
