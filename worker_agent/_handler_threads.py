"""The threads sync handlers run in: daemon threads, each kept a while to run the next handler.

Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so one handler that ignores its
abort signal would keep the worker from ever exiting. Not a thread started per attempt either: starting
one costs a ``clone`` and a wait on the loop's thread until the new thread has started, where handing a
call to a thread that waits for work costs one wake-up.

There is no bound here: the executor's slots bound how many handlers run at once, and a handler that
never returns keeps its thread while the next one gets another. Each call runs in a fresh
``contextvars.Context``, so what one handler sets there is not seen by the next in the same thread;
``threading.local`` values do stay with the thread, as in any pool of threads.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable

#: How long a thread with nothing to run waits for a call before it ends.
IDLE_S = 30.0

_Call = tuple[str, Callable[[], None]]


class HandlerThreads:
    """Runs each call in a daemon thread: one that waits for work if there is one, else a new one."""

    def __init__(self, *, idle_s: float = IDLE_S) -> None:
        self._idle_s = idle_s
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Threads waiting for a call, less the calls already queued for them. Changed under the lock, as
        # are the puts, so a waiting thread that times out can tell whether a call is still on its way.
        self._waiting = 0
        self._closed = False

    def run(self, name: str, call: Callable[[], None]) -> None:
        """Run ``call`` in a thread named ``name``; returns at once."""
        with self._lock:
            if self._waiting:
                self._waiting -= 1
                self._calls.put((name, call))
                return
        threading.Thread(target=self._serve, args=(name, call), name=name, daemon=True).start()

    @property
    def waiting(self) -> int:
        """Threads waiting for a call."""
        return self._waiting

    def close(self) -> None:
        """Let the waiting threads end now; those running a call end when it returns."""
        with self._lock:
            self._closed = True
            for _ in range(self._waiting):
                self._calls.put(None)
            self._waiting = 0

    def _serve(self, name: str, call: Callable[[], None]) -> None:
        thread = threading.current_thread()
        while True:
            thread.name = name
            contextvars.Context().run(call)
            thread.name = "taskwire-handler-waiting"
            with self._lock:
                if self._closed:
                    return
                self._waiting += 1
            next_call = self._next()
            if next_call is None:
                return
            name, call = next_call

    def _next(self) -> _Call | None:
        """The next call for this thread, or None when it should end (idle too long, or closed)."""
        while True:
            try:
                return self._calls.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._calls.empty():  # no call was queued for this thread meanwhile: it ends
                        self._waiting -= 1
                        return None
