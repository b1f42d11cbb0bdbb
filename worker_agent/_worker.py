"""The worker: one Connect stream to the server, kept alive across failures, feeding the executor.

A session is: hello → Welcome → (invocations, cancels, drains in; reports and heartbeats out) until
the stream ends. Between sessions attempts keep running and their reports wait in the outbox; the next
hello lists them so the server can adopt (keep) or reject (fence) each. A server that stops says so
(GoingAway): the worker hangs up, keeps its work, and reconnects to the next server (`_connection`: the
addresses, the channel and the backoff), which it hands its running attempts exactly as across a restart.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from taskwire.common.aio_status import FirstStatus
from taskwire.common.tls import TlsFiles
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.v1 import worker_service_pb2_grpc

from . import _convert
from ._abort import AbortReason
from ._connection import ConnectFailed, ServerGoingAway, ServerLink, SessionEnded
from ._drain import DrainClock
from ._errors import ConnectionLostError, WorkerRefused
from ._executor import AttemptKey, Executor, Isolation
from ._limits import WireLimits
from ._outbox import Outbox
from ._outcome import Cancelled
from ._process import ChildLimits
from ._registry import HandlerRegistry
from ._reports import ReportSink
from ._stream import SessionInfo, SessionStream, default_worker_name, describe, hello_message

if TYPE_CHECKING:
    from ._metrics import WorkerMetrics  # prometheus_client: loaded only when metrics are served

_log = logging.getLogger("taskwire.worker")

#: Heartbeat interval used when a Welcome leaves it unset.
DEFAULT_HEARTBEAT_INTERVAL_S = 5.0
#: A session shorter than this counts as a failed connection attempt, so a server that welcomes and
#: then drops the stream at once is retried with backoff instead of in a tight loop.
_HEALTHY_SESSION_S = 1.0


class Worker:
    """A taskwire worker agent.

    ``async with Worker(server=..., registry=...) as worker: await worker.wait_closed()`` runs it until
    it is shut down: :meth:`drain` (or a server Drain) stops taking work, lets running attempts finish
    for a grace period while heartbeats keep flowing, aborts the rest, flushes their reports and closes
    the stream. :meth:`close` is the same with no grace.

    ``server`` is one address, or several (a list, or one string separated by commas): each reconnect tries
    the next one, round the list. For ``keepalive_s`` and ``tls`` see `taskwire.worker._connection`.
    """

    def __init__(
        self,
        *,
        server: str | Sequence[str],
        registry: HandlerRegistry,
        slots: int = 4,
        name: str | None = None,
        instance_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        isolation: Isolation = Isolation.THREAD,
        drain_timeout_s: float = 30.0,
        stop_grace_s: float = 2.0,
        kill_grace_s: float = 1.0,
        max_reconnect_attempts: int | None = None,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        welcome_timeout_s: float = 30.0,
        flush_timeout_s: float = 5.0,
        keepalive_s: float = 5.0,
        keepalive_timeout_s: float = 5.0,
        handler_log_level: int = logging.INFO,
        channel_options: Sequence[tuple[str, Any]] = (),
        tls: TlsFiles | None = None,
        mp_start_method: str = "spawn",
        child_limits: ChildLimits | None = None,
        token: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not registry.names():
            raise ValueError("a worker needs at least one handler")
        if max_reconnect_attempts is not None and max_reconnect_attempts < 1:
            raise ValueError(f"max_reconnect_attempts must be at least 1, got {max_reconnect_attempts}")
        self._link = ServerLink(
            server,
            tls=tls,
            token=token,
            keepalive_s=keepalive_s,
            keepalive_timeout_s=keepalive_timeout_s,
            reconnect_initial_s=reconnect_initial_s,
            reconnect_max_s=reconnect_max_s,
            channel_options=channel_options,
        )
        self._registry = registry
        self._slots = slots
        self._name = name or default_worker_name()
        self._instance_id = instance_id or str(uuid.uuid4())
        self._labels = dict(labels or {})
        self._drain_timeout_s = drain_timeout_s
        self._max_reconnect_attempts = max_reconnect_attempts
        self._welcome_timeout_s = welcome_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._outbox = Outbox()
        self._reports = ReportSink(self._outbox)
        self._executor = Executor(
            registry=registry,
            sink=self._reports,
            slots=slots,
            isolation=isolation,
            stop_grace_s=stop_grace_s,
            kill_grace_s=kill_grace_s,
            handler_log_level=handler_log_level,
            handler_logger=logging.getLogger("taskwire.worker.handlers"),
            mp_start_method=mp_start_method,
            child_limits=child_limits,
            metrics=metrics,
        )  # checks the options it shares with the worker first
        self._drain = DrainClock(stop_budget_s=stop_grace_s + kill_grace_s + 1.0)
        self._metrics = metrics
        self._session: SessionInfo | None = None
        # Set by a GoingAway: the server is stopping, this session ends.
        self._server_leaving = asyncio.Event()
        self._connected = asyncio.Event()
        self._started = False
        self._main_task: asyncio.Task[None] | None = None
        self._connection_task: asyncio.Task[None] | None = None
        self._draining = False
        self._drain_reason = ""
        self._shutdown_requested = asyncio.Event()
        self._deadline_changed = asyncio.Event()
        self._stop_connection = asyncio.Event()
        self._closed = asyncio.Event()
        self._failure: BaseException | None = None

    # -- what it is --------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def instance_id(self) -> str:
        """Stable for the life of this Worker, across reconnects."""
        return self._instance_id

    @property
    def session(self) -> SessionInfo | None:
        """The current session, or None while disconnected."""
        return self._session

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def executor(self) -> Executor:
        return self._executor

    @property
    def outbox_size(self) -> int:
        """Messages waiting to be written (reports kept across a disconnect included)."""
        return len(self._outbox)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and serving in the background. Idempotent."""
        if self._started:
            return
        self._started = True
        self._executor.start()
        self._main_task = asyncio.create_task(self._main(), name="taskwire-worker")

    async def run(self) -> None:
        """Serve until shut down; raises ConnectionLostError if it gave up reconnecting."""
        await self.start()
        await self.wait_closed()

    async def wait_connected(self, timeout_s: float | None = None) -> SessionInfo:
        """Wait until a session is established (returns at once when one is)."""
        async with asyncio.timeout(timeout_s):
            while True:
                await self._connected.wait()
                if self._session is not None:
                    return self._session

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no attempt is running; False if ``timeout_s`` passed first."""
        return await self._executor.wait_idle(timeout_s)

    async def wait_closed(self) -> None:
        """Wait until the worker has shut down; raises ConnectionLostError if it gave up reconnecting."""
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    def drain(self, grace_s: float | None = None, *, reason: str = "", reports_due_s: float | None = None) -> None:
        """Begin a graceful shutdown: no new work; running attempts get ``grace_s`` (default: the drain
        timeout) to finish, then are aborted. Calling it again can only shorten the grace; ``grace_s=0``
        aborts everything now. Returns at once; see :meth:`wait_closed`.

        ``reports_due_s`` (a server Drain's grace) is when the reports must have reached the server: the
        attempts are then aborted early enough that their handlers can stop and be reported by then.
        """
        now = asyncio.get_running_loop().time()
        grace = self._drain.tighten(now, self._drain_timeout_s if grace_s is None else max(0.0, grace_s), reports_due_s)
        if grace is None:
            return
        self._deadline_changed.set()
        if not self._draining:
            self._draining = True
            self._drain_reason = reason or "the worker is shutting down"
            self._executor.stop_accepting()
            if self._session is not None:
                self._outbox.put(_draining(self._drain_reason), session_only=True, front=True)
            _log.info("draining: no new work; running attempts have %gs to finish", grace)
        elif grace == 0:
            _log.info("stopping now: aborting running attempts")
        self._shutdown_requested.set()

    async def shutdown(self, *, grace_s: float | None = None) -> None:
        """Drain (see :meth:`drain`) and wait until closed. Idempotent; never raises ConnectionLostError."""
        if not self._started:
            await self._close_unstarted()
            return
        self.drain(grace_s)
        await self._closed.wait()

    async def close(self) -> None:
        """Shut down without grace: abort running attempts, report them, close the stream. Idempotent."""
        await self.shutdown(grace_s=0)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _close_unstarted(self) -> None:
        self._started = True
        await self._executor.close()
        self._closed.set()

    async def _main(self) -> None:
        connection = asyncio.create_task(
            self._link.keep_connected(
                self._run_session, stop=self._stop_connection, max_attempts=self._max_reconnect_attempts
            ),
            name="taskwire-worker-connection",
        )
        self._connection_task = connection
        connection.add_done_callback(self._on_connection_ended)
        try:
            await self._shutdown_requested.wait()
            await self._shutdown_sequence()
        finally:
            self._closed.set()

    def _on_connection_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None or self._stop_connection.is_set():
            return
        if not isinstance(failure, ConnectionLostError):
            _log.error("worker connection crashed", exc_info=failure)
        self._failure = failure
        self.drain(grace_s=0, reason="the worker lost its connection")

    async def _shutdown_sequence(self) -> None:
        loop = asyncio.get_running_loop()
        # Drain within the grace; heartbeats keep flowing on the session meanwhile.
        while self._executor.in_flight and self._drain.deadline is not None:
            remaining = self._drain.deadline - loop.time()
            if remaining <= 0:
                break
            self._deadline_changed.clear()
            idle = asyncio.ensure_future(self._executor.wait_idle())
            changed = asyncio.ensure_future(self._deadline_changed.wait())
            await asyncio.wait({idle, changed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            changed.cancel()
        if self._executor.in_flight:
            _log.info("aborting %d running attempt(s)", self._executor.in_flight)
        await self._executor.stop_all(timeout_s=self._drain.stop_timeout_s(loop.time()))
        # Flush reports while the connection loop still runs (and still reconnects, if it must).
        connection = self._connection_task
        if connection is not None and not connection.done():
            if not await self._outbox.wait_flushed(self._flush_timeout_s):
                _log.warning("closing with %d message(s) unsent", len(self._outbox))
            self._stop_connection.set()
            if self._session is None:
                # Between sessions (backing off, or waiting for a Welcome) there is nothing to close cleanly.
                connection.cancel()
            # wait() neither raises the task's exception nor cancels it on timeout.
            done, _ = await asyncio.wait({connection}, timeout=self._flush_timeout_s)
            if not done:
                connection.cancel()
                await asyncio.wait({connection})
        await self._executor.close()
        _log.info("worker stopped")

    # -- connection --------------------------------------------------------------------------------------

    async def _run_session(self) -> None:
        if self._stop_connection.is_set():
            return
        self._server_leaving.clear()
        loop = asyncio.get_running_loop()
        channel = self._link.open_channel()
        call: Any = None
        tasks: list[asyncio.Task[Any]] = []
        welcomed_at: float | None = None
        try:
            call = worker_service_pb2_grpc.WorkerServiceStub(channel).Connect()
            ended_with = FirstStatus(call)  # the server's status, should a write fail as it ends the call
            reported = set(self._executor.running()) | self._outbox.pending_attempts()
            try:
                hello = hello_message(
                    name=self._name,
                    instance_id=self._instance_id,
                    handlers=self._registry.names(),
                    slots=self._slots,
                    labels=self._labels,
                    running=reported,
                )
                await call.write(wpb.ConnectRequest(messages=[hello]))
                async with asyncio.timeout(self._welcome_timeout_s):
                    frame = await call.read()
            except (grpc.RpcError, asyncio.InvalidStateError, TimeoutError) as exc:
                status = ended_with.of(exc)
                if isinstance(status, grpc.aio.AioRpcError) and status.code() is grpc.StatusCode.INVALID_ARGUMENT:
                    refusal = f"the server at {self._link.address} refused this worker: {status.details()}"
                    raise WorkerRefused(refusal) from None
                raise ConnectFailed(describe(status)) from exc
            if frame is grpc.aio.EOF or not frame.messages or not frame.messages[0].HasField("welcome"):
                raise ConnectFailed("the server did not answer the hello with a Welcome")
            welcomed_at = loop.time()
            self._accept_welcome(frame.messages[0].welcome, reported)
            for message in frame.messages[1:]:
                self._handle(message)
            assert self._session is not None
            stream = SessionStream(
                call=call,
                outbox=self._outbox,
                running=self._executor.running,
                limits=lambda: self._reports.limits,
                handle=self._handle,
                flush_timeout_s=self._flush_timeout_s,
            )
            tasks = [
                asyncio.create_task(stream.write_loop(), name="taskwire-worker-writer"),
                asyncio.create_task(stream.read_loop(), name="taskwire-worker-reader"),
                asyncio.create_task(stream.heartbeat_loop(self._session.heartbeat_interval_s)),
                asyncio.create_task(self._stop_connection.wait()),
                asyncio.create_task(self._server_leaving.wait()),
            ]
            writer, reader, _, stop, leaving = tasks
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stop in done or leaving in done:
                # Last words, then a half-close: the server reads everything written before it stops.
                await stream.close(writer, reader)
                if stop in done:
                    return
                raise ServerGoingAway("the server is going away")
            failure = next((t.exception() for t in done if not t.cancelled() and t.exception() is not None), None)
            reason = describe(ended_with.of(failure)) if failure is not None else "the server closed the stream"
            if loop.time() - welcomed_at < _HEALTHY_SESSION_S:
                raise ConnectFailed(reason)
            _log.warning("stream to %s ended (%s); reconnecting", self._link.address, reason)
            raise SessionEnded(reason)
        finally:
            try:
                for task in tasks:
                    task.cancel()
                if tasks:
                    # The writer puts back what it was writing; wait() leaves the tasks' errors alone ...
                    await asyncio.wait(tasks)
                for task in tasks:
                    if not task.cancelled():
                        task.exception()  # ... and they are read here, so none is reported as never retrieved.
            finally:
                if welcomed_at is not None:
                    _log.info("disconnected from %s", self._link.address)
                    if self._metrics is not None:
                        self._metrics.connected.set(0)
                self._session = None
                self._connected.clear()
                self._outbox.end_session()
                if call is not None:
                    call.cancel()
                await channel.close()

    def _accept_welcome(self, welcome: wpb.Welcome, reported: set[AttemptKey]) -> None:
        heartbeat_s = _convert.seconds(welcome.heartbeat_interval) or DEFAULT_HEARTBEAT_INTERVAL_S
        self._session = SessionInfo(
            session_id=welcome.session_id,
            heartbeat_interval_s=heartbeat_s,
            lease_timeout_s=_convert.seconds(welcome.lease_timeout),
        )
        self._link.last_lease_s = self._session.lease_timeout_s or None
        self._link.reconnect_within_s = None
        self._reports.limits = WireLimits.from_welcome(welcome)
        adopted = {_convert.key(r) for r in welcome.adopted_attempts}
        rejected = {_convert.key(r) for r in welcome.rejected_attempts}
        for attempt in sorted(reported - adopted):
            if attempt not in rejected:
                # The contract says every reported attempt is adopted or rejected; keeping an unanswered
                # one running could run its task run twice at once, so it is treated as rejected.
                _log.warning("the server did not answer for attempt %s; treating it as rejected", attempt)
            self._silence(attempt, "rejected by the server on reconnect")
        if self._draining:
            self._outbox.put(_draining(self._drain_reason), session_only=True, front=True)
        if self._metrics is not None:
            self._metrics.connected.set(1)
        _log.info(
            "connected to %s: session %s (heartbeat every %gs; %d attempt(s) adopted, %d rejected)",
            self._link.address,
            self._session.session_id,
            heartbeat_s,
            len(adopted & reported),
            len(reported - adopted),
        )
        self._connected.set()

    def _handle(self, message: wpb.ServerMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "invocation":
            loop = asyncio.get_running_loop()
            session_id = self._session.session_id if self._session is not None else ""
            self._executor.submit(_convert.spec(message.invocation, received_at=loop.time(), session_id=session_id))
        elif kind == "cancel":
            self._on_cancel(message.cancel)
        elif kind == "drain":
            drain = message.drain
            grace_s = _convert.seconds(drain.grace) if drain.HasField("grace") else None
            _log.info("the server asked this worker to drain (%s)", drain.reason or "no reason given")
            self.drain(grace_s, reason=drain.reason or "the server asked this worker to drain", reports_due_s=grace_s)
        elif kind == "going_away":
            self._on_going_away(message.going_away)
        elif kind == "welcome":
            _log.warning("ignoring a second Welcome on the same stream")
        else:
            _log.warning("ignoring a server message this worker does not understand (%s)", kind)

    def _on_going_away(self, going_away: wpb.GoingAway) -> None:
        """The server is stopping: hang up and come back to the next one. Unlike a Drain, the work goes on."""
        if going_away.HasField("reconnect_within"):
            self._link.reconnect_within_s = _convert.seconds(going_away.reconnect_within) or None
        _log.info(
            "the server is going away (%s); %d attempt(s) keep running for the next one",
            going_away.reason or "no reason given",
            self._executor.in_flight,
        )
        self._server_leaving.set()

    def _on_cancel(self, cancel: wpb.Cancel) -> None:
        attempt = _convert.key(cancel.ref)
        reason = _convert.abort_reason(cancel.reason)
        if reason is AbortReason.LEASE_LOST:
            self._silence(attempt, cancel.message or "lease lost")
            return
        if self._executor.abort(attempt, reason, cancel.message):
            return
        report = _convert.outcome(attempt, Cancelled(reason=reason))
        if report is not None and attempt not in self._outbox.pending_attempts():
            # Unknown here (already reported, or never received): it is certainly not running.
            self._outbox.put(report, attempt=attempt)

    def _silence(self, attempt: AttemptKey, message: str) -> None:
        """Abort an attempt the server no longer considers current, and say nothing more about it."""
        self._executor.abort(attempt, AbortReason.LEASE_LOST, message)
        self._outbox.drop_attempt(attempt)


def _draining(reason: str) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(draining=wpb.Draining(reason=reason))
