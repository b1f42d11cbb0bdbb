"""Running one handler call: as an asyncio task, in a thread, or (see _process) in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol, cast

from taskwire.common import ErrorInfo

from ._abort import AbortReason
from ._context import AttemptEvents, TaskContext
from ._handler_loop import HandlerLoop, Inbox
from ._handler_threads import HandlerThreads
from ._outcome import HandlerResult, Raised, Returned
from ._payload import encode_output
from ._tracing import attempt_span, record_outcome


class RunnerEvents(AttemptEvents, Protocol):
    """What a runner reports besides progress and logs: that the handler has started."""

    def started(self) -> None: ...


class AttemptRunner(Protocol):
    """Runs one handler call; the executor owns the abort signal and decides the outcome."""

    async def run(self) -> HandlerResult:
        """Run the handler to its end; returns what it produced. Should it raise (it could not run the handler
        at all), the executor ends the attempt with that error."""
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
        context = build_context()  # decodes the input: a bad one fails the attempt before the handler runs
    except BaseException as exc:
        return Raised(ErrorInfo.from_exception(exc))
    with attempt_span(context.info) as span:
        try:
            value = fn(context)
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise TypeError("the handler returned an awaitable: declare it 'async def' so it is awaited")
            return Returned(encode_output(value))
        except BaseException as exc:  # A handler's SystemExit must not end its thread without a result.
            record_outcome(span, exc)
            return Raised(ErrorInfo.from_exception(exc))


async def call_async_handler(fn: Callable[..., object], build_context: Callable[[], TaskContext]) -> HandlerResult:
    """Build the context, await an async handler, encode its value; exceptions become Raised."""
    try:
        context = build_context()
    except BaseException as exc:
        return Raised(ErrorInfo.from_exception(exc))
    with attempt_span(context.info) as span:
        try:
            value = await cast("Awaitable[object]", fn(context))
            return Returned(encode_output(value))
        except BaseException as exc:  # Includes the CancelledError of a hard stop, and a KeyboardInterrupt it raised.
            record_outcome(span, exc)
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
    """Runs an ``async def`` handler as an asyncio task on the handler loop (see _handler_loop).

    Not on the worker's loop: a handler that blocks its loop must not stop the heartbeats. The result
    comes back through ``results``, the worker loop's inbox, which batches the hand-offs of a burst.
    """

    def __init__(self, *, handler_loop: HandlerLoop, results: Inbox, handler: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handler_loop = handler_loop
        self._results = results
        self._handler = handler
        self._task: asyncio.Task[HandlerResult] | None = None  # set on the handler loop's thread

    async def run(self) -> HandlerResult:
        done: asyncio.Future[HandlerResult] = asyncio.get_running_loop().create_future()

        def on_done(task: asyncio.Task[HandlerResult]) -> None:
            cancelled = Raised(ErrorInfo(type="CancelledError", message="the handler task was cancelled"))
            result = cancelled if task.cancelled() else _result_of(task.result)
            self._results.post(_set_result, done, result)

        self._handler_loop.submit(
            call_async_handler(self._fn, self._build_context),
            handler=self._handler,
            name=self._name,
            on_task=self._on_task,
            on_done=on_done,
        )
        # After the start is posted: the handler then starts before the outbox's writer sends this, rather
        # than after. It still precedes the handler's own progress and logs, which cross the same inbox.
        self._events.started()
        try:
            return await done
        except asyncio.CancelledError:
            self.hard_stop()
            raise

    def on_abort(self, reason: AbortReason, message: str) -> None:
        pass  # The signal is thread-safe and wakes awaiters on their own loop.

    def hard_stop(self) -> None:
        # Raises CancelledError at the handler's next await; code that never awaits cannot be stopped.
        self._handler_loop.call(self._cancel)

    def _on_task(self, task: asyncio.Task[HandlerResult]) -> None:
        self._task = task

    def _cancel(self) -> None:
        # Posted after the start, through the same ordered inbox: the task exists by now.
        if self._task is not None:
            self._task.cancel()


class ThreadRunner(_InProcessRunner):
    """Runs a sync handler in one of the executor's handler threads (see _handler_threads)."""

    def __init__(self, *, threads: HandlerThreads, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._threads = threads

    async def run(self) -> HandlerResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[HandlerResult] = loop.create_future()

        def call() -> None:
            result = _result_of(partial(call_sync_handler, self._fn, self._build_context))
            # A closed loop raises RuntimeError: nobody is waiting for this result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_result, done, result)

        self._events.started()
        self._threads.run(self._name, call)
        return await done

    def on_abort(self, reason: AbortReason, message: str) -> None:
        pass  # The signal is thread-safe; the handler sees it directly.

    def hard_stop(self) -> None:
        pass  # Python cannot stop a thread; use process isolation for code that ignores its signal.


def _result_of(get: Callable[[], HandlerResult]) -> HandlerResult:
    """What ``get`` returns, or what it raised as Raised: a result must always come back, or the attempt would
    hold its slot for ever. (The handler's own errors are caught closer to it; this is for ours.)"""
    try:
        return get()
    except BaseException as exc:
        return Raised(ErrorInfo.from_exception(exc))


def _set_result(future: asyncio.Future[HandlerResult], result: HandlerResult) -> None:
    if not future.done():
        future.set_result(result)
