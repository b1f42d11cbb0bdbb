"""The executor: runs attempts within the slots, with an abort signal and a local deadline each.

The worker and the test harness share it. It decides each attempt's outcome from what the handler did
and from why (if at all) it was asked to stop, and hands everything to an AttemptSink on the loop thread.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from taskwire.common import WORKER_SHUTDOWN_ERROR, ErrorInfo, Refusal

from ._abort import AbortController, AbortReason
from ._context import AttemptInfo, LogLine, ProgressUpdate, TaskContext, build_context
from ._handler_loop import HandlerLoop, Inbox
from ._handler_threads import HandlerThreads
from ._outcome import Cancelled, Completed, Failed, HandlerResult, Outcome, Raised
from ._process import ChildLimits, ChildProcesses, ProcessRunner, get_mp_context, whole_number
from ._registry import HandlerLookup, RegisteredHandler
from ._runners import AsyncRunner, AttemptRunner, ThreadRunner

if TYPE_CHECKING:
    from ._metrics import WorkerMetrics  # prometheus_client: loaded only when metrics are served

_log = logging.getLogger("taskwire.worker.executor")


class Isolation(enum.Enum):
    """Where handlers run."""

    #: Async handlers as asyncio tasks on the worker's loop, sync handlers in threads.
    THREAD = "thread"
    #: Every attempt in a child process, terminated if it ignores its abort signal.
    PROCESS = "process"


@dataclass(frozen=True, slots=True, order=True)
class AttemptKey:
    """One attempt of one task run: what every report names."""

    task_run_id: str
    attempt: int

    def __str__(self) -> str:
        return f"{self.task_run_id}#{self.attempt}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptSpec:
    """An attempt to run: its data, its time limit, and when it was received (``loop.time()``)."""

    info: AttemptInfo
    timeout_s: float | None = None
    received_at: float | None = None

    @property
    def key(self) -> AttemptKey:
        return AttemptKey(self.info.task_run_id, self.info.attempt)


class SubmitResult(enum.Enum):
    """What :meth:`Executor.submit` did with an attempt."""

    #: It runs now.
    ACCEPTED = "accepted"
    #: The same attempt is already running (and will report); nothing changed.
    DUPLICATE = "duplicate"
    #: The same attempt is still stopping here after the server fenced it (LEASE_LOST, or rejected at a
    #: reconnect); this copy starts as soon as that one has stopped, whose outcome is never reported.
    QUEUED = "queued"
    #: It could not run (no free slot, unknown handler, draining, its task run already running);
    #: a Failed outcome has been reported for it.
    REJECTED = "rejected"


class AttemptSink(Protocol):
    """Receives every attempt's events, on the executor's event loop thread, in order."""

    def attempt_started(self, key: AttemptKey) -> None: ...

    def attempt_progress(self, key: AttemptKey, update: ProgressUpdate) -> None: ...

    def attempt_log(self, key: AttemptKey, line: LogLine) -> None: ...

    def attempt_finished(self, key: AttemptKey, outcome: Outcome) -> None: ...


class _StopCause(enum.Enum):
    """Who asked a handler to stop; decides the outcome whatever the handler then did."""

    CANCEL = "cancel"  # The server (or a harness user) cancelled it.
    DEADLINE = "deadline"  # The worker's local copy of the timeout passed.
    SHUTDOWN = "shutdown"  # The worker is shutting down.


@dataclass(eq=False, kw_only=True)
class _Attempt:
    spec: AttemptSpec
    registered: RegisteredHandler
    controller: AbortController = field(default_factory=AbortController)
    runner: AttemptRunner | None = None
    task: asyncio.Task[None] | None = None
    cause: _StopCause | None = None
    # LEASE_LOST may follow another abort; it still means "report nothing".
    silenced: bool = False
    finished: bool = False
    aborted_at: float | None = None  # loop.time() when its abort signal fired
    began: float = field(default_factory=time.monotonic)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def key(self) -> AttemptKey:
        return self.spec.key


class _AttemptEvents:
    """An attempt's events, moved onto the loop thread and dropped once the attempt has finished."""

    def __init__(self, *, executor: Executor, attempt: _Attempt, inbox: Inbox) -> None:
        self._executor = executor
        self._attempt = attempt
        self._inbox = inbox
        self._loop_thread = threading.get_ident()

    def started(self) -> None:
        self._post(self._executor._deliver_started, self._attempt)

    def progress(self, update: ProgressUpdate) -> None:
        self._post(self._executor._deliver_progress, self._attempt, update)

    def log(self, line: LogLine) -> None:
        self._post(self._executor._deliver_log, self._attempt, line)

    def _post(self, deliver: Callable[..., None], *args: object) -> None:
        if threading.get_ident() == self._loop_thread:
            deliver(*args)
            return
        self._inbox.post(deliver, *args)


