"""A scripted WorkerService: a real gRPC peer whose every move a check (or a test) makes.

Each Connect stream becomes a ScriptedSession. The check reads what the worker sent
(``await session.next("started")``) and answers (``session.invoke(...)``, ``session.cancel(...)``).
An unexpected message is a `Mismatch` naming what was expected and what came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta

import grpc
import grpc.aio

from taskwire.v1 import types_pb2, worker_service_pb2_grpc
from taskwire.v1 import worker_service_pb2 as wpb

Ref = tuple[str, int]

RESET = "it reset (cancelled) the stream instead"
_SETTLE_S = 0.3  # how long the server keeps a stream after the worker half-closed it, before it ends it


class Mismatch(AssertionError):
    """The worker did something else than the protocol asks: `expected`, then what it did."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}; got {got}")
        self.expected = expected
        self.got = got


def describe(message: wpb.WorkerMessage) -> str:
    """One line about a worker message, for a report."""
    text = " ".join(str(message).split())
    return text if len(text) <= 200 else text[:197] + "..."


def ref_of(message: wpb.WorkerMessage) -> Ref | None:
    """The attempt a worker message is about, if any."""
    kind = message.WhichOneof("kind")
    if kind in ("started", "progress", "log", "completed", "failed", "cancel_acknowledged"):
        ref = getattr(message, kind).ref
        return (ref.task_run_id, ref.attempt)
    return None


def running_of(message: wpb.WorkerMessage) -> set[Ref]:
    """The running attempts a hello or heartbeat lists."""
    kind = message.WhichOneof("kind")
    refs = message.hello.running_attempts if kind == "hello" else message.heartbeat.running_attempts
    return {(r.task_run_id, r.attempt) for r in refs}


