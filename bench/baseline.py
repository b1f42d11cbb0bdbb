"""The limit on this machine: bare grpc.aio, with no queue, store or state machine behind it.

Not part of taskwire. A separate server process (``python -m bench.baseline --listen HOST:PORT``)
answers three methods with the message types taskwire's own calls carry, so the bytes on the wire and
the protobuf work are alike:

- ``Echo`` (unary): returns the SubmitExecutionRequest it got; compared with one submit per task.
- ``Mux`` (bidirectional): answers every SubmitExecutionsRequest frame (N ExecutionSpecs) with the same
  frame: the bare cost of single submits from many callers carried over one shared stream, the
  specs pending at the moment coalesced into one frame; compared with one submit per task through the
  SDK, and (one message at a time, paced) with its durable acknowledgement.
- ``Stream`` (bidirectional): answers every ConnectRequest frame (one AttemptCompleted) with one
  ConnectResponse frame (one Invocation); compared with the worker streams of batched throughput.

The client side runs in the benchmark process, with the concurrency (callers) or window (messages in
flight per stream, one stream per worker) of the taskwire measurement it is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import grpc
import grpc.aio

from bench._common import channel, echo_execution, monotonic_s, pace, spawn_module
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb

SERVICE = "bench.Baseline"
ECHO = f"/{SERVICE}/Echo"
STREAM = f"/{SERVICE}/Stream"
MUX = f"/{SERVICE}/Mux"
READY = r"baseline listening on (\S+)"
_WARMUP_S = 0.3


def echo_request() -> tpb.SubmitExecutionRequest:
    """What one-submit-per-task callers send to taskwire, sent to the bare echo instead."""
    return tpb.SubmitExecutionRequest(execution=echo_execution())


def completed_frame() -> wpb.ConnectRequest:
    """A worker's report of one finished attempt, as the taskwire worker sends it."""
    ref = wpb.AttemptRef(task_run_id="0" * 32, attempt=1)
    return wpb.ConnectRequest(
        messages=[wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=ref, output=pb.Payload(data=b"null")))]
    )


def invocation_frame() -> wpb.ConnectResponse:
    """The server's next invocation, as taskwire sends it."""
    invocation = wpb.Invocation(
        ref=wpb.AttemptRef(task_run_id="0" * 32, attempt=1),
        execution_id="1" * 32,
        task_id="main",
        handler="echo",
        input=pb.Payload(data=b"null", content_type="application/json"),
    )
    return wpb.ConnectResponse(messages=[wpb.ServerMessage(invocation=invocation)])


# --------------------------------------------------------------------------------------------- server


async def _echo(request: tpb.SubmitExecutionRequest, context: Any) -> tpb.SubmitExecutionRequest:
    return request


async def _mux(
    requests: AsyncIterator[tpb.SubmitExecutionsRequest], context: Any
) -> AsyncIterator[tpb.SubmitExecutionsRequest]:
    async for request in requests:
        yield request


