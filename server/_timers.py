"""Timers on one heap and one asyncio task, not one task per timer.

Retries, attempt timeouts, cancel grace periods, execution deadlines and leases
all go through here. Time is monotonic seconds; keys make timers cancellable
and re-armable (arming a key again replaces its timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

TimerCallback = Callable[[], None]


class Timers:
    def __init__(self, *, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, TimerCallback]] = {}
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._live)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskwire-timers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._heap.clear()
        self._live.clear()

    def arm(self, key: Hashable, at: float, callback: TimerCallback) -> None:
        """Call `callback` at monotonic time `at` (or at once if past), replacing any timer with this key."""
        token = next(self._counter)
        self._live[key] = (token, callback)
        heapq.heappush(self._heap, (at, token, key))
        if self._heap[0][1] == token:
            self._wakeup.set()

    def arm_in(self, key: Hashable, delay_s: float, callback: TimerCallback) -> None:
        self.arm(key, self._monotonic() + max(delay_s, 0.0), callback)

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

    async def _run(self) -> None:
        while True:
            for callback in self._pop_due(self._monotonic()):
                try:
                    callback()
                except Exception:
                    log.exception("timer callback failed")
            self._wakeup.clear()
            while self._heap and self._heap[0][2] not in self._live:
                heapq.heappop(self._heap)  # drop disarmed entries so they do not wake us
            delay = self._heap[0][0] - self._monotonic() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)
