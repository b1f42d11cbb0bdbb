"""Process isolation: each attempt runs in a child process that the worker can terminate.

Children are kept for the next attempt (`ChildProcesses`), since starting one with ``spawn`` costs a fresh
interpreter and the imports of the handler's module. A child runs one attempt at a time. Three pipes join it
to the worker: jobs and aborts flow worker → child, each in a pipe of its own (the child's main thread reads
its jobs itself), and events flow child → worker (started, progress, log lines, the result). The handler and
its attempt's data are pickled (the handler by reference, so it must be importable). A handler that ignores
its abort signal is terminated, then killed, and its child is not used again; nor is one past its
`ChildLimits` (attempts run, peak memory), or idle for ``IDLE_S``. ``ChildLimits.min_children`` are kept
ready: started with the worker, never let go for being idle, and replaced as soon as one is let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import operator
import os
import pickle
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.context import BaseContext
from typing import Any

from taskwire.common import ErrorInfo

from ._abort import AbortController, AbortReason
from ._context import AttemptEvents, AttemptInfo, LogLine, ProgressUpdate, build_context
from ._outcome import HandlerResult, Raised
from ._runners import RunnerEvents, call_async_handler, call_sync_handler

_log = logging.getLogger(__name__)

# Worker → child, on the jobs pipe: ("job", number, a pickled _Job); on the control pipe: (number,
# AbortReason.value, message) to abort that job. The pipes' end tells an idle child to exit.
# Child → worker: ("started",), ("progress", number, ProgressUpdate), ("log", number, LogLine),
# ("result", HandlerResult, peak RSS in KiB); all but progress and logs (which a thread a handler left
# behind may send late) are for the job the child was last given.

#: How long a child with nothing to run is kept before it is told to exit.
IDLE_S = 300.0
# How many children one attempt tries before it fails: each one tried had died before it took the job.
_START_TRIES = 3
_DIED_UNSTARTED = f"{_START_TRIES} handler processes in a row exited before they could take the attempt"
_STOPPED_UNSTARTED = "the attempt was aborted, and its process ended, before its handler started"


@dataclass(frozen=True, slots=True)
class ChildLimits:
    """When a child process is replaced by a fresh one after an attempt (None: no limit), and how many
    are kept ready.

    ``max_attempts``: after it has run that many. ``max_memory_mib``: once its peak resident memory has
    passed that many MiB (the attempt that took it there still completes). ``min_children``: how many
    children are kept ready, started with the worker rather than when an attempt first needs one, never
    let go for being idle, and replaced as soon as one is let go (at most the worker's slots).
    """

    max_attempts: int | None = None
    max_memory_mib: int | None = None
    min_children: int = 0

    def __post_init__(self) -> None:
        for name, least in (("max_attempts", 1), ("max_memory_mib", 1), ("min_children", 0)):
            value = getattr(self, name)
            if value is None and name != "min_children":
                continue
            number = whole_number(name, value)
            if number < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
            object.__setattr__(self, name, number)  # a plain int, whatever integer type it came as


def whole_number(name: str, value: object) -> int:
    """`value` as an int (any integer type but bool); a TypeError naming the option otherwise."""
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # type: ignore[arg-type]
    raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.100}")


@dataclass(frozen=True, slots=True)
class _Job:
    fn: Callable[..., object]
    is_async: bool
    info: AttemptInfo
    log_level: int


@dataclass(slots=True)
class _Waiter:
    """Where the events and the result of the job a child runs go.

    The result is None when the child ended before it took the job: the job can go to another child.
    """

    events: RunnerEvents
    done: asyncio.Future[HandlerResult | None]
    taken: bool = False  # the child has said it started the job

    def finish(self, result: HandlerResult | None) -> None:
        if not self.done.done():
            self.done.set_result(result)


class _Child:
    """One child process, whose events the worker's event loop reads as they come.

    Read on the loop rather than by a thread of its own: a message then costs the loop one wake-up, not a
    thread's wake-up and a hand-off to the loop besides. Call from that loop only.
    """

    def __init__(self, mp_context: BaseContext, name: str, on_exit: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        events_reader, events_writer = mp_context.Pipe(duplex=False)
        jobs_reader, jobs_writer = mp_context.Pipe(duplex=False)
        control_reader, control_writer = mp_context.Pipe(duplex=False)
        process = mp_context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            kwargs={"jobs": jobs_reader, "control": control_reader, "events": events_writer},
            name=name,
            # Daemonic so that multiprocessing terminates it if the worker exits while it runs.
            daemon=True,
        )
        try:
            process.start()  # synchronous, but only a fork/exec and a small pickle written to a pipe
        except BaseException:
            for ours in (events_reader, jobs_writer, control_writer):
                ours.close()
            raise
        finally:
            # The child holds its own copies; closing ours is what lets each side see the other's end.
            for theirs in (events_writer, jobs_reader, control_reader):
                theirs.close()
        self.process: Any = process  # multiprocessing's Process classes are context-specific
        self.attempts = 0
        self.peak_rss_kib = 0  # as the child reported with its last result
        self.doomed = False  # dead, or about to be: never given another job
        self.stopped = False  # terminated or killed by the worker
        self._loop = loop
        self._jobs = jobs_writer
        self._control = control_writer
        self._events = events_reader
        self._waiter: _Waiter | None = None
        self._on_exit = on_exit
        self._exited = threading.Event()  # an Event, for `ChildProcesses.wait_closed` in another thread
        loop.add_reader(events_reader.fileno(), self._read_events)

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def usable(self) -> bool:
        return not self.doomed and not self.exited

    def run(self, job: bytes, waiter: _Waiter) -> None:
        """Hand the child ``job`` (a pickled `_Job`); its events and result go to ``waiter``."""
        self.attempts += 1  # also the job's number, in the messages about it
        self._waiter = waiter
        try:
            self._jobs.send(("job", self.attempts, job))
        except (OSError, ValueError):  # It died while idle, and the loop has not read its end yet.
            self.doomed = True
            self._report_end()

    def abort(self, reason: AbortReason, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # The child is already gone.
            self._control.send((self.attempts, reason.value, message))

    # Not `process.is_alive()`: it would reap the child before the loop has read all it wrote.
    def terminate(self) -> None:
        self.doomed = self.stopped = True
        if not self.exited:
            self.process.terminate()

    def kill(self) -> None:
        self.doomed = self.stopped = True
        if not self.exited:
            self.process.kill()

    def retire(self) -> None:
        """Tell an idle child to exit (the end of its pipes); the loop reaps it when it has."""
        self.doomed = True
        self._jobs.close()
        self._control.close()

    def wait_exited(self, timeout_s: float) -> bool:
        return self._exited.wait(timeout_s)

    def _read_events(self) -> None:
        # One message per call: the loop calls again while more is there to read. (Not `poll()` first: it
        # makes and drops a selector each time.) A message is written whole; a large one is read while the
        # child is still writing it.
        try:
            self._on_event(self._events.recv())
        except (EOFError, OSError):
            # The child exited: told to, or killed, or it died. Reaped once it has gone entirely.
            self._loop.remove_reader(self._events.fileno())
            self._events.close()
            self._loop.add_reader(self.process.sentinel, self._reap)

    def _on_event(self, message: tuple[Any, ...]) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        kind = message[0]
        if kind == "started":
            waiter.taken = True
            waiter.events.started()
        elif kind == "progress":
            if message[1] == self.attempts:
                waiter.events.progress(message[2])
        elif kind == "log":
            if message[1] == self.attempts:
                waiter.events.log(message[2])
        elif kind == "result":
            self._waiter = None
            self.peak_rss_kib = message[2]
            waiter.finish(message[1])

    def _reap(self) -> None:
        self._loop.remove_reader(self.process.sentinel)
        self.process.join()
        self._exited.set()
        self._report_end()
        self._on_exit()

    def _report_end(self) -> None:
        """The child has ended: the job in hand, if any, was cut short, or never taken."""
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return
        if not waiter.taken:
            waiter.finish(None)
            return
        code = self.process.exitcode if self.exited else None
        how = "" if code is None else f" with code {code}"
        message = f"the handler's process exited{how} before it returned"
        waiter.finish(Raised(ErrorInfo(type="HandlerProcessDied", message=message, retryable=True)))


class ChildProcesses:
    """The worker's handler processes: one per attempt in flight at most, each kept for the next attempt,
    and at least ``limits.min_children`` once `start` has been called.

    Call from the worker's event loop. There is no bound here: the executor's slots bound how many
    attempts run at once. ``on_end`` hears why each child was let go (see `Ending`).
    """

    def __init__(
        self,
        mp_context: BaseContext,
        *,
        limits: ChildLimits | None = None,
        idle_s: float = IDLE_S,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[Ending], None] | None = None,
    ) -> None:
        self._mp_context = mp_context
        self._limits = limits or ChildLimits()
        self._idle_s = idle_s
        self._on_start = on_start
        self._on_end = on_end
        self._idle: list[tuple[float, _Child]] = []  # with the loop's time each came back, oldest first
        self._all: set[_Child] = set()  # every child not yet seen to have exited
        self._sweep: asyncio.TimerHandle | None = None
        self._names = itertools.count(1)
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def start(self) -> None:
        """Start the children kept ready (``limits.min_children``), without waiting for them to be up: a job
        given to one still starting waits in its pipe."""
        self._replenish()

    def acquire(self) -> _Child:
        """A kept child with nothing to run, or a new one (which may raise: it could not be started)."""
        while self._idle:
            _, child = self._idle.pop()  # the one used last: the others are the ones to expire
            if child.usable:
                return child
            self._ended(Ending.DIED)
        return self._new_child()

    def release(self, child: _Child) -> None:
        """``child`` has finished its job: keep it for the next, or let it go."""
        ending = self._ending(child)
        if ending is not None:
            if child.usable:
                child.retire()
            self._ended(ending)
            self._replenish()
            return
        loop = asyncio.get_running_loop()
        self._idle.append((loop.time(), child))
        if self._sweep is None:
            self._sweep = loop.call_later(self._idle_s, self._expire)

    def close(self) -> None:
        """Tell idle children to exit now; busy ones are let go when their job ends."""
        self._closed = True
        for _, child in self._idle:
            child.retire()
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()

    def wait_closed(self, timeout_s: float) -> None:
        """Block until every child has exited, killing those still alive after ``timeout_s`` in all."""
        deadline = time.monotonic() + timeout_s
        for child in list(self._all):
            if not child.wait_exited(max(0.0, deadline - time.monotonic())):
                child.kill()
        self._all.clear()

    def _new_child(self) -> _Child:
        child = _Child(self._mp_context, f"taskwire-handler-process-{next(self._names)}", on_exit=self._replenish)
        self._all = {kept for kept in self._all if not kept.exited}  # pruned as it grows
        self._all.add(child)
        if self._on_start is not None:
            self._on_start()
        return child

    def _usable(self) -> int:
        return sum(1 for child in self._all if child.usable)

    def _replenish(self) -> None:
        """Start children until ``limits.min_children`` are usable, idle or busy. A new one goes to the front
        of the idle list: kept children that have run before are given jobs first."""
        if self._closed:
            return
        missing = self._limits.min_children - self._usable()
        if missing <= 0:
            return
        loop = asyncio.get_running_loop()
        for _ in range(missing):
            try:
                child = self._new_child()
            except Exception as exc:  # Tried again when an attempt needs a child, and with the next let-go.
                _log.warning("could not start a handler process to keep ready: %s", exc)
                return
            self._idle.insert(0, (self._idle[0][0] if self._idle else loop.time(), child))

    def _expire(self) -> None:
        """Let go of the children idle for ``idle_s``, down to ``limits.min_children`` in all; come back
        when the next one will have been."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self._idle_s
        spare = self._usable() - self._limits.min_children
        while self._idle and self._idle[0][0] <= cutoff and spare > 0:
            _, child = self._idle.pop(0)
            spare -= child.usable
            child.retire()
            self._ended(Ending.IDLE)
        if self._idle and spare > 0:
            self._sweep = loop.call_at(self._idle[0][0] + self._idle_s, self._expire)

    def _ending(self, child: _Child) -> Ending | None:
        """Why ``child``, back from a job, is let go; None if it is kept."""
        limits = self._limits
        if self._closed:
            return Ending.CLOSED
        if not child.usable:
            return Ending.STOPPED if child.stopped else Ending.DIED
        if limits.max_attempts is not None and child.attempts >= limits.max_attempts:
            return Ending.ATTEMPTS
        if limits.max_memory_mib is not None and child.peak_rss_kib > limits.max_memory_mib * 1024:
            return Ending.MEMORY
        return None

    def _ended(self, ending: Ending) -> None:
        if self._on_end is not None:
            self._on_end(ending)


class Ending(enum.StrEnum):
    """Why a child process was let go (the label of the worker's metric)."""

    ATTEMPTS = "max_attempts"  # it had run its limit of attempts
    MEMORY = "max_memory"  # its peak memory had passed the limit
    IDLE = "idle"  # nothing to run for IDLE_S
    STOPPED = "stopped"  # terminated or killed: its handler ignored its abort signal
    DIED = "died"  # it exited on its own accord, or was killed from outside
    CLOSED = "closed"  # the worker is closing


class ProcessRunner:
    """Runs one handler call in one of the worker's child processes."""

    def __init__(
        self,
        *,
        children: ChildProcesses,
        fn: Callable[..., object],
        is_async: bool,
        info: AttemptInfo,
        events: RunnerEvents,
        log_level: int,
        kill_grace_s: float,
    ) -> None:
        self._children = children
        self._job = _Job(fn=fn, is_async=is_async, info=info, log_level=log_level)
        self._events = events
        self._kill_grace_s = kill_grace_s
        self._child: _Child | None = None
        self._abort: tuple[AbortReason, str] | None = None

    async def run(self) -> HandlerResult:
        loop = asyncio.get_running_loop()
        try:
            job = pickle.dumps(self._job)  # the handler by reference: a lambda or a local function fails here
        except Exception as exc:
            return Raised(ErrorInfo.from_exception(exc))
        for _ in range(_START_TRIES):
            try:
                child = self._children.acquire()
            except Exception as exc:
                return Raised(ErrorInfo.from_exception(exc))
            self._child = child
            done: asyncio.Future[HandlerResult | None] = loop.create_future()
            child.run(job, _Waiter(events=self._events, done=done))
            if self._abort is not None:
                child.abort(*self._abort)
            try:
                result = await done
            except asyncio.CancelledError:
                child.kill()
                raise
            finally:
                self._children.release(child)
            if result is not None:
                return result
            if self._abort is not None:
                # Aborted before its handler started (its child perhaps stopped while still starting up):
                # nothing to run elsewhere. The executor reports the attempt as its abort decides.
                return Raised(ErrorInfo(type="HandlerProcessDied", message=_STOPPED_UNSTARTED, retryable=True))
            # A kept child that had died while idle, found out only now: the job goes to another.
        return Raised(ErrorInfo(type="HandlerProcessDied", message=_DIED_UNSTARTED, retryable=True))

    def on_abort(self, reason: AbortReason, message: str) -> None:
        self._abort = (reason, message)  # also sent to a child given the job later
        if self._child is not None:
            self._child.abort(reason, message)

    def hard_stop(self) -> None:
        child = self._child
        if child is None or child.exited:
            return
        child.terminate()
        asyncio.get_running_loop().call_later(self._kill_grace_s, child.kill)


class _PipeEvents:
    """One job's AttemptEvents in the child: down the events pipe, with the job's number, so that a thread
    its handler left behind cannot report into the next job."""

    def __init__(self, send: Callable[[tuple[object, ...]], None], number: int) -> None:
        self._send = send
        self._number = number

    def progress(self, update: ProgressUpdate) -> None:
        self._send(("progress", self._number, update))

    def log(self, line: LogLine) -> None:
        self._send(("log", self._number, line))


class _ChildJobs:
    """The child's side of its two pipes from the worker: jobs, read by the main thread that runs them,
    and aborts, read by a thread of their own so that one reaches a running handler."""

    def __init__(
        self, jobs: multiprocessing.connection.Connection, control: multiprocessing.connection.Connection
    ) -> None:
        self._jobs = jobs
        self._control = control
        self._lock = threading.Lock()
        self._current: tuple[int, AbortController] | None = None
        self._last = 0  # the number of the last job taken
        self._early: dict[int, tuple[AbortReason, str]] = {}  # aborts read before their job
        threading.Thread(target=self._watch, name="taskwire-aborts", daemon=True).start()

    def next(self) -> tuple[int, bytes, AbortController] | None:
        """The next job, its number and its abort signal; None once the worker has let this child go."""
        try:
            _, number, job = self._jobs.recv()
        except (EOFError, OSError):
            return None
        controller = AbortController()
        with self._lock:
            self._current, self._last = (number, controller), number
            early = self._early.pop(number, None)
            self._early.clear()
        if early is not None:
            controller.abort(*early)
        return number, job, controller

    def done(self) -> None:
        """The current job has ended (before its result is sent, so before the next job can come)."""
        with self._lock:
            self._current = None

    def _watch(self) -> None:
        try:
            while True:
                number, reason_value, text = self._control.recv()
                reason = AbortReason(reason_value)
                with self._lock:
                    current = self._current
                    if number > self._last:  # its job is still in the other pipe
                        self._early[number] = (reason, text)
                if current is not None and current[0] == number:
                    current[1].abort(reason, text)
        except (EOFError, OSError):
            # The worker let this child go, or went away without a word: a running handler stops as if the
            # worker were shutting down (an idle child has none), and the child exits after it.
            with self._lock:
                current = self._current
            if current is not None:
                current[1].abort(AbortReason.SHUTDOWN, "the worker process exited")


def _child_main(
    *,
    jobs: multiprocessing.connection.Connection,
    control: multiprocessing.connection.Connection,
    events: multiprocessing.connection.Connection,
) -> None:
    # Ctrl-C reaches the whole process group; the worker decides how its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send_lock = threading.Lock()

    def send(message: tuple[object, ...]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            events.send(message)

    incoming = _ChildJobs(jobs, control)
    with asyncio.Runner() as runner:
        while (next_job := incoming.next()) is not None:
            number, pickled, controller = next_job
            send(("started",))
            result = _run_job(runner, pickled, controller, _PipeEvents(send, number))
            incoming.done()
            send(("result", result, _peak_rss_kib()))
    events.close()
    # Exit now: a normal interpreter exit would wait for any non-daemon thread a handler left behind.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes there, KiB elsewhere


def _run_job(
    runner: asyncio.Runner, pickled: bytes, controller: AbortController, events: AttemptEvents
) -> HandlerResult:
    try:
        job: _Job = pickle.loads(pickled)  # the handler's module is imported here, the first time
    except BaseException as exc:
        return Raised(ErrorInfo.from_exception(exc))
    build = partial(build_context, info=job.info, abort=controller.signal, events=events, log_level=job.log_level)
    # A fresh context each time, so what one handler sets in a context variable the next does not see.
    context = contextvars.Context()
    if job.is_async:
        return runner.run(call_async_handler(job.fn, build), context=context)
    return context.run(call_sync_handler, job.fn, build)


def get_mp_context(start_method: str) -> BaseContext:
    """The multiprocessing context for handler processes: 'spawn' (the default) or 'forkserver'.

    Not 'fork': a forked child would inherit the worker's gRPC threads mid-call, and the pipes of the other
    children, which would then never see their worker go.
    """
    if start_method == "fork":
        raise ValueError("process isolation cannot use the 'fork' start method; use 'spawn' or 'forkserver'")
    return multiprocessing.get_context(start_method)
