"""Timers on one heap, driven by the clock seam: one scheduled callback at a time, not one task per timer.

Retries, attempt timeouts, cancel grace periods, execution deadlines, schedules
and leases all go through here. Time is the clock's monotonic seconds; keys make
timers cancellable and re-armable (arming a key again replaces its timer). Only
the earliest live timer is handed to the clock (`Clock.call_at`); when it fires,
every timer that is due runs and the next earliest is handed over. With a
`ManualClock` they fire when a test advances it, and only then.

A wakeup far later than asked for (`OVERSLEPT_S`) means the process did not run
meanwhile (it was stopped, or the machine slept): before the due timers fire,
`overslept` tells the engine, so that leases are not judged on heartbeats that
are still waiting to be read.

May use: the clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Hashable
from datetime import datetime

from ._clock import Cancellable, Clock

log = logging.getLogger(__name__)

TimerCallback = Callable[[], None]

# A wakeup this much later than asked for is not scheduling noise: the process did not run meanwhile.
OVERSLEPT_S = 0.5


def _ignore_oversleep(late_s: float) -> None:
    pass


class Timers:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, TimerCallback]] = {}
        self._counter = itertools.count()
        self._wakeup: Cancellable | None = None
        self._wakeup_at: float | None = None
        self._running = False
        # Wired by the engine: the timers woke `late_s` seconds after they were due (the process stood still).
        self.overslept: Callable[[float], None] = _ignore_oversleep

    def __len__(self) -> int:
        return len(self._live)

    def start(self) -> None:
        """Timers armed before now (during recovery) start counting from here."""
        self._running = True
        self._reschedule()

    async def close(self) -> None:
        self._running = False
        self._cancel_wakeup()
        self._heap.clear()
        self._live.clear()

    def arm(self, key: Hashable, at: float, callback: TimerCallback) -> None:
        """Call `callback` at monotonic time `at` (or at once if past), replacing any timer with this key."""
        token = next(self._counter)
        self._live[key] = (token, callback)
        heapq.heappush(self._heap, (at, token, key))
        if self._heap[0][1] == token:
            self._reschedule()

    def arm_in(self, key: Hashable, delay_s: float, callback: TimerCallback) -> None:
        self.arm(key, self._clock.monotonic() + max(delay_s, 0.0), callback)

    def arm_at(self, key: Hashable, when: datetime, callback: TimerCallback) -> None:
        """Arm for a wall-clock time, placed on the monotonic clock the timers run on."""
        self.arm_in(key, (when - self._clock.now()).total_seconds(), callback)

    def disarm(self, key: Hashable) -> None:
        # The heap entry stays and is skipped when it surfaces: cheaper than a heap delete.
        self._live.pop(key, None)

    def is_armed(self, key: Hashable) -> bool:
        return key in self._live

    def _pop_due(self, now: float) -> list[TimerCallback]:
        due: list[TimerCallback] = []
        while self._heap and self._heap[0][0] <= now:
            _, token, key = heapq.heappop(self._heap)
            live = self._live.get(key)
            if live is not None and live[0] == token:
                del self._live[key]
                due.append(live[1])
        return due

    def _fire(self) -> None:
        asked_for = self._wakeup_at
        self._wakeup = self._wakeup_at = None
        now = self._clock.monotonic()
        if asked_for is not None and now - asked_for > OVERSLEPT_S:
            log.warning("timers woke %.1fs late: the server did not run meanwhile", now - asked_for)
            self.overslept(now - asked_for)
        for callback in self._pop_due(now):
            try:
                callback()
            except Exception:
                log.exception("timer callback failed")
        self._reschedule()

    def _reschedule(self) -> None:
        """Hand the earliest live timer to the clock (if it is not the one handed over already)."""
        if not self._running:
            return
        while self._heap and self._live.get(self._heap[0][2], (None,))[0] != self._heap[0][1]:
            heapq.heappop(self._heap)  # drop disarmed and replaced entries so they do not wake us
        if not self._heap:
            self._cancel_wakeup()
            return
        at = self._heap[0][0]
        if self._wakeup is not None and self._wakeup_at == at:
            return
        self._cancel_wakeup()
        self._wakeup, self._wakeup_at = self._clock.call_at(at, self._fire), at

    def _cancel_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup = self._wakeup_at = None
