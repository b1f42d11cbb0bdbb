"""The engine's one seam to time: the wall clock for records, a monotonic clock for leases and timers.

Nothing else in the engine reads a clock or sleeps. `SystemClock` runs callbacks
on the asyncio loop; `ManualClock` stands still until a test calls
`advance(seconds)`, which runs the callbacks that fall due in time order, so
leases, timeouts, retries and grace periods fire deterministically without
real waiting. Callbacks are scheduled (`call_at`) rather than awaited, so a
timer costs no task of its own and the manual clock needs no event loop turn
to fire one.

May use: the standard library only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


def aware(text: object, field: str) -> datetime:
    """A wall-clock time another replica wrote (ISO 8601, with its offset); ValueError naming `field` otherwise."""
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        raise ValueError(f"{field}: {text!r} has no UTC offset")
    return value


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall clock, timezone-aware: what records and history events are stamped with."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what leases and timers are measured on."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        """Run `callback` once the monotonic clock reaches `when` (soon, if it already has)."""


class SystemClock:
    """The system's clocks, with a wall clock that never goes back.

    Records and history are stamped with `now()`; a wall clock that an operator or NTP steps back would
    stamp later events before earlier ones (an attempt ending before it started). After a step back,
    `now()` advances with the monotonic clock from the last time it gave until the system's wall clock
    catches up; a step forward is taken as it is.
    """

    def __init__(self) -> None:
        self._last_wall = datetime.min.replace(tzinfo=UTC)
        self._last_mono = time.monotonic()

    def now(self) -> datetime:
        wall, mono = datetime.now(UTC), time.monotonic()
        if wall < self._last_wall:  # stepped back: go on from the last time given, at the monotonic pace
            wall = self._last_wall + timedelta(seconds=mono - self._last_mono)
        self._last_wall, self._last_mono = wall, mono
        return wall

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(max(when - time.monotonic(), 0.0), callback)


@dataclass(eq=False)
class _Scheduled:
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class ManualClock:
    """A clock that moves only when told to: `advance(seconds)` fires what falls due, in order."""

    wall: datetime = datetime(2030, 1, 1, tzinfo=UTC)
    mono: float = 1000.0
    _due: list[tuple[float, int, _Scheduled]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        scheduled = _Scheduled(callback)
        heapq.heappush(self._due, (when, next(self._order), scheduled))
        return scheduled

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`, running each due callback at its own time."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        target = self.mono + seconds
        while self._due and self._due[0][0] <= target:
            when, _, scheduled = heapq.heappop(self._due)
            if scheduled.cancelled:
                continue
            self._move_to(max(when, self.mono))
            scheduled.callback()
        self._move_to(target)

    def jump(self, seconds: float) -> None:
        """Move both clocks forward by `seconds` at once, then run what fell due meanwhile, late: what a
        process stopped for that long (SIGSTOP, a suspended machine) sees when it runs again."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._move_to(self.mono + seconds)
        self.advance(0)

    def pending(self) -> int:
        """Callbacks still scheduled (not run, not cancelled)."""
        return sum(not scheduled.cancelled for _, _, scheduled in self._due)

    def _move_to(self, mono: float) -> None:
        self.wall += timedelta(seconds=mono - self.mono)
        self.mono = mono
