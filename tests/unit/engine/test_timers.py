"""One heap of timers: due order, re-arming replaces, disarming cancels; driven by the clock seam."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from taskwire.server.engine import ManualClock, SystemClock, Timers


def started() -> tuple[ManualClock, Timers]:
    clock = ManualClock()
    timers = Timers(clock=clock)
    timers.start()
    return clock, timers


async def test_timers_fire_in_due_order_and_rearming_a_key_replaces_it() -> None:
    clock, timers = started()
    fired: list[str] = []
    now = clock.monotonic()
    timers.arm("late", now + 0.03, lambda: fired.append("late"))
    timers.arm("early", now + 0.01, lambda: fired.append("early"))
    timers.arm("replaced", now + 0.001, lambda: fired.append("replaced-old"))
    timers.arm("replaced", now + 0.02, lambda: fired.append("replaced-new"))
    timers.arm("disarmed", now + 0.005, lambda: fired.append("disarmed"))
    timers.disarm("disarmed")
    clock.advance(0.015)
    assert fired == ["early"]
    clock.advance(1)
    await timers.close()
    assert fired == ["early", "replaced-new", "late"]


async def test_a_timer_armed_earlier_than_the_current_wait_fires_first() -> None:
    clock, timers = started()
    fired: list[str] = []
    timers.arm("far", clock.monotonic() + 60, lambda: fired.append("far"))
    timers.arm_in("near", 0.0, lambda: fired.append("near"))
    clock.advance(0)
    assert fired == ["near"]
    assert timers.is_armed("far")
    assert not timers.is_armed("near")
    await timers.close()


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock, timers = started()
    fired: list[str] = []

    def broken() -> None:
        raise RuntimeError("broken callback")

    timers.arm_in("broken", 0.0, broken)
    timers.arm_in("fine", 0.001, lambda: fired.append("fine"))
    clock.advance(0.001)
    assert fired == ["fine"]
    await timers.close()


async def test_wall_clock_times_are_placed_on_the_monotonic_clock() -> None:
    clock, timers = started()
    fired: list[str] = []
    timers.arm_at("at", clock.now() + timedelta(seconds=30), lambda: fired.append("at"))
    clock.advance(29.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == ["at"]
    await timers.close()


async def test_nothing_fires_before_start_or_after_close() -> None:
    clock = ManualClock()
    timers = Timers(clock=clock)
    fired: list[str] = []
    timers.arm_in("early", 1, lambda: fired.append("early"))
    clock.advance(5)
    assert fired == []
    timers.start()  # armed during recovery: due already, so it fires on the next turn of the clock
    clock.advance(0)
    assert fired == ["early"]
    timers.arm_in("late", 1, lambda: fired.append("late"))
    await timers.close()
    clock.advance(5)
    assert fired == ["early"]
    assert clock.pending() == 0


async def test_on_the_system_clock_timers_run_on_the_event_loop() -> None:
    timers = Timers(clock=SystemClock())
    timers.start()
    done = asyncio.Event()
    fired: list[str] = []

    def last() -> None:
        fired.append("second")
        done.set()

    timers.arm_in("second", 0.02, last)
    timers.arm_in("first", 0.001, lambda: fired.append("first"))
    await asyncio.wait_for(done.wait(), 5)
    await timers.close()
    assert fired == ["first", "second"]