async def _stream(requests: AsyncIterator[wpb.ConnectRequest], context: Any) -> AsyncIterator[wpb.ConnectResponse]:
    answer = invocation_frame()
    async for _ in requests:
        yield answer


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo,
            request_deserializer=tpb.SubmitExecutionRequest.FromString,
            response_serializer=tpb.SubmitExecutionRequest.SerializeToString,
        ),
        "Mux": grpc.stream_stream_rpc_method_handler(
            _mux,
            request_deserializer=tpb.SubmitExecutionsRequest.FromString,
            response_serializer=tpb.SubmitExecutionsRequest.SerializeToString,
        ),
        "Stream": grpc.stream_stream_rpc_method_handler(
            _stream,
            request_deserializer=wpb.ConnectRequest.FromString,
            response_serializer=wpb.ConnectResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"baseline listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=0.2)


@contextlib.contextmanager
def baseline_server() -> Iterator[str]:
    """The bare server as its own process; yields its address."""
    process = spawn_module("bench.baseline", "--listen", "127.0.0.1:0")
    try:
        yield process.wait_for_line(READY).group(1)
    finally:
        process.kill()


# --------------------------------------------------------------------------------------------- clients


def _echo_call(chan: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
    return chan.unary_unary(
        ECHO,
        request_serializer=tpb.SubmitExecutionRequest.SerializeToString,
        response_deserializer=tpb.SubmitExecutionRequest.FromString,
    )


async def unary_qps(address: str, *, callers: int, duration_s: float) -> float:
    """Completed echo calls per second with `callers` concurrent callers on one channel."""
    request = echo_request()
    async with channel(address) as chan:
        call = _echo_call(chan)
        await call(request, timeout=10)
        return await _answered_per_s(lambda: call(request, timeout=30), callers=callers, duration_s=duration_s)


async def _answered_per_s(send: Callable[[], Awaitable[object]], *, callers: int, duration_s: float) -> float:
    """`send()`s answered per second, `callers` each sending one after another, counted over `duration_s`
    after a warm-up."""
    begin = monotonic_s() + _WARMUP_S
    end = begin + duration_s
    counted = 0

    async def caller() -> None:
        nonlocal counted
        while True:
            await send()
            now = monotonic_s()
            if now >= end:
                return
            if now >= begin:
                counted += 1

    await asyncio.gather(*(caller() for _ in range(callers)))
    return counted / duration_s


async def _round_trips(send: Callable[[], Awaitable[object]], *, rate: float, count: int) -> list[float]:
    """The time (seconds) of each `send()`, started at `rate` per second, open loop."""
    times: list[float] = []

    async def one(_: int) -> None:
        sent = monotonic_s()
        await send()
        times.append(monotonic_s() - sent)

    await pace(rate, count, one)
    return times


async def unary_round_trips(address: str, *, rate: float, count: int) -> list[float]:
    """Round-trip times (seconds) of echo calls started at `rate` per second, open loop, like the
    latency scenario's submits: the transport's own latency at that pace, with nothing behind it."""
    request = echo_request()
    async with channel(address) as chan:
        call = _echo_call(chan)
        for _ in range(20):  # warm up the connection
            await call(request, timeout=10)
        return await _round_trips(lambda: call(request, timeout=30), rate=rate, count=count)


class _Multiplexed:
    """Many callers' single messages over ONE open ``Mux`` stream, as an SDK that shares a stream does.

    One writer takes every spec queued at that moment and sends them as one frame (so a frame carries one
    spec when callers are few, and many when they crowd); one reader takes the answers, a frame for each
    frame sent and in the same order, and resolves each caller's future with its own spec.
    """

    def __init__(self, call: grpc.aio.StreamStreamCall[Any, Any]) -> None:
        self._call = call
        self._queued: list[tuple[tpb.ExecutionSpec, asyncio.Future[tpb.ExecutionSpec]]] = []
        self._sent: deque[list[asyncio.Future[tpb.ExecutionSpec]]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    async def send(self, spec: tpb.ExecutionSpec) -> tpb.ExecutionSpec:
        """Queue one spec and wait for its own answer."""
        answer: asyncio.Future[tpb.ExecutionSpec] = asyncio.get_running_loop().create_future()
        self._queued.append((spec, answer))
        self._wake.set()
        return await answer

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                frame, self._queued = self._queued, []
                if frame:
                    self._sent.append([answer for _, answer in frame])
                    await self._call.write(tpb.SubmitExecutionsRequest(executions=[spec for spec, _ in frame]))
                if self._closing:
                    return
        except Exception as error:
            self._fail(error)
            raise

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF and self._closing:
                    return
                if not isinstance(response, tpb.SubmitExecutionsRequest):  # grpc.aio.EOF
                    raise RuntimeError("the baseline server ended the Mux stream")
                answers = self._sent.popleft()
                if len(response.executions) != len(answers):
                    raise RuntimeError(f"a frame of {len(answers)} answered with {len(response.executions)}")
                for answer, spec in zip(answers, response.executions, strict=True):
                    answer.set_result(spec)
        except Exception as error:
            self._fail(error)
            raise

    def _fail(self, error: Exception) -> None:
        """A broken stream fails every caller still waiting, rather than leaving it waiting for ever."""
        waiting = [answer for _, answer in self._queued] + [answer for frame in self._sent for answer in frame]
        for answer in waiting:
            if not answer.done():
                answer.set_exception(RuntimeError(f"the Mux stream broke: {error!r}"))

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        writer, reader = self._tasks
        await end_stream(self._call, writer, reader)


async def end_stream(
    call: grpc.aio.StreamStreamCall[Any, Any], writer: asyncio.Task[None], *others: asyncio.Task[None]
) -> None:
    """End a stream as a client with nothing more to send, and read it to its end: every event of the call is
    then delivered on this loop before `asyncio.run` closes it. (A call cancelled instead has its last events
    handed to a loop that is closed by then, and the next loop prints "Event loop is closed".) The writer
    finishes the write it is in and stops; the call is cancelled after 5 s, or however this ends."""
    try:
        async with asyncio.timeout(5):
            await asyncio.wait([writer])
            await call.done_writing()
            if others:
                await asyncio.wait(others)
            else:
                while await call.read() is not grpc.aio.EOF:
                    pass
            await call.code()
    except (TimeoutError, grpc.RpcError, asyncio.InvalidStateError):
        pass  # cancelled below
    finally:
        call.cancel()  # nothing, once the call has ended
        for task in (writer, *others):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@contextlib.asynccontextmanager
async def _multiplexed(address: str) -> AsyncIterator[_Multiplexed]:
    async with channel(address) as chan:
        call = chan.stream_stream(
            MUX,
            request_serializer=tpb.SubmitExecutionsRequest.SerializeToString,
            response_deserializer=tpb.SubmitExecutionsRequest.FromString,
        )()
        stream = _Multiplexed(call)
        try:
            for _ in range(20):  # warm up the connection and the stream
                await stream.send(echo_execution())
            yield stream
        finally:
            await stream.close()


async def mux_qps(address: str, *, callers: int, duration_s: float) -> float:
    """Answered echo specs per second from `callers` concurrent callers, each sending one spec and awaiting its
    own answer, all over one stream whose writer coalesces the specs pending at once into one frame."""
    spec = echo_execution()
    async with _multiplexed(address) as stream:
        return await _answered_per_s(lambda: stream.send(spec), callers=callers, duration_s=duration_s)


async def stream_round_trips(address: str, *, rate: float, count: int) -> list[float]:
    """Round-trip times (seconds) of single specs on one open stream, started at `rate` per second, open loop
    (as `unary_round_trips`): at a pace where they seldom overlap, one message a frame."""
    spec = echo_execution()
    async with _multiplexed(address) as stream:
        return await _round_trips(lambda: stream.send(spec), rate=rate, count=count)


async def stream_rate(address: str, *, streams: int, window: int, duration_s: float) -> float:
    """Round trips per second over `streams` bidirectional streams (one channel and connection each),
    each keeping `window` messages in flight, as a worker with that many slots would.
    """
    request = completed_frame()
    begin = monotonic_s() + _WARMUP_S
    end = begin + duration_s
    counted = 0

    async def one_stream() -> None:
        nonlocal counted
        async with channel(address, ("grpc.use_local_subchannel_pool", 1)) as chan:
            call = chan.stream_stream(
                STREAM,
                request_serializer=wpb.ConnectRequest.SerializeToString,
                response_deserializer=wpb.ConnectResponse.FromString,
            )()
            credit = asyncio.Semaphore(window)
            stopping = asyncio.Event()

            async def writer() -> None:
                while True:
                    await credit.acquire()
                    if stopping.is_set():
                        return
                    await call.write(request)

            sending = asyncio.create_task(writer())
            try:
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise RuntimeError("the baseline server ended a stream")
                    credit.release()
                    now = monotonic_s()
                    if now >= end:
                        return
                    if now >= begin:
                        counted += 1
            finally:
                stopping.set()
                credit.release()  # a writer waiting for credit sees that it is to stop
                await end_stream(call, sending)

    await asyncio.gather(*(one_stream() for _ in range(streams)))
    return counted / duration_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT; port 0 picks a free one")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
