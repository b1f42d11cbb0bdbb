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
stop it: the worker decides how its children stop. The worker learns that a child has ended from the process
itself (a pidfd on Linux), not from its pipes, which a process the handler started may hold open long after.
A child dies with the worker, even one killed with ``kill -9``.
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
import multiprocessing.util
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
from typing import Any, NoReturn

from taskwire.common import ErrorInfo

from ._abort import AbortController, AbortReason
from ._context import AttemptEvents, AttemptInfo, LogLine, ProgressUpdate, build_context
from ._outcome import HandlerResult, Raised
from ._runners import RunnerEvents, call_async_handler, call_sync_handler

_log = logging.getLogger(__name__)

# Worker → child, on the jobs pipe: ("job", number, a pickled _Job); on the control pipe: (number,
# AbortReason.value, message) to abort that job. The pipes' end tells an idle child to exit, and a busy one
# that the worker has gone (it has no other reason to end while a job runs).
# Child → worker: ("started",), ("progress", number, ProgressUpdate), ("log", number, LogLine),
# ("result", HandlerResult, peak RSS in KiB); all but progress and logs (which a thread a handler left
# behind may send late) are for the job the child was last given.

#: How long a child with nothing to run is kept before it is told to exit.
IDLE_S = 300.0
#: How long a handler may take to stop once its worker has gone (its child's pipes ended while it ran) before
#: its child exits anyway. Where the system can say so (Linux), the child is killed with the worker at once.
ORPHAN_EXIT_S = 3.0
#: The error type of an attempt whose child process ended before its handler returned.
PROCESS_DIED = "HandlerProcessDied"
# A job this small is written to its child on the worker's loop: the pipe is empty when a job is sent (a child
# is given one only once it has read the one before), and a pipe holds a page at least. A larger one is
# written by a thread, since a child still starting up reads nothing yet.
_INLINE_JOB_BYTES = 4096 - 256
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How many children one attempt tries before it fails: each one tried had died before it took the job.
_START_TRIES = 3
_DIED_UNSTARTED = f"{_START_TRIES} handler processes in a row exited before they could take the attempt"
_STOPPED_UNSTARTED = "the attempt was aborted, and its process ended, before its handler started"

