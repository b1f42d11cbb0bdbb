"""Single submits carried on one stream (`TaskService.StreamSubmits`), for `Client` and `AsyncClient`.

A unary call costs more than the submit it carries; so the SDKs send their single submits on one
long-lived stream per client, each with an id, each answered on its own once durable. When several
callers submit at once, the submits waiting to be written go out together in one message, and the
server answers those ready together: the stream coalesces under load and sends one submit a message
when idle, with no delay added either way. A submit's own failure is raised as the same error its
`SubmitExecution` call would have raised.

A stream that breaks fails the submits it carries (UNAVAILABLE, as a failed call would; the caller's
retry policy decides what is sent again); the next submit opens a new one. Closing the client fails
those still unanswered as its other calls in flight then fail (cancelled). A server that does not
know the method (UNIMPLEMENTED) is sent unary calls from then on. So is a submit of more than
`STREAMED_MAX_BYTES` (`fits_the_stream`), and a message carries at most `MESSAGE_MAX_BYTES` of them. A
message larger than the server takes would end the call and fail every submit on it, so both stay under
the smallest message any server takes (`--max-message-bytes` is 64 KiB over the payload limit at least).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

import grpc
import grpc.aio

from taskwire.common import RateLimited, TaskwireError, wire
from taskwire.common.aio_status import FirstStatus
from taskwire.v1 import task_service_pb2 as tpb

from ._errors import ServerUnavailable, detached, error_from_rpc, no_answer

MAX_PER_MESSAGE = 1000  # the server's limit
# The smallest message a server can be set to take is 64 KiB and a byte. A larger submit goes in a call of its
# own, where a message too large for the server fails only that call.
STREAMED_MAX_BYTES = 48 * 1024
MESSAGE_MAX_BYTES = 56 * 1024  # one message's submits, in all, each with its framing (one larger submit alone)
_FRAMING = 4  # a submit's field tag and length inside the message
CLOSE_WAIT_S = 2.0  # how long closing an AsyncClient waits for the server to end its submit stream
JOIN_WAIT_S = 5.0  # how long closing a Client waits for its submit stream's reader thread
CLOSED = "the client was closed"  # what a submit in flight when its client closed fails with

Answer = tpb.StreamedSubmitAnswer
Waiter = TypeVar("Waiter", asyncio.Future[Answer], concurrent.futures.Future[Answer])


def response_of(answer: tpb.StreamedSubmitAnswer) -> tpb.SubmitExecutionResponse:
    """The submit's response, or the error `SubmitExecution` would have raised."""
    if not answer.error_code:
        return answer.response
    if answer.HasField("retry_after"):
        raise RateLimited(answer.error_message, retry_after_s=answer.retry_after.ToTimedelta().total_seconds())
    raise wire.error_from_status_name(answer.error_code, answer.error_message)


