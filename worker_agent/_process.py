"""Process isolation: each attempt runs in a child process that the worker can kill.

Children are kept for the next attempt (`ChildProcesses`), since starting one with ``spawn`` costs a fresh
interpreter and the imports of the handler's module. A child runs one attempt at a time. Three pipes join it
to the worker: jobs and aborts flow worker → child, each in a pipe of its own (the child's main thread reads
its jobs itself), and events flow child → worker (started, progress, log lines, the result). The handler and
its attempt's data are pickled (the handler by reference, so it must be importable). A handler that ignores
its abort signal is killed, and its child is not used again; nor is one past its `ChildLimits` (attempts run,
peak memory), or idle for ``IDLE_S``. ``ChildLimits.min_children`` are kept ready: started with the worker,
never let go for being idle, and replaced as soon as one is let go.

A child leads a process group of its own, so that the processes its handler starts are stopped with it, and
a signal meant for the worker's group (Ctrl-C) or for every process (a service manager's SIGTERM) does not
stop it: the worker decides how its children stop. A child dies with the worker, even one killed with
``kill -9``. One child, seen from the worker, is `_child`; what runs inside it, `_in_child`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import operator
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext

from taskwire.common import ErrorInfo

from ._abort import AbortReason
from ._child import PROCESS_DIED, _Child, _Waiter
from ._context import AttemptInfo
from ._in_child import ORPHAN_EXIT_S, _Job
from ._outcome import HandlerResult, Raised
from ._runners import RunnerEvents

_log = logging.getLogger(__name__)

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
        orphan_exit_s: float = ORPHAN_EXIT_S,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[Ending], None] | None = None,
    ) -> None:
        self._mp_context = mp_context
        self._limits = limits or ChildLimits()
        self._idle_s = idle_s
        self._orphan_exit_s = orphan_exit_s
        self._on_start = on_start
        self._on_end = on_end
        self._idle: list[tuple[float, _Child]] = []  # with the loop's time each came back, oldest first
        # Every child not yet seen to have exited, and those stopped by force whose group may still run.
        self._all: set[_Child] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._names = itertools.count(1)
        self._draining = False  # no more children are started to be kept ready
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

    def drain(self) -> None:
        """The worker takes no new work: children let go are not replaced any more. (One an attempt in flight
        needs is still started.)"""
        self._draining = True

    def close(self) -> None:
        """Tell idle children to exit now; busy ones are let go when their job ends."""
        self._closed = True
        for _, child in self._idle:
            child.retire()
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()

    def wait_closed(self, timeout_s: float) -> None:
        """Block until every child has exited, killing those still alive after ``timeout_s`` in all, with the
        processes their handlers started (and those of children stopped by force)."""
        deadline = time.monotonic() + timeout_s
        for child in list(self._all):
            if not child.wait_exited(max(0.0, deadline - time.monotonic())) or child.group_pending:
                child.kill()
        self._all.clear()

    def _new_child(self) -> _Child:
        name = f"taskwire-handler-process-{next(self._names)}"
        child = _Child(self._mp_context, name, on_exit=self._replenish, orphan_exit_s=self._orphan_exit_s)
        self._all = {kept for kept in self._all if not kept.exited or kept.group_pending}  # pruned as it grows
        self._all.add(child)
        if self._on_start is not None:
            self._on_start()
        return child

    def _usable(self) -> int:
        return sum(1 for child in self._all if child.usable)

    def _replenish(self) -> None:
        """Start children until ``limits.min_children`` are usable, idle or busy. A new one goes to the front
        of the idle list: kept children that have run before are given jobs first."""
        if self._closed or self._draining:
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
    STOPPED = "stopped"  # killed: its handler ignored its abort signal
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
                return Raised(ErrorInfo(type=PROCESS_DIED, message=_STOPPED_UNSTARTED, retryable=True))
            # A kept child that had died while idle, found out only now: the job goes to another.
        return Raised(ErrorInfo(type=PROCESS_DIED, message=_DIED_UNSTARTED, retryable=True))

    def on_abort(self, reason: AbortReason, message: str) -> None:
        self._abort = (reason, message)  # also sent to a child given the job later
        if self._child is not None:
            self._child.abort(reason, message)

    def hard_stop(self) -> None:
        child = self._child
        if child is None or child.exited:
            return
        # The child at once; what its handler started gets the kill grace to end on its SIGTERM.
        child.stop()
        asyncio.get_running_loop().call_later(self._kill_grace_s, child.kill)


def get_mp_context(start_method: str) -> BaseContext:
    """The multiprocessing context for handler processes: 'spawn' (the default) or 'forkserver'.

    Not 'fork': a forked child would inherit the worker's gRPC threads mid-call, and the pipes of the other
    children, which would then never see their worker go.
    """
    if start_method == "fork":
        raise ValueError("process isolation cannot use the 'fork' start method; use 'spawn' or 'forkserver'")
    return multiprocessing.get_context(start_method)
