"""The event loop async handlers run on: a thread of its own, watched for handlers that block it.

The worker's own loop keeps the stream, the heartbeats and the outbox. Were handlers to share it, one
``time.sleep(40)`` inside an ``async def`` would stop the heartbeats and cost the worker its lease. Here
a blocking handler stalls only the other async handlers, and the watchdog names it in a warning.

One loop thread serves every async handler of an executor (not one per attempt): a thread per attempt
would cost a thread start per task, and isolating handlers from one another is what process isolation
is for. What an attempt costs on top of running on the worker's loop: two cross-thread hand-offs (the
start, the result), batched so that a burst of attempts wakes each loop once rather than once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger("taskwire.worker.executor")

#: How late the handler loop's callbacks may run before the watchdog calls it blocked.
STALL_THRESHOLD_S = 1.0
#: At most one warning per handler in this long; the stalls in between are counted in the next one.
WARN_INTERVAL_S = 30.0
#: How often the handler loop checks in with the watchdog.
TICK_S = 0.1
#: A stall this long is reported while it lasts (once per stall), before the handler lets go of the loop.
LIVE_WARN_S = 3.0
#: After this many checks in a row with no handler running or started, the loop and the watchdog stop waking up.
IDLE_BEATS = 10


class Inbox:
    """Callables posted from any thread to run on one loop, in order; one wake-up per batch.

    With ``batch_turns``, a post from another event loop wakes this one only at the end of that loop's
    current turn, so that a burst posted in one turn (the attempts of one frame) wakes it once. Waking it
    at the first post lets it take that one alone: the wake-up's write releases the GIL, and this loop's
    thread takes it and drains the inbox before the next post. Only for posters whose turns are short:
    the worker's own loop, never the handler loop, where a handler that blocks would hold the wake-up back.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, batch_turns: bool = False) -> None:
        self._loop = loop
        self._batch_turns = batch_turns
        self._lock = threading.Lock()
        self._items: list[tuple[Callable[..., None], tuple[object, ...]]] = []
        self._waking = False  # a wake-up is on its way: posts until the drain need none of their own

    def post(self, fn: Callable[..., None], *args: object) -> None:
        with self._lock:
            self._items.append((fn, args))
            if self._waking:
                return
            self._waking = True
        poster = _running_loop() if self._batch_turns else None
        if poster is None or poster is self._loop:
            self._wake()
        else:
            poster.call_soon(self._wake)

    def _wake(self) -> None:
        # A closed loop raises RuntimeError: nobody is left to run these.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._waking = False
        for fn, args in items:
            fn(*args)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass
class StallReport:
    """Decides which stalls are worth a warning: every one, but per handler no more often than ``interval_s``."""

    interval_s: float = WARN_INTERVAL_S
    _last: dict[str, float] = field(default_factory=dict)
    _quiet: dict[str, int] = field(default_factory=dict)

    def message(self, handler: str, blocked_s: float, now: float) -> str | None:
        """The warning for a stall of ``blocked_s`` seconds that ``handler`` caused, or None to stay quiet."""
        last = self._last.get(handler)
        if last is not None and now - last < self.interval_s:
            self._quiet[handler] = self._quiet.get(handler, 0) + 1
            return None
        self._last[handler] = now
        quiet = self._quiet.pop(handler, 0)
        text = f"handler {handler!r} blocked its event loop for {blocked_s:.1f} s"
        text += " (a blocking call in an 'async def': run it in a thread, or make the handler sync)"
        if quiet:
            text += f"; {quiet} shorter warning(s) about it were suppressed"
        return text


