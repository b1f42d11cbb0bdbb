"""The abort signal: fires once, keeps its first reason, wakes async and thread waiters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from taskwire.worker import Aborted, AbortReason
from taskwire.worker._abort import AbortController


def test_a_fresh_signal_is_not_set() -> None:
    signal = AbortController().signal
    assert not signal.is_set()
    assert signal.reason is None
    signal.raise_if_aborted()  # does nothing


def test_firing_sets_the_reason_and_raise_if_aborted_carries_it() -> None:
    controller = AbortController()
    assert controller.abort(AbortReason.UPSTREAM_FAILED, "sibling failed")
    signal = controller.signal
    assert signal.is_set()
    assert signal.reason is AbortReason.UPSTREAM_FAILED
    assert signal.message == "sibling failed"
    with pytest.raises(Aborted) as caught:
        signal.raise_if_aborted()
    assert caught.value.reason is AbortReason.UPSTREAM_FAILED
    assert caught.value.message == "sibling failed"


def test_the_first_reason_wins() -> None:
    controller = AbortController()
    assert controller.abort(AbortReason.TIMED_OUT)
    assert not controller.abort(AbortReason.SHUTDOWN)
    assert controller.signal.reason is AbortReason.TIMED_OUT


async def test_await_wait_returns_true_when_fired_later() -> None:
    controller = AbortController()
    waiter = asyncio.create_task(_await_wait(controller, None))
    await asyncio.sleep(0)  # let the waiter register
    assert not waiter.done()
    controller.abort(AbortReason.CANCELLED)
    assert await asyncio.wait_for(waiter, 5) is True


async def _await_wait(controller: AbortController, timeout_s: float | None) -> bool:
    return await controller.signal.wait(timeout_s)


async def test_await_wait_returns_false_on_timeout() -> None:
    assert await AbortController().signal.wait(0.01) is False


async def test_await_wait_on_a_fired_signal_returns_at_once() -> None:
    controller = AbortController()
    controller.abort(AbortReason.SHUTDOWN)
    assert await controller.signal.wait() is True


async def test_a_signal_fired_from_another_thread_wakes_an_async_waiter() -> None:
    controller = AbortController()
    waiter = asyncio.create_task(_await_wait(controller, None))
    await asyncio.sleep(0)
    thread = threading.Thread(target=controller.abort, args=(AbortReason.LEASE_LOST,))
    thread.start()
    assert await asyncio.wait_for(waiter, 5) is True
    thread.join()


async def test_a_cancelled_async_waiter_leaves_no_trace() -> None:
    controller = AbortController()
    waiter = asyncio.create_task(_await_wait(controller, None))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert controller.signal._waiters == []
    assert controller.abort(AbortReason.CANCELLED)


async def test_many_async_waiters_all_wake() -> None:
    controller = AbortController()
    waiters = [asyncio.create_task(_await_wait(controller, None)) for _ in range(20)]
    await asyncio.sleep(0)
    controller.abort(AbortReason.EXECUTION_TIMED_OUT)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True] * 20


def test_blocking_wait_in_a_thread_returns_when_fired() -> None:
    controller = AbortController()
    results: list[bool] = []
    entered = threading.Event()

    def sync_handler() -> None:
        entered.set()
        results.append(bool(controller.signal.wait(30)))

    thread = threading.Thread(target=sync_handler)
    thread.start()
    assert entered.wait(5)
    controller.abort(AbortReason.CANCELLED)
    thread.join(5)
    assert not thread.is_alive()
    assert results == [True]


def test_blocking_wait_times_out_false() -> None:
    assert not AbortController().signal.wait(0.01)


async def test_an_unawaited_wait_on_the_loop_thread_refuses_to_be_tested() -> None:
    pending = AbortController().signal.wait(0.01)
    with pytest.raises(TypeError, match="await"):
        bool(pending)
    assert await pending is False  # awaiting it is still fine


def test_repr_says_whether_it_fired() -> None:
    controller = AbortController()
    assert "not fired" in repr(controller.signal)
    controller.abort(AbortReason.SHUTDOWN)
    assert "shutdown" in repr(controller.signal)


async def test_forgetting_to_await_wait_warns() -> None:
    with pytest.warns(RuntimeWarning, match="never awaited"):
        AbortController().signal.wait(1)  # dropped at once: CPython finalises it right here
