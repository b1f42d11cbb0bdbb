"""The abort signal a running handler watches: set once, with the reason it was set."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import warnings
from collections.abc import Generator
from typing import Any

from ._errors import WorkerAgentError


class AbortReason(enum.Enum):
    """Why a running handler is asked to stop."""

    #: Cancellation was requested for this task run (for example a client cancelled its execution).
    CANCELLED = "cancelled"
    #: The task run's timeout passed (the server's timer, or the worker's local copy of it).
    TIMED_OUT = "timed_out"
    #: The execution this task run belongs to was cancelled.
    EXECUTION_CANCELLED = "execution_cancelled"
    #: The execution's deadline passed.
    EXECUTION_TIMED_OUT = "execution_timed_out"
    #: A task this one depends on, or a sibling, failed terminally.
    UPSTREAM_FAILED = "upstream_failed"
    #: The server no longer considers this attempt current; nobody will read its result.
    LEASE_LOST = "lease_lost"
    #: The worker is shutting down.
    SHUTDOWN = "shutdown"


class Aborted(WorkerAgentError):
    """Raised by :meth:`AbortSignal.raise_if_aborted`; carries the reason of the abort."""

    def __init__(self, reason: AbortReason, message: str = "") -> None:
        super().__init__(f"aborted: {reason.value}" + (f" ({message})" if message else ""))
        self.reason = reason
        self.message = message


class AbortSignal:
    """Fires once, from any thread; handlers wait on it from asyncio code or from threads.

    A handler receives its signal as ``ctx.abort``. It never creates or fires one: the worker fires
    it when the attempt is cancelled, times out, loses its lease or the worker shuts down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired = threading.Event()
        self._reason: AbortReason | None = None
        self._message = ""
        # Futures of coroutines awaiting the signal, each with the loop it belongs to: the signal may
        # fire on another thread (or another loop), so they are resolved with call_soon_threadsafe.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []

    @property
    def reason(self) -> AbortReason | None:
        """Why the signal fired, or None while it has not."""
        return self._reason

    @property
    def message(self) -> str:
        """A human-readable explanation that came with the abort (may be empty)."""
        return self._message

    def is_set(self) -> bool:
        """True once the signal has fired."""
        return self._fired.is_set()

    def raise_if_aborted(self) -> None:
        """Raise :class:`Aborted` (with the reason) if the signal has fired; otherwise do nothing."""
        reason = self._reason
        if reason is not None:
            raise Aborted(reason, self._message)

    def wait(self, timeout_s: float | None = None) -> AbortWait:
        """Wait until the signal fires or ``timeout_s`` passes; the result is true when it fired.

        In an ``async def`` handler, await it: ``if await ctx.abort.wait(5): ...``.
        In a sync handler (a thread without a running event loop) the call itself blocks, like
        ``threading.Event.wait``: ``if ctx.abort.wait(5): ...``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return AbortWait(self, timeout_s, resolved=self._fired.wait(timeout_s))
        # On an event loop thread blocking would freeze every other attempt and the heartbeats, so the
        # wait is deferred until it is awaited.
        return AbortWait(self, timeout_s, resolved=None)

    async def _wait_async(self, timeout_s: float | None) -> bool:
        loop = asyncio.get_running_loop()
        # Resolved True by the signal, False by the timer: awaited directly, so a firing signal resumes
        # the handler in the loop's next turn.
        future: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            if self._reason is not None:
                return True
            entry = (loop, future)
            self._waiters.append(entry)
        timer = loop.call_later(timeout_s, _resolve, future, False) if timeout_s is not None else None
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
            future.cancel()

    def _fire(self, reason: AbortReason, message: str = "") -> bool:
        """Set the signal; the first reason wins. Returns False when it had already fired."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            self._message = message
            waiters, self._waiters = self._waiters, []
            self._fired.set()
        for loop, future in waiters:
            # A closed loop raises RuntimeError: nobody is left awaiting that future.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, True)
        return True

    def __repr__(self) -> str:
        state = f"fired: {self._reason.value}" if self._reason is not None else "not fired"
        return f"<AbortSignal {state}>"


def _resolve(future: asyncio.Future[bool], fired: bool) -> None:
    if not future.done():
        future.set_result(fired)


class AbortWait:
    """The result of :meth:`AbortSignal.wait`: await it in async code, test its truth in sync code."""

    __slots__ = ("_awaited", "_resolved", "_signal", "_timeout_s")

    def __init__(self, signal: AbortSignal, timeout_s: float | None, *, resolved: bool | None) -> None:
        self._signal = signal
        self._timeout_s = timeout_s
        self._resolved = resolved
        self._awaited = False

    def __await__(self) -> Generator[Any, None, bool]:
        self._awaited = True
        if self._resolved is not None:
            return self._resolved
        return (yield from self._signal._wait_async(self._timeout_s).__await__())

    def __bool__(self) -> bool:
        if self._resolved is None:
            self._awaited = True  # the mistake is reported by this exception; no warning on top
            raise TypeError("AbortSignal.wait() was called on an event loop thread: use 'await signal.wait(...)'")
        return self._resolved

    def __del__(self) -> None:
        # Like a coroutine never awaited: on an event loop thread, forgetting 'await' silently waits for nothing.
        if self._resolved is None and not self._awaited:
            warnings.warn("AbortSignal.wait() was never awaited", RuntimeWarning, stacklevel=2)


class AbortController:
    """The side that fires an :class:`AbortSignal`; the executor and the test harness hold one each."""

    def __init__(self) -> None:
        self.signal = AbortSignal()

    def abort(self, reason: AbortReason, message: str = "") -> bool:
        """Fire the signal; returns False when it had already fired (the first reason is kept)."""
        return self.signal._fire(reason, message)