class _Line(Generic[Waiter]):
    """One open stream's bookkeeping: its submits waiting for answers, by id."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.waiting: dict[int, Waiter] = {}
        self.broken: TaskwireError | None = None
        self._ids = itertools.count()

    def next_id(self) -> int:
        return next(self._ids)

    def answered(self, response: tpb.StreamSubmitsResponse) -> None:
        for answer in response.answers:
            waiter = self.waiting.pop(answer.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)

    def break_off(self, error: grpc.RpcError | None, *, closed: bool = False) -> None:
        """The stream ended: every submit still waiting fails, and the stream takes no more. They fail with the
        error the call ended with, as unavailable when the server ended it before answering them, or, when the
        client was `closed`, as its other calls in flight then fail (`_fail_closed`)."""
        if closed:
            self.broken = client_closed()
        elif error is not None:
            self.broken = error_from_rpc(error, address=self.address)
        else:
            self.broken = ServerUnavailable(self.address, "the server ended the submit stream")
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            if waiter.done():
                continue
            if closed:
                self._fail_closed(waiter, self.broken)
            else:
                waiter.set_exception(self.broken)

    def _fail_closed(self, waiter: Waiter, error: TaskwireError) -> None:
        waiter.set_exception(error)


def client_closed() -> TaskwireError:
    """The error of a `Client`'s submit in flight when it was closed: a CANCELLED call's, as its unary calls
    in flight then raise."""
    return wire.error_from_status(grpc.StatusCode.CANCELLED, CLOSED)


def streamed(submit_id: int, request: tpb.SubmitExecutionRequest, deadline_s: float) -> tpb.StreamedSubmit:
    """A submit for the stream, carrying the caller's deadline as a unary call would: the server gives up on
    it when the caller does (a submit not yet durable by then is not made), and answers a wait for room that
    found none shortly before, so the caller gets its DEADLINE_EXCEEDED, not its own. Every submit of a
    client carries the same deadline, so the server still starts those that arrive together as one group."""
    submit = tpb.StreamedSubmit(id=submit_id, request=request)
    submit.timeout.FromNanoseconds(int(deadline_s * 1e9))
    return submit


def fits_the_stream(request: tpb.SubmitExecutionRequest) -> bool:
    return request.ByteSize() <= STREAMED_MAX_BYTES


def _size(submit: tpb.StreamedSubmit) -> int:
    """What `submit` adds to its message."""
    return submit.ByteSize() + _FRAMING


def _message(submits: list[tpb.StreamedSubmit]) -> tpb.StreamSubmitsRequest:
    return tpb.StreamSubmitsRequest(submits=submits)


def _first_message(unsent: list[tpb.StreamedSubmit]) -> int:
    """How many of `unsent`, from the first, go in the next message: at least one, at most `MAX_PER_MESSAGE`
    and `MESSAGE_MAX_BYTES` in all."""
    total = 0
    for count, submit in enumerate(unsent[:MAX_PER_MESSAGE]):
        total += _size(submit)
        if total > MESSAGE_MAX_BYTES and count:
            return count
    return min(len(unsent), MAX_PER_MESSAGE)


# ---- asyncio ------------------------------------------------------------------------------------------


class _AsyncLine(_Line[asyncio.Future[tpb.StreamedSubmitAnswer]]):
    def __init__(self, call: grpc.aio.StreamStreamCall[Any, Any], address: str) -> None:
        super().__init__(address)
        self._call = call
        self._unsent: list[tpb.StreamedSubmit] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._status = FirstStatus(call)
        self._tasks = (asyncio.ensure_future(self._write()), asyncio.ensure_future(self._read()))

    def send(self, request: tpb.SubmitExecutionRequest, deadline_s: float) -> asyncio.Future[tpb.StreamedSubmitAnswer]:
        submit_id = self.next_id()
        waiter: asyncio.Future[tpb.StreamedSubmitAnswer] = asyncio.get_running_loop().create_future()
        self.waiting[submit_id] = waiter
        self._unsent.append(streamed(submit_id, request, deadline_s))
        self._wake.set()
        return waiter

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._unsent:
                count = _first_message(self._unsent)
                submits, self._unsent = self._unsent[:count], self._unsent[count:]
                try:
                    await self._call.write(_message(submits))
                except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                    return  # the reader learns why the stream ended
            if self._closing:
                return  # everything queued is written

    async def _read(self) -> None:
        error: grpc.RpcError | None = None
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                self.answered(cast(tpb.StreamSubmitsResponse, response))
        except grpc.RpcError as failed:
            error = self._status.of(failed)  # grpc/grpc#36066
        self.break_off(error)
        self._tasks[0].cancel()

    async def close(self) -> None:
        """End the stream as a client with nothing more to send: what is queued is written, the server answers
        every submit and ends the call. Every event of the call is delivered on this loop before this returns:
        an event still due when the loop closes (`asyncio.run` returning) would be handed by gRPC to a closed
        loop, and the next loop would print "Event loop is closed". A call the server does not end within
        `CLOSE_WAIT_S`, or a close that is itself cancelled, cancels the call. (The writer is not cancelled:
        grpc.aio cancels the whole call when a write is.)"""
        self._closing = True
        self._wake.set()
        writer, reader = self._tasks
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await asyncio.wait([writer])
                if not reader.done():
                    await self._call.done_writing()
                await asyncio.wait([reader])
                await self._call.code()
        except (TimeoutError, grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # cancelled below
        finally:
            self._call.cancel()  # nothing, once the server has ended it
            for task in self._tasks:
                task.cancel()
            if self.broken is None:
                # The reader, cancelled before the call ended, has failed none of the submits still waiting:
                # they fail now, not at their own deadlines.
                self.break_off(None, closed=True)

    def _fail_closed(self, waiter: asyncio.Future[tpb.StreamedSubmitAnswer], error: TaskwireError) -> None:
        # As grpc.aio's own calls in flight when their channel closes: cancelled (asyncio.CancelledError).
        waiter.cancel(CLOSED)


class AsyncSubmitStream:
    """The submit stream of an `AsyncClient`, opened on first use and again after it broke."""

    def __init__(self, open_call: Callable[[], grpc.aio.StreamStreamCall[Any, Any]], address: str) -> None:
        self._open_call = open_call
        self._address = address
        self._line: _AsyncLine | None = None
        self._closed = False

    async def submit(self, request: tpb.SubmitExecutionRequest, deadline_s: float) -> tpb.SubmitExecutionResponse:
        if self._closed:  # as grpc.aio refuses a call on a closed channel
            raise grpc.aio.UsageError("the client is closed")
        line = self._line
        if line is None or line.broken is not None:
            line = self._line = _AsyncLine(self._open_call(), self._address)
        waiter = line.send(request, deadline_s)
        try:
            async with asyncio.timeout(deadline_s):
                answer = await waiter
        except TimeoutError:
            raise no_answer(self._address, deadline_s) from None
        return response_of(answer)

    async def close(self) -> None:
        self._closed = True
        if self._line is not None:
            line, self._line = self._line, None
            await line.close()


# ---- threads -------------------------------------------------------------------------------------------


_END = object()


class _SyncLine(_Line[concurrent.futures.Future[tpb.StreamedSubmitAnswer]]):
    def __init__(self, method: grpc.StreamStreamMultiCallable[Any, Any], address: str) -> None:
        super().__init__(address)
        self._lock = threading.Lock()
        self._ending = False  # the client ended the call (closed, or dropped)
        self._unsent: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses = method(self._requests())
        self._reader = threading.Thread(target=self._read, name="taskwire-submit-stream", daemon=True)
        self._reader.start()

    def send(
        self, request: tpb.SubmitExecutionRequest, deadline_s: float
    ) -> concurrent.futures.Future[tpb.StreamedSubmitAnswer]:
        waiter: concurrent.futures.Future[tpb.StreamedSubmitAnswer] = concurrent.futures.Future()
        with self._lock:
            if self.broken is not None:
                waiter.set_exception(self.broken)
                return waiter
            submit_id = self.next_id()
            self.waiting[submit_id] = waiter
        self._unsent.put(streamed(submit_id, request, deadline_s))
        return waiter

    def _requests(self) -> Iterator[tpb.StreamSubmitsRequest]:
        """What gRPC's sending thread writes: every submit queued by then, in one message (within the
        message's limits: the submit that would pass them starts the next)."""
        carried: Any = None
        while True:
            first, carried = (carried if carried is not None else self._unsent.get()), None
            if first is _END:
                return
            submits, total = [first], _size(first)
            while len(submits) < MAX_PER_MESSAGE:
                try:
                    more = self._unsent.get_nowait()
                except queue.Empty:
                    break
                if more is _END:
                    self._unsent.put(_END)
                    break
                total += _size(more)
                if total > MESSAGE_MAX_BYTES:
                    carried = more
                    break
                submits.append(more)
            yield _message(submits)

    def _read(self) -> None:
        error: grpc.RpcError | None = None
        try:
            for response in self._responses:
                with self._lock:
                    self.answered(response)
        except grpc.RpcError as failed:
            error = detached(failed)
        with self._lock:
            self.break_off(error, closed=self._ending)
        self._unsent.put(_END)

    def end(self) -> None:
        """Send nothing more and cancel the call, without waiting: the submits in flight fail as the client's
        other calls do when it closes, and the reader thread ends by itself. It takes no lock and waits for
        nothing (a queue put and a cancel), so the finalizer of a client never closed may call it from
        whichever thread the garbage collector runs in."""
        self._ending = True
        self._unsent.put(_END)
        self._responses.cancel()

    def close(self) -> None:
        self.end()
        self._reader.join(timeout=JOIN_WAIT_S)
        # Once the reader has ended, nothing else holds the call: it is freed here, while gRPC's threads still
        # run, not by the collector at exit (see `detached`), where a process could hang.
        del self._responses