def _check_options(
    slots: object,
    isolation: object,
    stop_grace_s: object,
    kill_grace_s: object,
    mp_start_method: object,
    child_limits: object,
) -> int:
    """A TypeError or ValueError naming the option given a value it cannot take (before anything starts); the
    slots, as an int."""
    count = whole_number("slots", slots)
    if count < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    if not isinstance(isolation, Isolation):
        choices = ", ".join(f"Isolation.{one.name}" for one in Isolation)
        raise TypeError(f"isolation must be one of {choices}, got {type(isolation).__name__} {isolation!r:.100}")
    for name, value in (("stop_grace_s", stop_grace_s), ("kill_grace_s", kill_grace_s)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r:.100}")
        if not value >= 0:  # NaN too; inf waits for ever, as `--stop-grace inf` asks
            raise ValueError(f"{name} must be zero or more seconds, got {value}")
    if not isinstance(mp_start_method, str):
        raise TypeError(f"mp_start_method must be a str, got {type(mp_start_method).__name__} {mp_start_method!r:.100}")
    if child_limits is not None and not isinstance(child_limits, ChildLimits):
        raise TypeError(f"child_limits must be a ChildLimits, got {type(child_limits).__name__} {child_limits!r:.100}")
    return count


class Executor:
    """Runs attempts: never more than ``slots`` at once, never one task run twice at once.

    Call its methods on the event loop that runs the attempts. ``stop_grace_s`` is how long a handler
    may take to stop after its abort signal fires before the executor stops it by force (cancelling an
    async handler's task, killing a child process; the processes its handler started get ``kill_grace_s``
    to end on a SIGTERM before they are killed too).
    """

    def __init__(
        self,
        *,
        registry: HandlerLookup,
        sink: AttemptSink,
        slots: int,
        isolation: Isolation = Isolation.THREAD,
        stop_grace_s: float = 2.0,
        kill_grace_s: float = 1.0,
        handler_log_level: int = logging.DEBUG,
        handler_logger: logging.Logger | None = None,
        mp_start_method: str = "spawn",
        child_limits: ChildLimits | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        slots = _check_options(slots, isolation, stop_grace_s, kill_grace_s, mp_start_method, child_limits)
        if child_limits is not None and child_limits.min_children > slots:
            raise ValueError(f"min_children ({child_limits.min_children}) must be at most slots ({slots})")
        self._registry = registry
        self._sink = sink
        self._slots = slots
        self._isolation = isolation
        self._stop_grace_s = stop_grace_s
        self._kill_grace_s = kill_grace_s
        self._handler_log_level = handler_log_level
        self._handler_logger = handler_logger
        # Checked now, so that a worker with a start method its children cannot use does not start at all.
        self._mp_context = get_mp_context(mp_start_method) if isolation is Isolation.PROCESS else None
        self._child_limits = child_limits
        self._metrics = metrics
        if metrics is not None:
            metrics.slots.set(slots)
        self._attempts: dict[str, _Attempt] = {}
        # Attempts invoked again while their fenced copy still stops, by task run; each starts when it has.
        self._waiting: dict[str, AttemptSpec] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        self._closed = False
        self._peak_in_flight = 0
        # Made on first use: the loop async handlers run on, and the inbox of this loop they report through.
        self._handler_loop: HandlerLoop | None = None
        self._inbox: Inbox | None = None
        # The threads sync handlers run in, made on first use too.
        self._handler_threads: HandlerThreads | None = None
        # And the child processes that run attempts under process isolation.
        self._children: ChildProcesses | None = None

    # -- state -----------------------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def in_flight(self) -> int:
        """Attempts whose handler has not stopped yet (aborted ones included)."""
        return len(self._attempts)

    @property
    def peak_in_flight(self) -> int:
        """The most attempts ever in flight at once."""
        return self._peak_in_flight

    @property
    def accepting(self) -> bool:
        return self._accepting

    def running(self) -> list[AttemptKey]:
        """Attempts the server should hear about: running or stopping (not those whose lease was lost),
        and those waiting to start behind a fenced copy of themselves."""
        live = {a.key for a in self._attempts.values() if not a.silenced}
        return sorted(live | {spec.key for spec in self._waiting.values()})

    def is_running(self, key: AttemptKey) -> bool:
        attempt = self._attempts.get(key.task_run_id)
        return attempt is not None and attempt.key == key

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no attempt is in flight; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- commands --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start what is kept ready before the first attempt: under process isolation, the child processes
        of ``child_limits.min_children``. Call on the event loop the attempts will run on. Idempotent."""
        if self._isolation is Isolation.PROCESS and not self._closed:
            self._child_processes().start()

    def submit(self, spec: AttemptSpec) -> SubmitResult:
        """Start an attempt, or report why it cannot start (see :class:`SubmitResult`)."""
        loop = asyncio.get_running_loop()
        key = spec.key
        current = self._attempts.get(key.task_run_id)
        if current is not None and current.key == key and (self._accepting or not current.silenced):
            if current.silenced and key.task_run_id not in self._waiting:
                # The server fenced this copy, then handed the same attempt out again (after a crash, before
                # the dispatch was stored): it is new work, and it starts once the old copy has stopped.
                _log.info("attempt %s invoked again while its fenced copy stops; it starts when that has", key)
                self._waiting[key.task_run_id] = spec
                return SubmitResult.QUEUED
            # Running (or already waiting) and not fenced: its report is on its way.
            _log.warning("ignoring a second invocation of attempt %s, which is running here", key)
            return SubmitResult.DUPLICATE
        registered = self._registry.get(spec.info.handler)
        rejection = self._rejection(spec, current, registered)
        if rejection is not None:
            _log.warning("rejected attempt %s (%s): %s", key, rejection.type, rejection.message)
            self._sink.attempt_finished(key, Failed(error=rejection))
            return SubmitResult.REJECTED
        assert registered is not None

        attempt = _Attempt(spec=spec, registered=registered)
        attempt.runner = self._make_runner(attempt, loop)
        self._attempts[key.task_run_id] = attempt
        if self._metrics is not None:
            self._metrics.in_use.set(len(self._attempts))
        self._idle.clear()
        self._peak_in_flight = max(self._peak_in_flight, len(self._attempts))
        if spec.timeout_s is not None:
            start = spec.received_at if spec.received_at is not None else loop.time()
            attempt.timers.append(loop.call_at(start + spec.timeout_s, self._on_deadline, attempt))
        attempt.task = loop.create_task(self._run(attempt), name=f"taskwire-attempt-{key}")
        return SubmitResult.ACCEPTED

    def abort(self, key: AttemptKey, reason: AbortReason, message: str = "") -> bool:
        """Fire an attempt's abort signal: SHUTDOWN ends it as a WorkerShutdown failure, any other reason
        as Cancelled (LEASE_LOST: silently). False when that attempt is not running."""
        waiting = self._waiting.get(key.task_run_id)
        if waiting is not None and waiting.key == key:
            del self._waiting[key.task_run_id]
            if reason is not AbortReason.LEASE_LOST:
                outcome = _shutdown_failure() if reason is AbortReason.SHUTDOWN else Cancelled(reason=reason)
                self._sink.attempt_finished(key, outcome)
            return True
        attempt = self._attempts.get(key.task_run_id)
        if attempt is None or attempt.key != key:
            return False
        cause = _StopCause.SHUTDOWN if reason is AbortReason.SHUTDOWN else _StopCause.CANCEL
        self._abort(attempt, cause, reason, message)
        return True

    def stop_accepting(self) -> None:
        """Reject every attempt submitted from now on (WorkerDraining); start no more child processes to keep
        ready."""
        self._accepting = False
        if self._children is not None:
            self._children.drain()

    async def stop_all(self, *, timeout_s: float | None = None) -> None:
        """Stop accepting, abort every attempt (SHUTDOWN) and wait for them to stop.

        After ``timeout_s`` (default: the stop and kill graces plus a second) attempts whose handler
        still runs — a sync handler ignoring its signal cannot be stopped — are reported as WorkerShutdown
        failures anyway and forgotten.
        """
        self.stop_accepting()
        for spec in list(self._waiting.values()):
            self.abort(spec.key, AbortReason.SHUTDOWN)
        for attempt in list(self._attempts.values()):
            self._abort(attempt, _StopCause.SHUTDOWN, AbortReason.SHUTDOWN, "the worker is shutting down")
        limit_s = timeout_s if timeout_s is not None else self._stop_grace_s + self._kill_grace_s + 1.0
        if await self.wait_idle(limit_s):
            return
        for attempt in list(self._attempts.values()):
            ignored = self._ignored(attempt)
            _log.warning("%s; reporting it and leaving it behind", ignored)
            self._finish(attempt, Raised(ErrorInfo(type="HandlerDidNotStop", message=ignored)))
            if attempt.task is not None:
                attempt.task.cancel()

    async def close(self) -> None:
        """Abort whatever still runs and wait for it (see :meth:`stop_all`). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.stop_all()
        if self._handler_loop is not None:
            self._handler_loop.close()
        if self._handler_threads is not None:
            self._handler_threads.close()
        if self._children is not None:
            self._children.close()
            await asyncio.to_thread(self._children.wait_closed, self._kill_grace_s + 1.0)

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------------

    def _child_processes(self) -> ChildProcesses:
        if self._children is None:
            assert self._mp_context is not None
            metrics = self._metrics
            self._children = ChildProcesses(
                self._mp_context,
                limits=self._child_limits,
                on_start=metrics.handler_process_started if metrics else None,
                on_end=metrics.handler_process_ended if metrics else None,
            )
            if not self._accepting:
                self._children.drain()
        return self._children

    def _rejection(
        self, spec: AttemptSpec, current: _Attempt | None, registered: RegisteredHandler | None
    ) -> ErrorInfo | None:
        """Why an attempt cannot start now, or None when it can."""
        if not self._accepting:
            return ErrorInfo(type=Refusal.WORKER_DRAINING, message="the worker is shutting down and takes no new work")
        if current is not None:
            return ErrorInfo(
                type=Refusal.ATTEMPT_ALREADY_RUNNING,
                message=f"attempt {current.key.attempt} of task run {current.key.task_run_id} is still running here",
            )
        if len(self._attempts) >= self._slots:
            return ErrorInfo(type=Refusal.SLOTS_EXHAUSTED, message=f"all {self._slots} slots of this worker are busy")
        if registered is None:
            return ErrorInfo(type="HandlerNotFound", message=f"this worker has no handler named {spec.info.handler!r}")
        return None

    def _make_runner(self, attempt: _Attempt, loop: asyncio.AbstractEventLoop) -> AttemptRunner:
        if self._inbox is None:
            self._inbox = Inbox(loop)
        events = _AttemptEvents(executor=self, attempt=attempt, inbox=self._inbox)
        registered = attempt.registered
        name = f"taskwire-{registered.name}-{attempt.key}"
        if self._isolation is Isolation.PROCESS:
            return ProcessRunner(
                children=self._child_processes(),
                fn=registered.fn,
                is_async=registered.is_async,
                info=attempt.spec.info,
                events=events,
                log_level=self._handler_log_level,
                kill_grace_s=self._kill_grace_s,
            )
        build: Callable[[], TaskContext] = partial(
            build_context,
            info=attempt.spec.info,
            abort=attempt.controller.signal,
            events=events,
            log_level=self._handler_log_level,
        )
        if registered.is_async:
            if self._handler_loop is None:
                self._handler_loop = HandlerLoop(on_stall=self._metrics.loop_blocked if self._metrics else None)
            return AsyncRunner(
                handler_loop=self._handler_loop,
                results=self._inbox,
                handler=registered.name,
                fn=registered.fn,
                build_context=build,
                events=events,
                name=name,
            )
        if self._handler_threads is None:
            self._handler_threads = HandlerThreads()
        return ThreadRunner(
            threads=self._handler_threads, fn=registered.fn, build_context=build, events=events, name=name
        )

    async def _run(self, attempt: _Attempt) -> None:
        assert attempt.runner is not None
        try:
            result = await attempt.runner.run()
        except asyncio.CancelledError:
            if not attempt.finished:
                # The loop is being torn down under a running attempt: it ends as a shutdown.
                attempt.cause = attempt.cause or _StopCause.SHUTDOWN
                self._finish(attempt, Raised(ErrorInfo(type="CancelledError", message="")))
            raise
        except Exception as exc:
            # The runner itself failed (no thread to run the handler in, say): the attempt ends with that
            # error rather than holding its slot for ever.
            _log.error("attempt %s could not be run: %s", attempt.key, exc, exc_info=exc)
            result = Raised(ErrorInfo.from_exception(exc))
        self._finish(attempt, result)

    def _abort(self, attempt: _Attempt, cause: _StopCause, reason: AbortReason, message: str) -> None:
        if attempt.finished:
            return
        if reason is AbortReason.LEASE_LOST:
            attempt.silenced = True
        if attempt.cause is not None:
            return
        attempt.cause = cause
        loop = asyncio.get_running_loop()
        attempt.aborted_at = loop.time()
        attempt.controller.abort(reason, message)
        assert attempt.runner is not None
        attempt.runner.on_abort(reason, message)
        attempt.timers.append(loop.call_later(self._stop_grace_s, self._hard_stop, attempt))

    def _on_deadline(self, attempt: _Attempt) -> None:
        timeout_s = attempt.spec.timeout_s
        self._abort(attempt, _StopCause.DEADLINE, AbortReason.TIMED_OUT, f"the timeout of {timeout_s:g}s passed")

    def _hard_stop(self, attempt: _Attempt) -> None:
        if attempt.finished or attempt.runner is None:
            return
        _log.warning("%s; stopping it by force", self._ignored(attempt))
        attempt.runner.hard_stop()

    def _ignored(self, attempt: _Attempt) -> str:
        """Says that the attempt's handler has ignored its abort signal, and for how long."""
        now = asyncio.get_running_loop().time()
        ignored_s = now - (attempt.aborted_at if attempt.aborted_at is not None else now)
        name = attempt.registered.name
        return f"handler {name!r} of attempt {attempt.key} ignored its abort signal for {ignored_s:.1f} s"

    def _finish(self, attempt: _Attempt, result: HandlerResult) -> None:
        if attempt.finished:
            return
        attempt.finished = True
        for timer in attempt.timers:
            timer.cancel()
        del self._attempts[attempt.key.task_run_id]
        outcome = self._outcome(attempt, result)
        if self._metrics is not None:
            self._metrics.in_use.set(len(self._attempts))
            kind = {Completed: "succeeded", Failed: "failed"}.get(type(outcome), "cancelled")
            self._metrics.attempt_ended(attempt.registered.name, kind, time.monotonic() - attempt.began)
        # A completion is routine (DEBUG, and cheap when off); failures and aborts are worth a line.
        level = logging.DEBUG if isinstance(outcome, Completed) else logging.INFO
        if self._handler_logger is not None and self._handler_logger.isEnabledFor(level):
            self._handler_logger.log(
                level, "attempt %s (%s) ended: %s", attempt.key, attempt.registered.name, _describe(outcome)
            )
        self._sink.attempt_finished(attempt.key, outcome)
        waiting = self._waiting.pop(attempt.key.task_run_id, None)
        if waiting is not None:
            self.submit(waiting)
        if not self._attempts:
            self._idle.set()

    def _outcome(self, attempt: _Attempt, result: HandlerResult) -> Outcome:
        if attempt.silenced:
            return Cancelled(reason=AbortReason.LEASE_LOST, message=attempt.controller.signal.message)
        if attempt.cause is None:
            if isinstance(result, Raised):
                return Failed(error=result.error)
            return Completed(output=result.output)
        if attempt.cause is _StopCause.DEADLINE:
            message = f"the handler did not finish within its timeout of {attempt.spec.timeout_s:g}s"
            if attempt.aborted_at is not None:
                ignored_s = asyncio.get_running_loop().time() - attempt.aborted_at
                if ignored_s >= self._stop_grace_s:
                    message += f"; it ignored its abort signal for {ignored_s:.1f} s"
            return Failed(
                error=ErrorInfo(
                    type="TimeoutError",
                    message=message,
                    retryable=True,
                ),
                timed_out=True,
            )
        if attempt.cause is _StopCause.SHUTDOWN:
            return _shutdown_failure()
        signal = attempt.controller.signal
        return Cancelled(reason=signal.reason or AbortReason.CANCELLED, message=signal.message)

    # Event delivery, always on the loop thread.

    def _deliver_started(self, attempt: _Attempt) -> None:
        if not attempt.finished and not attempt.silenced:
            self._sink.attempt_started(attempt.key)

    def _deliver_progress(self, attempt: _Attempt, update: ProgressUpdate) -> None:
        if not attempt.finished and not attempt.silenced:
            self._sink.attempt_progress(attempt.key, update)

    def _deliver_log(self, attempt: _Attempt, line: LogLine) -> None:
        if attempt.finished:
            return
        if self._handler_logger is not None:
            self._handler_logger.log(line.level, "[%s %s] %s", attempt.registered.name, attempt.key, line.text)
        if not attempt.silenced:
            self._sink.attempt_log(attempt.key, line)


def _shutdown_failure() -> Failed:
    return Failed(
        error=ErrorInfo(
            type=WORKER_SHUTDOWN_ERROR, message="the worker shut down before the handler finished", retryable=True
        )
    )


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, Completed):
        return "completed"
    if isinstance(outcome, Failed):
        return f"failed ({outcome.error.type}{', timed out' if outcome.timed_out else ''})"
    return f"cancelled ({outcome.reason.value})"