class HandlerLoop:
    """An event loop in a daemon thread that runs async handler coroutines, with a watchdog.

    While handlers run, every ``tick_s`` the loop runs a callback; one that runs ``threshold_s`` or more
    late means a handler blocked the loop, and a warning names it. Which handler it was is sampled by a
    watchdog thread while the loop is blocked (the task the loop is running then). Once no handler has
    run for ``IDLE_BEATS`` ticks, neither the loop nor the watchdog wakes until the next handler starts.
    """

    def __init__(
        self,
        *,
        threshold_s: float = STALL_THRESHOLD_S,
        tick_s: float = TICK_S,
        live_warn_s: float = LIVE_WARN_S,
        report: StallReport | None = None,
        name: str = "taskwire-handlers",
        on_stall: Callable[[str], None] | None = None,
    ) -> None:
        self._threshold_s = threshold_s
        self._tick_s = tick_s
        self._live_warn_s = live_warn_s
        self._report = report if report is not None else StallReport()
        self._on_stall = on_stall  # told the culprit of every stall, warned of or not
        self._loop = asyncio.new_event_loop()
        self._inbox = Inbox(self._loop, batch_turns=True)  # posted to by the worker's loop
        self._handlers: dict[asyncio.Task[Any], str] = {}  # running handler tasks, by handler name
        self._last_beat = time.monotonic()
        self._beating = False  # a beat is scheduled on the loop
        self._idle_beats = 0  # beats in a row with no handler running or started since the one before
        self._started = False  # a handler started since the last beat
        # Set while the loop beats (and on close): the watchdog sleeps on it otherwise.
        self._active = threading.Event()
        self._suspect: str | None = None
        self._warned_live = False  # this stall was already reported while it lasted
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._thread.start()
        self._watchdog.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def watching(self) -> bool:
        """Whether the loop checks in with the watchdog (while handlers run, and ``IDLE_BEATS`` ticks after)."""
        return self._active.is_set() and not self._stopping.is_set()

    def submit(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        handler: str,
        name: str,
        on_task: Callable[[asyncio.Task[Any]], None],
        on_done: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        """Run ``coro`` as a task on this loop; ``on_task`` then ``on_done`` are called on this loop's thread."""
        self._inbox.post(self._start, coro, handler, name, on_task, on_done)

    def call(self, fn: Callable[..., None], *args: object) -> None:
        """Call ``fn(*args)`` on this loop's thread."""
        self._inbox.post(fn, *args)

    def close(self) -> None:
        """Stop the loop and its watchdog; tasks still running are left (the threads are daemons)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._active.set()  # lets the watchdog see that it stops
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- on the loop thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _start(
        self,
        coro: Coroutine[Any, Any, Any],
        handler: str,
        name: str,
        on_task: Callable[[asyncio.Task[Any]], None],
        on_done: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        task = self._loop.create_task(coro, name=name)
        self._handlers[task] = handler
        task.add_done_callback(self._handlers.pop)
        task.add_done_callback(on_done)
        self._started = True
        if not self._beating:
            self._beating = True
            self._last_beat = time.monotonic()
            due = self._loop.time() + self._tick_s
            self._loop.call_at(due, self._beat, due)
            self._active.set()
        on_task(task)

    def _beat(self, due: float) -> None:
        now = self._loop.time()
        late_s = now - due
        if late_s >= self._threshold_s:
            handler = self._suspect or self._only_handler() or "(unknown)"
            if self._on_stall is not None:
                self._on_stall(handler)
            text = self._report.message(handler, late_s, time.monotonic())
            if text is not None:
                _log.warning(text)
        self._suspect = None
        self._warned_live = False
        self._last_beat = time.monotonic()
        self._idle_beats = 0 if self._handlers or self._started else self._idle_beats + 1
        self._started = False
        if self._idle_beats >= IDLE_BEATS or self._stopping.is_set():
            # Idle: the beats stop (the next start begins them again), and the watchdog sleeps.
            self._beating = False
            self._idle_beats = 0
            self._active.clear()
            return
        self._loop.call_at(now + self._tick_s, self._beat, now + self._tick_s)

    def _only_handler(self) -> str | None:
        names = set(self._handlers.values())
        return names.pop() if len(names) == 1 else None

    # -- on the watchdog thread ------------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            self._active.wait()  # nothing to watch while the loop is idle
            if self._stopping.wait(self._tick_s):
                return
            if not self._active.is_set():
                continue
            blocked_s = time.monotonic() - self._last_beat - self._tick_s
            if self._suspect is None and blocked_s > self._threshold_s / 2:
                # The loop is blocked now: whichever task it is running is the culprit.
                task = asyncio.current_task(self._loop)
                if task is not None:
                    self._suspect = self._handlers.get(task)
            if blocked_s >= self._live_warn_s and not self._warned_live:
                # Said while it lasts: a handler that never lets go would otherwise never be named.
                self._warned_live = True
                handler = self._suspect or self._only_handler() or "(unknown)"
                _log.warning("handler %r has blocked its event loop for %.1f s and still does", handler, blocked_s)
