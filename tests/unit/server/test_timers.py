"""One heap of timers: due order, re-arming replaces, disarming cancels."""

from __future__ import annotations

import asyncio
import time

from taskwire.server._timers import Timers


async def test_timers_fire_in_due_order_and_rearming_a_key_replaces_it() -> None:
    timers = Timers(monotonic=time.monotonic)
    timers.start()
    fired: list[str] = []
    done = asyncio.Event()
    now = time.monotonic()

    def last() -> None:
        fired.append("late")
        done.set()

    timers.arm("late", now + 0.03, last)
    timers.arm("early", now + 0.01, lambda: fired.append("early"))
    timers.arm("replaced", now + 0.001, lambda: fired.append("replaced-old"))
    timers.arm("replaced", now + 0.02, lambda: fired.append("replaced-new"))
    timers.arm("disarmed", now + 0.005, lambda: fired.append("disarmed"))
    timers.disarm("disarmed")
    await asyncio.wait_for(done.wait(), 5)
    await timers.close()
    assert fired == ["early", "replaced-new", "late"]


async def test_a_timer_armed_earlier_than_the_current_wait_wakes_the_loop() -> None:
    timers = Timers(monotonic=time.monotonic)
    timers.start()
    done = asyncio.Event()
    timers.arm("far", time.monotonic() + 60, lambda: None)
    await asyncio.sleep(0)
    timers.arm_in("near", 0.0, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert timers.is_armed("far")
    assert not timers.is_armed("near")
    await timers.close()


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    timers = Timers(monotonic=time.monotonic)
    timers.start()
    done = asyncio.Event()

    def broken() -> None:
        raise RuntimeError("broken callback")

    timers.arm_in("broken", 0.0, broken)
    timers.arm_in("fine", 0.001, done.set)
    await asyncio.wait_for(done.wait(), 5)
    await timers.close()
