"""What runs inside a handler process (process isolation): its jobs read and run one at a time, its aborts
read by a thread of its own, its events sent back down a pipe; deaf to signals meant for every process, and
dying with its worker. The worker's side of a child is `_child`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import resource
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from taskwire.common import ErrorInfo

from ._abort import AbortController, AbortReason
from ._context import AttemptEvents, AttemptInfo, LogLine, ProgressUpdate, build_context
from ._outcome import HandlerResult, Raised
from ._runners import call_async_handler, call_sync_handler

# Worker → child, on the jobs pipe: ("job", number, a pickled _Job); on the control pipe: (number,
# AbortReason.value, message) to abort that job. The pipes' end tells an idle child to exit, and a busy one
# that the worker has gone (it has no other reason to end while a job runs).
# Child → worker: ("started",), ("progress", number, ProgressUpdate), ("log", number, LogLine),
# ("result", HandlerResult, peak RSS in KiB); all but progress and logs (which a thread a handler left
# behind may send late) are for the job the child was last given.

#: How long a handler may take to stop once its worker has gone (its child's pipes ended while it ran) before
#: its child exits anyway. Where the system can say so (Linux), the child is killed with the worker at once.
ORPHAN_EXIT_S = 3.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class _Job:
    fn: Callable[..., object]
    is_async: bool
    info: AttemptInfo
    log_level: int


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
