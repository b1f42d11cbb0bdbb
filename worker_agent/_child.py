"""The worker's side of one handler process (process isolation): the job it runs, the events it sends read
without ever blocking the worker's loop, and its end learnt from the process itself (a pidfd on Linux), not
from its pipes, which a process its handler started may hold open long after. What runs inside it is
`_in_child`; the pool of them, `_process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.util
import os
import pickle
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from taskwire.common import ErrorInfo

from ._abort import AbortReason
from ._in_child import _child_main
from ._outcome import HandlerResult, Raised
from ._runners import RunnerEvents

#: The error type of an attempt whose child process ended before its handler returned.
PROCESS_DIED = "HandlerProcessDied"
# A job this small is written to its child on the worker's loop: the pipe is empty when a job is sent (a child
# is given one only once it has read the one before), and a pipe holds a page at least. A larger one is
# written by a thread, since a child still starting up reads nothing yet.
_INLINE_JOB_BYTES = 4096 - 256

# Every child started by this process and not yet reaped; those left are killed when it exits (`_kill_at_exit`).
_live: set[_Child] = set()


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
            # Not daemonic, so that a handler may start multiprocessing children of its own (a pool). The
            # worker's exit still ends it: `_kill_at_exit` kills it before multiprocessing would wait for it.
            daemon=False,
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

    Run among multiprocessing's own exit finalizers, before it waits for its children: a child would not end
    by itself, and takes no SIGTERM, so that wait would never end.
    """
    for child in list(_live):
        child.kill()


multiprocessing.util.Finalize(None, _kill_at_exit, exitpriority=0)
os.register_at_fork(after_in_child=_live.clear)  # a forked copy of the worker has no children of its own