# Every child started by this process and not yet reaped; those left are killed when it exits (`_kill_at_exit`).
_live: set[_Child] = set()


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
    thread's wake-up and a hand-off to the loop besides. Call from that loop only (`kill` from any thread).
    """

    def __init__(
        self, mp_context: BaseContext, name: str, on_exit: Callable[[], None], *, orphan_exit_s: float
    ) -> None:
        loop = asyncio.get_running_loop()
        events_reader, events_writer = mp_context.Pipe(duplex=False)
        jobs_reader, jobs_writer = mp_context.Pipe(duplex=False)
        control_reader, control_writer = mp_context.Pipe(duplex=False)
        process = mp_context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            kwargs={
                "jobs": jobs_reader,
                "control": control_reader,
                "events": events_writer,
                "orphan_exit_s": orphan_exit_s,
            },
            name=name,
            # Daemonic: it starts no multiprocessing children of its own, and the worker's exit ends it (it
            # takes no SIGTERM, so `_kill_at_exit` kills it before multiprocessing would wait for it).
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
        self.stopped = False  # killed by the worker
        self.group_killed = False  # every process left in its group has been killed
        self._loop = loop
        self._jobs = jobs_writer
        self._control = control_writer
        self._events = events_reader
        self._waiter: _Waiter | None = None
        self._on_exit = on_exit
        self._exited = threading.Event()  # an Event, for `ChildProcesses.wait_closed` in another thread
        # Read without blocking (`_read_events`): what has come of the child's messages so far.
        self._unread = bytearray()
        os.set_blocking(events_reader.fileno(), False)
        _live.add(self)
        self._exit_fd, self._owns_exit_fd = _exit_watch(process, mp_context)
        loop.add_reader(events_reader.fileno(), self._read_events)
        loop.add_reader(self._exit_fd, self._on_exited)

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def usable(self) -> bool:
        return not self.doomed and not self.exited

    @property
    def group_pending(self) -> bool:
        """Stopped by force, and what its handler started may still be running."""
        return self.stopped and not self.group_killed

    def run(self, job: bytes, waiter: _Waiter) -> None:
        """Hand the child ``job`` (a pickled `_Job`); its events and result go to ``waiter``. Never blocks: a
        large job is written by a thread of its own (one job at a time per child, so they cannot cross)."""
        self.attempts += 1  # also the job's number, in the messages about it
        self._waiter = waiter
        message = ("job", self.attempts, job)
        if len(job) > _INLINE_JOB_BYTES:
            try:
                name = f"taskwire-job-writer-{self.process.pid}"
                threading.Thread(target=self._write_job, args=(message, waiter), name=name, daemon=True).start()
                return
            except RuntimeError:  # No thread to spare: written here, holding the loop until the child reads it.
                pass
        try:
            self._jobs.send(message)
        except (OSError, ValueError):  # It died while idle, and the loop has not read its end yet.
            self._job_not_taken(waiter)

    def abort(self, reason: AbortReason, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # The child is already gone.
            self._control.send((self.attempts, reason.value, message))

    # Not `process.is_alive()`: it would reap the child before the loop has read all it wrote.
    def stop(self) -> None:
        """Stop it by force: SIGKILL to it (it takes no SIGTERM: see `_child_main`), SIGTERM to the processes
        its handler started (its process group), which `kill` ends for good."""
        self.doomed = self.stopped = True
        if not self.exited:
            _signal_group(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL to it and to every process left in its group. Safe from any thread."""
        self.doomed = self.stopped = self.group_killed = True
        # Its group outlives it while a process its handler started is in it, and keeps its number from being
        # reused meanwhile. (An emptied group's number could go to another group only after the system has gone
        # round all its process ids, and to one whose leader made it so.)
        _signal_group(self.process.pid, signal.SIGKILL)
        if not self.exited:  # Still starting up, perhaps, and not yet the leader of a group.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def retire(self) -> None:
        """Tell an idle child to exit (the end of its pipes); the loop reaps it when it has."""
        self.doomed = True
        self._jobs.close()
        self._control.close()

    def wait_exited(self, timeout_s: float) -> bool:
        return self._exited.wait(timeout_s)

    def _write_job(self, message: tuple[object, ...], waiter: _Waiter) -> None:
        """In a thread: write a job that may not fit in the pipe before the child reads it."""
        try:
            self._jobs.send(message)
        except (OSError, ValueError):  # It died before it read the whole job.
            with contextlib.suppress(RuntimeError):  # A closed loop: nobody waits for this job any more.
                self._loop.call_soon_threadsafe(self._job_not_taken, waiter)

    def _job_not_taken(self, waiter: _Waiter) -> None:
        if self._waiter is waiter:
            self.doomed = True
            self._report_end()

    def _read_events(self) -> None:
        """Read what is there of the child's messages, never waiting for the rest of one (a child killed in the
        middle of a large one may never write it, while a process it forked holds the pipe open), and handle
        those now whole. At the pipe's end (the child closed it, or exited) the reading stops: `_on_exited`
        reports the child's end once the process has ended."""
        self._take(self._read_chunk())

    def _read_chunk(self) -> bytes | None:
        """What the pipe has now; None for nothing yet, b"" at its end."""
        try:
            return os.read(self._events.fileno(), _READ_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _take(self, chunk: bytes | None) -> bool:
        """Handle the messages ``chunk`` completes; whether there may be more to read now."""
        if chunk is None:
            return False
        if not chunk:
            self._close_events()
            return False
        self._unread += chunk
        for message in _whole_messages(self._unread):
            self._on_event(message)
        return True

    def _close_events(self) -> None:
        if not self._events.closed:
            self._loop.remove_reader(self._events.fileno())
            self._events.close()

    def _read_remaining_events(self) -> None:
        """What the child wrote before it ended and the loop has not read yet (a message it was cut off in the
        middle of is dropped)."""
        while not self._events.closed and self._take(self._read_chunk()):
            pass
        self._close_events()

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

    def _on_exited(self) -> None:
        """The process has ended (told to, or killed, or it died): reap it and report the job it cut short."""
        self._loop.remove_reader(self._exit_fd)
        if self._owns_exit_fd:
            os.close(self._exit_fd)
        self._read_remaining_events()
        self.process.join()  # at once: it has ended
        self._exited.set()
        _live.discard(self)
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
        waiter.finish(Raised(ErrorInfo(type=PROCESS_DIED, message=message, retryable=True)))


_READ_BYTES = 1 << 16  # a pipe's whole buffer, on Linux


def _whole_messages(unread: bytearray) -> list[Any]:
    """Take the whole messages off the front of ``unread`` (as `multiprocessing.connection.Connection.send` frames
    them: a 4-byte big-endian size, or -1 and an 8-byte one, then the pickle) and unpickle them."""
    messages: list[Any] = []
    while len(unread) >= 4:
        size, start = int.from_bytes(unread[:4], "big", signed=True), 4
        if size == -1:
            if len(unread) < 12:
                break
            size, start = int.from_bytes(unread[4:12], "big"), 12
        end = start + size
        if len(unread) < end:
            break
        messages.append(pickle.loads(unread[start:end]))
        del unread[:end]
    return messages


def _exit_watch(process: Any, mp_context: BaseContext) -> tuple[int, bool]:
    """A descriptor that becomes readable once ``process`` has ended, and whether it is ours to close.

    A spawned child's sentinel is a pipe whose other end the child holds, and so does every process it
    forks: a pidfd (Linux) tells of the child alone. A fork server's sentinel is its own socket, told by
    the server when the child has ended.
    """
    if mp_context.get_start_method() == "spawn" and hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):  # a kernel before 5.3, or a sandbox that forbids it
            return os.pidfd_open(process.pid), True
    return process.sentinel, False