def _duration(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


class ScriptedSession:
    """One Connect stream, seen from the server side."""

    def __init__(self) -> None:
        self.frames: list[wpb.ConnectRequest] = []
        self.received: list[wpb.WorkerMessage] = []
        self._unread: asyncio.Queue[wpb.WorkerMessage] = asyncio.Queue()
        self._outgoing: asyncio.Queue[list[wpb.ServerMessage] | None] = asyncio.Queue()
        #: Set when the worker's side of the stream ended: a half-close, or a reset (cancel) or break.
        self.worker_done = asyncio.Event()
        #: Set only when the worker half-closed its side (its requests ended normally), never on a reset.
        self.half_closed = asyncio.Event()
        #: How the worker's side ended other than by a half-close, once it did.
        self.ended_by: str | None = None
        #: Set when the call is over on the server: it ended the stream, or the worker cancelled the call.
        self.call_over = asyncio.Event()
        #: The worker cancelled the call (a reset), even when its requests seemed to end normally.
        self.reset = False

    async def _pump(self, requests: AsyncIterator[wpb.ConnectRequest]) -> None:
        try:
            async for frame in requests:
                self.frames.append(frame)
                for message in frame.messages:
                    self.received.append(message)
                    self._unread.put_nowait(message)
        except asyncio.CancelledError:
            self.ended_by = RESET
            raise
        except BaseException as error:
            self.ended_by = f"the stream broke ({type(error).__name__}: {error})"
            raise
        else:
            self.half_closed.set()
        finally:
            if not self.half_closed.is_set() and self.ended_by is None:
                self.ended_by = "the stream ended without a half-close"
            self.worker_done.set()
            # Like the real server: the stream ends with the worker's side. After a half-close it ends a moment
            # later: a reset can look like the end of the requests here, and the cancellation of the call that
            # follows at once (see `_reset`) tells the two apart.
            if self.half_closed.is_set():
                asyncio.get_running_loop().call_later(_SETTLE_S, self._outgoing.put_nowait, None)
            else:
                self._outgoing.put_nowait(None)

    def _reset(self) -> None:
        """The worker cancelled the call (or the server stopped): whatever the requests looked like, it was
        no half-close."""
        if not self.reset:
            self.reset = True
            self.half_closed.clear()
            self.ended_by = RESET

    # -- reading what the worker sent ---------------------------------------------------------------

    async def next(
        self, kind: str | None = None, *, skip: Iterable[str] = ("heartbeat",), timeout_s: float = 10.0
    ) -> wpb.WorkerMessage:
        """The next message whose kind is not in ``skip``; asserts it is of ``kind`` when given."""
        skipped = set(skip)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self._unread.get()
                    if message.WhichOneof("kind") not in skipped:
                        break
        except TimeoutError:
            raise Mismatch(kind or "a message", f"nothing in {timeout_s:g}s") from None
        if kind is not None and message.WhichOneof("kind") != kind:
            raise Mismatch(kind, describe(message))
        return message

    async def wait_for(
        self, predicate: Callable[[wpb.WorkerMessage], bool], *, timeout_s: float = 10.0
    ) -> wpb.WorkerMessage:
        """Read until a message satisfies ``predicate``; returns it."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self._unread.get()
                    if predicate(message):
                        return message
        except TimeoutError:
            raise Mismatch("a matching message", f"none in {timeout_s:g}s") from None

    def about(self, ref: Ref) -> list[str]:
        """Kinds of every message received about one attempt, in order."""
        return [m.WhichOneof("kind") or "" for m in self.received if ref_of(m) == ref]

    async def wait_worker_done(self, timeout_s: float = 10.0) -> None:
        """Until the worker's side of the stream ended, however it did (a half-close, a reset, a break)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.worker_done.wait()
        except TimeoutError:
            raise Mismatch("the worker's side of the stream to end", f"still open after {timeout_s:g}s") from None

    async def wait_half_closed(self, timeout_s: float = 10.0) -> None:
        """Until the worker half-closed its side of the stream (its requests ended normally); a worker that
        resets (cancels) the stream instead, or whose stream breaks, is a mismatch."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.worker_done.wait()
        except TimeoutError:
            raise Mismatch("the worker to half-close its stream", f"still open after {timeout_s:g}s") from None
        if self.half_closed.is_set():
            # The call ends a moment after the worker's side: cancelled if that side was a reset after all.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SETTLE_S + 2.0):
                    await self.call_over.wait()
        if not self.half_closed.is_set() or self.reset:
            raise Mismatch("the worker to half-close its stream", self.ended_by or "no half-close")

    # -- answering ------------------------------------------------------------------------------------

    def send(self, *messages: wpb.ServerMessage) -> None:
        """One frame with these messages."""
        self._outgoing.put_nowait(list(messages))

    def welcome(
        self,
        *,
        session_id: str | None = None,
        heartbeat_interval_s: float = 30.0,
        lease_timeout_s: float = 90.0,
        adopted: Iterable[Ref] = (),
        rejected: Iterable[Ref] = (),
        then: Iterable[wpb.ServerMessage] = (),
    ) -> str:
        welcome = wpb.Welcome(
            session_id=session_id or f"session-{uuid.uuid4().hex[:8]}",
            adopted_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in adopted],
            rejected_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in rejected],
        )
        welcome.heartbeat_interval.FromTimedelta(_duration(heartbeat_interval_s))
        welcome.lease_timeout.FromTimedelta(_duration(lease_timeout_s))
        self.send(wpb.ServerMessage(welcome=welcome), *then)
        return welcome.session_id

    def invoke(
        self,
        handler: str,
        input: object = None,
        *,
        timeout_s: float | None = None,
        upstream: dict[str, object] | None = None,
    ) -> Ref:
        message, ref = invocation(handler, input, timeout_s=timeout_s, upstream=upstream)
        self.send(message)
        return ref

    def cancel(
        self, ref: Ref, reason: wpb.CancelReason.ValueType = wpb.CANCEL_REASON_REQUESTED, message: str = ""
    ) -> None:
        cancel = wpb.Cancel(ref=wpb.AttemptRef(task_run_id=ref[0], attempt=ref[1]), reason=reason, message=message)
        self.send(wpb.ServerMessage(cancel=cancel))

    def drain(self, grace_s: float, reason: str = "maintenance") -> None:
        drain = wpb.Drain(reason=reason)
        drain.grace.FromTimedelta(_duration(grace_s))
        self.send(wpb.ServerMessage(drain=drain))

    def close(self) -> None:
        """End the stream from the server side (status OK)."""
        self._outgoing.put_nowait(None)


def _json(value: object) -> types_pb2.Payload:
    return types_pb2.Payload(data=json.dumps(value).encode(), content_type="application/json")


def invocation(
    handler: str,
    input: object = None,
    *,
    timeout_s: float | None = None,
    attempt: int = 1,
    upstream: dict[str, object] | None = None,
) -> tuple[wpb.ServerMessage, Ref]:
    task_run_id = f"run-{uuid.uuid4().hex[:8]}"
    message = wpb.Invocation(
        ref=wpb.AttemptRef(task_run_id=task_run_id, attempt=attempt),
        execution_id="exec-1",
        task_id=handler,
        handler=handler,
        input=_json(input),
        upstream_outputs={task_id: _json(output) for task_id, output in (upstream or {}).items()},
    )
    if timeout_s is not None:
        message.timeout.FromTimedelta(_duration(timeout_s))
    return wpb.ServerMessage(invocation=message), (task_run_id, attempt)


class ScriptedWorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    """Hands every Connect stream to the test as a ScriptedSession."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[ScriptedSession] = asyncio.Queue()
        self.connects = 0

    async def Connect(
        self,
        request_iterator: AsyncIterator[wpb.ConnectRequest],
        context: grpc.aio.ServicerContext[wpb.ConnectRequest, wpb.ConnectResponse],
    ) -> AsyncIterator[wpb.ConnectResponse]:
        session = ScriptedSession()
        self.connects += 1
        pump = asyncio.create_task(session._pump(request_iterator))
        self.sessions.put_nowait(session)
        try:
            while (messages := await session._outgoing.get()) is not None:
                yield wpb.ConnectResponse(messages=messages)
        except (asyncio.CancelledError, GeneratorExit):
            session._reset()  # the worker cancelled the call (or the server is stopping)
            raise
        finally:
            pump.cancel()
            session.call_over.set()


class ScriptedServer:
    """A real grpc.aio server on 127.0.0.1:<ephemeral> serving a ScriptedWorkerService."""

    def __init__(self, *, port: int = 0) -> None:
        self.service = ScriptedWorkerService()
        self._server = grpc.aio.server()
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(self.service, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(grace=None)

    async def next_session(self, timeout_s: float = 10.0) -> ScriptedSession:
        """The next stream a worker opens."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.service.sessions.get()
        except TimeoutError:
            raise Mismatch("the worker to open a stream", f"none in {timeout_s:g}s") from None

    async def connect(
        self,
        *,
        timeout_s: float = 10.0,
        session_id: str | None = None,
        heartbeat_interval_s: float = 30.0,
        adopted: Iterable[Ref] = (),
        rejected: Iterable[Ref] = (),
    ) -> tuple[ScriptedSession, wpb.WorkerHello]:
        """Accept the next stream: read its hello and answer with a Welcome."""
        session = await self.next_session(timeout_s)
        hello = (await session.next("hello", timeout_s=timeout_s)).hello
        session.welcome(
            session_id=session_id, heartbeat_interval_s=heartbeat_interval_s, adopted=adopted, rejected=rejected
        )
        return session, hello
