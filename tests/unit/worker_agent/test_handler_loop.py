"""The handler loop's watchdog: a handler that blocks the loop is named in a warning, once per stall."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskwire.worker._handler_loop import HandlerLoop, Inbox, StallReport
from tests.harness import wait_for

LOGGER = "taskwire.worker.executor"


def test_the_first_stall_of_a_handler_is_reported_with_its_length() -> None:
    report = StallReport(interval_s=30.0)
    text = report.message("resize", 12.34, now=100.0)
    assert text is not None
    assert text.startswith("handler 'resize' blocked its event loop for 12.3 s")


def test_stalls_within_the_interval_are_counted_into_the_next_warning() -> None:
    report = StallReport(interval_s=30.0)
    assert report.message("resize", 2.0, now=100.0) is not None
    assert report.message("resize", 3.0, now=110.0) is None
    assert report.message("resize", 4.0, now=120.0) is None
    # Another handler has a budget of its own.
    assert report.message("other", 2.0, now=121.0) is not None
    text = report.message("resize", 5.0, now=131.0)
    assert text is not None
    assert "for 5.0 s" in text
    assert "2 shorter warning(s) about it were suppressed" in text
    assert report.message("resize", 5.0, now=162.0) is not None
    assert "suppressed" not in (report.message("resize", 1.0, now=200.0) or "")


@pytest.fixture
def handler_loop() -> Iterator[HandlerLoop]:
    loop = HandlerLoop(threshold_s=0.3, tick_s=0.05, name="test-handlers")
    yield loop
    loop.close()


def _run(handler_loop: HandlerLoop, handler: str, coro: Any) -> threading.Event:
    finished = threading.Event()
    handler_loop.submit(
        coro, handler=handler, name=handler, on_task=lambda task: None, on_done=lambda task: finished.set()
    )
    return finished


async def _blocks(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 (the blocking call is the fault under test)


async def _polite() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def test_a_handler_that_blocks_the_loop_is_named(handler_loop: HandlerLoop, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert _run(handler_loop, "polite", _polite()).wait(5)
    assert _run(handler_loop, "blocker", _blocks(0.8)).wait(5)
    wait_for(lambda: _stalls(caplog), what="the stall warning")
    (record,) = _stalls(caplog)
    assert record.levelno == logging.WARNING
    # At least the 0.8 s it slept; a loaded machine may wake the loop later still.
    blocked = re.match(r"handler 'blocker' blocked its event loop for (\d+\.\d) s", record.getMessage())
    assert blocked is not None, record.getMessage()
    assert float(blocked.group(1)) >= 0.7, record.getMessage()


def test_a_loop_that_is_never_blocked_warns_nothing(
    handler_loop: HandlerLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert _run(handler_loop, "polite", _polite()).wait(5)
    assert not _stalls(caplog)


def _stalls(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "blocked its event loop" in r.getMessage()]


def test_an_idle_loop_stops_waking_and_a_later_stall_is_still_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler_loop = HandlerLoop(threshold_s=0.3, tick_s=0.01, name="test-idle")
    try:
        assert not handler_loop.watching  # nothing has run yet: no beats, no watchdog ticks
        assert _run(handler_loop, "polite", _polite()).wait(5)
        # IDLE_BEATS ticks after the last handler, the loop and the watchdog go quiet.
        wait_for(lambda: not handler_loop.watching, what="the handler loop to go idle")
        assert _run(handler_loop, "blocker", _blocks(0.8)).wait(5)
        wait_for(lambda: _stalls(caplog), what="the stall warning")
        (record,) = _stalls(caplog)
        assert record.getMessage().startswith("handler 'blocker' blocked its event loop"), record.getMessage()
        wait_for(lambda: not handler_loop.watching, what="the handler loop to go idle again")
    finally:
        handler_loop.close()


@pytest.fixture
def target_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as the handler loop does."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_what_another_loop_posts_in_one_turn_is_taken_in_one_drain(target_loop: asyncio.AbstractEventLoop) -> None:
    inbox = Inbox(target_loop, batch_turns=True)
    posted: list[int] = []
    drains: list[list[int]] = []  # what had been posted by the time each item ran
    done = threading.Event()

    def item(index: int) -> None:
        drains.append(list(posted))
        if index == 9:
            done.set()

    async def one_turn() -> None:
        for index in range(10):  # no await between the posts: one turn of this loop
            inbox.post(item, index)
            posted.append(index)
            time.sleep(0.001)  # noqa: ASYNC251 (room for the target to run, were it woken at the first post)

    asyncio.run(one_turn())
    assert done.wait(5)
    assert drains[0] == list(range(10)), "the target loop ran an item before the poster's turn had ended"


def test_a_post_from_a_plain_thread_or_from_its_own_loop_wakes_the_loop_at_once(
    target_loop: asyncio.AbstractEventLoop,
) -> None:
    inbox = Inbox(target_loop, batch_turns=True)
    from_thread, from_loop = threading.Event(), threading.Event()
    threading.Thread(target=inbox.post, args=(from_thread.set,)).start()
    assert from_thread.wait(5)
    target_loop.call_soon_threadsafe(inbox.post, from_loop.set)
    assert from_loop.wait(5)
