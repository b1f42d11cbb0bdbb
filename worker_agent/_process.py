"""Process isolation: each attempt runs in a child process that the worker can terminate.

The child gets the handler (pickled by reference, so it must be importable), the attempt's data and two
pipes: events flow child → parent (started, progress, log lines, the result), the abort reason flows
parent → child. A handler that ignores its abort signal is terminated, then killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from multiprocessing.context import BaseContext
from typing import Any

from taskwire.common import ErrorInfo

from ._abort import AbortController, AbortReason
from ._context import AttemptEvents, AttemptInfo, LogLine, ProgressUpdate, build_context
from ._outcome import HandlerResult, Raised
from ._runners import RunnerEvents, call_async_handler, call_sync_handler

# Messages on the events pipe: ("started",), ("progress", ProgressUpdate), ("log", LogLine),
# ("result", HandlerResult). On the control pipe: (AbortReason.value, message).


class ProcessRunner:
    """Runs one handler call in a child process."""

    def __init__(
        self,
        *,
        fn: Callable[..., object],
        is_async: bool,
        info: AttemptInfo,
        events: RunnerEvents,
        log_level: int,
        mp_context: BaseContext,
        kill_grace_s: float,
        name: str,
    ) -> None:
        self._fn = fn
        self._is_async = is_async
        self._info = info
        self._events = events
        self._log_level = log_level
        self._mp_context = mp_context
        self._kill_grace_s = kill_grace_s
        self._name = name
        self._process: Any = None  # multiprocessing's Process classes are context-specific
        self._control: multiprocessing.connection.Connection | None = None
        self._pending_abort: tuple[str, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> HandlerResult:
        loop = asyncio.get_running_loop()
        self._loop = loop
        done: asyncio.Future[HandlerResult] = loop.create_future()
        events_reader, events_writer = self._mp_context.Pipe(duplex=False)
        control_reader, control_writer = self._mp_context.Pipe(duplex=False)
        process = self._mp_context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            kwargs={
                "fn": self._fn,
                "is_async": self._is_async,
                "info": self._info,
                "log_level": self._log_level,
                "events": events_writer,
                "control": control_reader,
            },
            name=self._name,
            # Daemonic so that multiprocessing terminates it if the worker exits while it runs.
            daemon=True,
        )
        try:
            # Synchronous, but only a fork/exec and a small pickle written to a pipe.
            process.start()
        except BaseException as exc:
            for connection in (events_reader, events_writer, control_reader, control_writer):
                connection.close()
            if isinstance(exc, Exception):
                return Raised(ErrorInfo.from_exception(exc))
            raise
        # The child holds its own copies; closing ours is what lets the reader see EOF when it exits.
        events_writer.close()
        control_reader.close()
        self._process = process
        self._control = control_writer
        if self._pending_abort is not None:
            self._send_abort(*self._pending_abort)
        threading.Thread(
            target=self._read_events,
            args=(events_reader, process, loop, done),
            name=f"{self._name}-events",
            daemon=True,
        ).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self._kill()
            raise
        finally:
            control_writer.close()

    def on_abort(self, reason: AbortReason, message: str) -> None:
        if self._control is None:
            self._pending_abort = (reason.value, message)
        else:
            self._send_abort(reason.value, message)

    def hard_stop(self) -> None:
        process = self._process
        if process is None or not process.is_alive():
            return
        process.terminate()
        if self._loop is not None:
            self._loop.call_later(self._kill_grace_s, self._kill)

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def _send_abort(self, reason_value: str, message: str) -> None:
        assert self._control is not None
        with contextlib.suppress(OSError, ValueError):  # The child is already gone, or the pipe closed.
            self._control.send((reason_value, message))

    def _read_events(
        self,
        reader: multiprocessing.connection.Connection,
        process: Any,
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[HandlerResult],
    ) -> None:
        result: HandlerResult | None = None
        try:
            while True:
                message = reader.recv()
                kind = message[0]
                if kind == "started":
                    self._events.started()
                elif kind == "progress":
                    self._events.progress(message[1])
                elif kind == "log":
                    self._events.log(message[1])
                elif kind == "result":
                    result = message[1]
        except (EOFError, OSError):
            pass  # The child exited (after its result, or killed before it).
        finally:
            reader.close()
        process.join()
        if result is None:
            result = Raised(
                ErrorInfo(
                    type="HandlerProcessDied",
                    message=f"the handler's process exited with code {process.exitcode} before it returned",
                    retryable=True,
                )
            )
        # Posted after every event of this attempt, so the loop sees them in order.
        with contextlib.suppress(RuntimeError):  # The worker's loop is closed; nobody waits any more.
            loop.call_soon_threadsafe(_set_result, done, result)


def _set_result(future: asyncio.Future[HandlerResult], result: HandlerResult) -> None:
    if not future.done():
        future.set_result(result)


class _PipeEvents:
    """The child's AttemptEvents: everything goes down the events pipe."""

    def __init__(self, send: Callable[[tuple[object, ...]], None]) -> None:
        self._send = send

    def progress(self, update: ProgressUpdate) -> None:
        self._send(("progress", update))

    def log(self, line: LogLine) -> None:
        self._send(("log", line))


def _child_main(
    *,
    fn: Callable[..., object],
    is_async: bool,
    info: AttemptInfo,
    log_level: int,
    events: multiprocessing.connection.Connection,
    control: multiprocessing.connection.Connection,
) -> None:
    # Ctrl-C reaches the whole process group; the worker decides how its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    controller = AbortController()
    send_lock = threading.Lock()

    def send(message: tuple[object, ...]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            events.send(message)

    def watch_control() -> None:
        try:
            reason_value, message = control.recv()
            reason = AbortReason(reason_value)
        except (EOFError, OSError):
            # The worker went away without a word: stop as if it were shutting down.
            reason, message = AbortReason.SHUTDOWN, "the worker process exited"
        controller.abort(reason, message)

    threading.Thread(target=watch_control, name="taskwire-abort-watch", daemon=True).start()
    pipe_events: AttemptEvents = _PipeEvents(send)
    build = partial(build_context, info=info, abort=controller.signal, events=pipe_events, log_level=log_level)
    send(("started",))
    result = asyncio.run(call_async_handler(fn, build)) if is_async else call_sync_handler(fn, build)
    send(("result", result))
    events.close()
    # Exit now: a normal interpreter exit would wait for any non-daemon thread the handler left behind.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def get_mp_context(start_method: str) -> BaseContext:
    """A multiprocessing context; 'spawn' is the default because forking a process with gRPC threads is unsafe."""
    return multiprocessing.get_context(start_method)