class SubmitStream:
    """The submit stream of a `Client`, shared by its threads, opened on first use and again after it broke."""

    def __init__(self, method: grpc.StreamStreamMultiCallable[Any, Any], address: str) -> None:
        self._method = method
        self._address = address
        self._lock = threading.Lock()
        self._line: _SyncLine | None = None

    def submit(self, request: tpb.SubmitExecutionRequest, deadline_s: float) -> tpb.SubmitExecutionResponse:
        with self._lock:
            line = self._line
            if line is None or line.broken is not None:
                line = self._line = _SyncLine(self._method, self._address)
        waiter = line.send(request, deadline_s)
        try:
            answer = waiter.result(timeout=deadline_s)
        except concurrent.futures.TimeoutError:
            raise no_answer(self._address, deadline_s) from None
        return response_of(answer)

    def close(self) -> None:
        with self._lock:
            if self._line is not None:
                self._line.close()
                self._line = None

    def release(self) -> None:
        """End the stream without waiting for its reader (`_SyncLine.end`), for the finalizer of a client never
        closed: it takes no lock, as nothing else can hold it then (a call in progress holds the client)."""
        line, self._line = self._line, None
        if line is not None:
            line.end()


__all__ = ["AsyncSubmitStream", "SubmitStream", "response_of"]