def _signal_group(group: int, signum: int) -> None:
    # No such group: the child has not made it yet (it is starting up), or every process in it has ended.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _kill_at_exit() -> None:
    """When the worker's interpreter exits, kill the children still alive (and what they started).

    Run among multiprocessing's own exit finalizers, before it terminates its daemonic children and waits
    for them: a child takes no SIGTERM, so that wait would never end.
    """
    for child in list(_live):
        child.kill()


multiprocessing.util.Finalize(None, _kill_at_exit, exitpriority=0)
os.register_at_fork(after_in_child=_live.clear)  # a forked copy of the worker has no children of its own


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
        self,
        jobs: multiprocessing.connection.Connection,
        control: multiprocessing.connection.Connection,
        *,
        orphan_exit_s: float,
    ) -> None:
        self._jobs = jobs
        self._control = control
        self._orphan_exit_s = orphan_exit_s
        self._lock = threading.Lock()
        self._current: tuple[int, AbortController] | None = None
        self._idle = threading.Event()  # no job running
        self._idle.set()
        self._orphaned = False  # the worker has gone
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
            if self._orphaned:  # sent just before the worker went: nobody is left to hear of it
                return None
            self._current, self._last = (number, controller), number
            self._idle.clear()
            early = self._early.pop(number, None)
            self._early.clear()
        if early is not None:
            controller.abort(*early)
        return number, job, controller

    def done(self) -> None:
        """The current job has ended (before its result is sent, so before the next job can come)."""
        with self._lock:
            self._current = None
            self._idle.set()

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
            # The worker let this child go (only ever an idle one), or went away without a word: a running
            # handler stops as if the worker were shutting down, and the child exits after it, or once it has
            # had `orphan_exit_s` to stop, whether it has or not.
            with self._lock:
                current, self._orphaned = self._current, True
            if current is not None:
                current[1].abort(AbortReason.SHUTDOWN, "the worker process exited")
                if not self._idle.wait(self._orphan_exit_s):
                    _exit_now(1)


def _child_main(
    *,
    jobs: multiprocessing.connection.Connection,
    control: multiprocessing.connection.Connection,
    events: multiprocessing.connection.Connection,
    orphan_exit_s: float,
) -> None:
    # A process group of its own: what its handler starts is stopped with it (`_Child.stop`), and Ctrl-C,
    # which reaches the terminal's foreground group, reaches none of them.
    with contextlib.suppress(OSError):
        os.setpgrp()
    # It takes no notice of SIGINT, nor of a SIGTERM sent to every process of the worker (a service manager
    # stopping it): the worker drains, then stops its children itself (SIGKILL). A handler that does nothing
    # rather than SIG_IGN, which would stay in force in the programs a handler runs; a handler is reset there.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _take_no_notice)
    # Nor in a process a handler forks without running a program (`os.fork`, multiprocessing's "fork"): its
    # `terminate()` must work as anywhere else.
    os.register_at_fork(after_in_child=_take_notice_again)
    _die_with_the_worker()
    _close_on_exec_what_was_inherited()
    send_lock = threading.Lock()

    def send(message: tuple[object, ...]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            events.send(message)

    incoming = _ChildJobs(jobs, control, orphan_exit_s=orphan_exit_s)
    with asyncio.Runner() as runner:
        while (next_job := incoming.next()) is not None:
            number, pickled, controller = next_job
            send(("started",))
            result = _run_job(runner, pickled, controller, _PipeEvents(send, number))
            incoming.done()
            send(("result", result, _peak_rss_kib()))
    events.close()
    _exit_now(0)


def _take_no_notice(signum: int, frame: object) -> None:
    pass


def _take_notice_again() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _exit_now(code: int) -> NoReturn:
    # Not a normal interpreter exit, which would wait for any non-daemon thread a handler left behind.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _die_with_the_worker() -> None:
    """Have the system kill this child when the process that started it dies, even by ``kill -9`` (Linux)."""
    if not sys.platform.startswith("linux"):
        return  # Elsewhere the end of its pipes tells it (see `_ChildJobs._watch`).
    import ctypes  # here: only a child needs it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    # The worker may have died before the call above, and then no signal comes. (Under a fork server the
    # signal comes when the server dies, which it does when the worker has.)
    worker = multiprocessing.parent_process()
    if worker is not None and not worker.is_alive():
        _exit_now(1)


def _close_on_exec_what_was_inherited() -> None:
    """Mark the descriptors this child was started with (its pipes to the worker, spawn's sentinel) close-on-
    exec, so that a program its handler runs (``os.system``, ``subprocess`` with ``close_fds=False``) does not
    keep them open after the child has ended."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/dev/fd"):
            if int(name) > 2:
                with contextlib.suppress(OSError):  # the directory listed itself, now closed
                    os.set_inheritable(int(name), False)


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
