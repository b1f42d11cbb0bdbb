"""Running one handler call: as an asyncio task, in a thread, or (see _process) in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from taskwire.common import ErrorInfo

from ._abort import AbortReason
from ._context import AttemptEvents, TaskContext
from ._outcome import HandlerResult, Raised, Returned
from ._payload import encode_output


class RunnerEvents(AttemptEvents, Protocol):
    """What a runner reports besides progress and logs: that the handler has started."""

    def started(self) -> None: ...


class AttemptRunner(Protocol):
    """Runs one handler call; the executor owns the abort signal and decides the outcome."""

    async def run(self) -> HandlerResult:
        """Run the handler to its end; returns what it produced, never raises (except cancellation)."""
        ...

    def on_abort(self, reason: AbortReason, message: str) -> None:
        """The attempt's abort signal has just fired (forward it where the signal cannot reach)."""
        ...

    def hard_stop(self) -> None:
        """The handler ignored its abort signal for the grace period: stop it however this runner can."""
        ...


def call_sync_handler(fn: Callable[..., object], build_context: Callable[[], TaskContext]) -> HandlerResult:
    """Build the context, call a sync handler, encode its value; every exception becomes Raised."""
    try:
        value = fn(build_context())
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError("the handler returned an awaitable: declare it 'async def' so it is awaited")
        return Returned(encode_output(value))
    except BaseException as exc:  # A handler's SystemExit must not end its thread without a result.
        return Raised(ErrorInfo.from_exception(exc))


async def call_async_handler(fn: Callable[..., object], build_context: Callable[[], TaskContext]) -> HandlerResult:
    """Build the context, await an async handler, encode its value; exceptions become Raised."""
    try:
        value = await cast("Awaitable[object]", fn(build_context()))
        return Returned(encode_output(value))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # Includes the CancelledError of a hard stop.
        return Raised(ErrorInfo.from_exception(exc))


class _InProcessRunner:
    """What the runners in this process hold: the handler, how to build its context, where to report, a name."""

    def __init__(
        self,
        *,
        fn: Callable[..., object],
        build_context: Callable[[], TaskContext],
        events: RunnerEvents,
        name: str,
    ) -> None:
        self._fn = fn
        self._build_context = build_context
        self._events = events
        self._name = name


class AsyncRunner(_InProcessRunner):
    """Runs an ``async def`` handler as its own asyncio task on the worker's loop."""

    _task: asyncio.Task[HandlerResult] | None = None  # set by run()

    async def run(self) -> HandlerResult:
        task = asyncio.create_task(call_async_handler(self._fn, self._build_context), name=self._name)
        self._task = task
        # After the task is scheduled: the handler then starts before the outbox's writer sends this, rather
        # than after. It still precedes the handler's own progress and logs, which the task has yet to send.
        self._events.started()
        try:
            # wait() rather than awaiting the task: a hard stop cancels the handler's task, and that must
            # not look like the cancellation of this one.
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.cancelled():
            return Raised(ErrorInfo(type="CancelledError", message="the handler task was cancelled"))
        return task.result()

    def on_abort(self, reason: AbortReason, message: str) -> None:
        pass  # The handler shares the signal object on this loop.

    def hard_stop(self) -> None:
        # Raises CancelledError at the handler's next await; code that never awaits cannot be stopped.
        if self._task is not None:
            self._task.cancel()


class ThreadRunner(_InProcessRunner):
    """Runs a sync handler in a daemon thread of its own.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one handler that ignores its
    abort signal would keep the worker from ever exiting. The executor's slots bound the thread count.
    """

    async def run(self) -> HandlerResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[HandlerResult] = loop.create_future()

        def target() -> None:
            result = call_sync_handler(self._fn, self._build_context)
            # A closed loop raises RuntimeError: nobody is waiting for this result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_result, done, result)

        self._events.started()
        threading.Thread(target=target, name=self._name, daemon=True).start()
        return await done

    def on_abort(self, reason: AbortReason, message: str) -> None:
        pass  # The signal is thread-safe; the handler sees it directly.

    def hard_stop(self) -> None:
        pass  # Python cannot stop a thread; use process isolation for code that ignores its signal.


def _set_result(future: asyncio.Future[HandlerResult], result: HandlerResult) -> None:
    if not future.done():
        future.set_result(result)
