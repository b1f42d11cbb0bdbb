"""The bounded queue's admission rules: capacity, fail fast, first come first served, deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from taskwire.server.domain import AdmissionTimeout, QueueFull, ShuttingDown
from taskwire.server.engine._admission import AdmissionQueue
from taskwire.server.engine._ready import ReadyQueues


async def _yield_until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds; nothing here waits on a clock."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def _until_waiting(queue: AdmissionQueue, count: int) -> None:
    await _yield_until(lambda: queue.stats().waiting_submitters >= count)


async def test_admits_up_to_capacity_then_fails_fast_with_size_and_capacity() -> None:
    queue = AdmissionQueue(capacity=3)
    await queue.admit(2, wait=False, timeout_s=None)
    await queue.admit(1, wait=False, timeout_s=None)
    with pytest.raises(QueueFull, match="3 of 3") as raised:
        await queue.admit(1, wait=False, timeout_s=None)
    assert (raised.value.size, raised.value.capacity, raised.value.requested) == (3, 3, 1)
    stats = queue.stats()
    assert (stats.size, stats.full, stats.empty) == (3, True, False)


async def test_waiters_resume_in_arrival_order_as_room_frees() -> None:
    queue = AdmissionQueue(capacity=1)
    await queue.admit(1, wait=False, timeout_s=None)
    admitted: list[int] = []

    async def submit(number: int) -> None:
        await queue.admit(1, wait=True, timeout_s=5)
        admitted.append(number)

    tasks = []
    for number in range(5):
        tasks.append(asyncio.create_task(submit(number)))
        await _until_waiting(queue, number + 1)
    for expected in range(5):
        queue.release(1)
        await _yield_until(lambda: len(admitted) > expected)  # noqa: B023 - awaited within this iteration
        assert queue.size == 1
    await asyncio.gather(*tasks)
    assert admitted == [0, 1, 2, 3, 4]


async def test_a_fail_fast_submit_does_not_jump_the_waiting_line() -> None:
    queue = AdmissionQueue(capacity=2)
    await queue.admit(2, wait=False, timeout_s=None)
    waiter = asyncio.create_task(queue.admit(2, wait=True, timeout_s=5))
    await _until_waiting(queue, 1)
    queue.release(1)  # room for one, but the first in line needs two
    with pytest.raises(QueueFull):
        await queue.admit(1, wait=False, timeout_s=None)
    queue.release(1)
    await waiter
    assert queue.size == 2


async def test_a_waiter_whose_deadline_passes_gets_admission_timeout_and_reserves_nothing() -> None:
    queue = AdmissionQueue(capacity=1)
    await queue.admit(1, wait=False, timeout_s=None)
    with pytest.raises(AdmissionTimeout, match="no room"):
        await queue.admit(1, wait=True, timeout_s=0.01)
    assert queue.stats().waiting_submitters == 0
    assert queue.size == 1


async def test_a_timed_out_large_waiter_lets_smaller_ones_behind_it_in() -> None:
    queue = AdmissionQueue(capacity=2)
    await queue.admit(1, wait=False, timeout_s=None)
    big = asyncio.create_task(queue.admit(2, wait=True, timeout_s=0.05))
    await _until_waiting(queue, 1)
    small = asyncio.create_task(queue.admit(1, wait=True, timeout_s=5))
    await _until_waiting(queue, 2)
    with pytest.raises(AdmissionTimeout):
        await big
    await small
    assert queue.size == 2


async def test_a_submit_larger_than_capacity_gets_an_empty_queue_rather_than_waiting_forever() -> None:
    queue = AdmissionQueue(capacity=2)
    await queue.admit(5, wait=False, timeout_s=None)
    assert queue.size == 5
    with pytest.raises(QueueFull):
        await queue.admit(1, wait=False, timeout_s=None)


async def test_a_cancelled_waiter_leaves_the_line_and_frees_what_it_was_given() -> None:
    queue = AdmissionQueue(capacity=1)
    await queue.admit(1, wait=False, timeout_s=None)
    waiter = asyncio.create_task(queue.admit(1, wait=True, timeout_s=5))
    await _until_waiting(queue, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.stats().waiting_submitters == 0
    queue.release(1)
    assert queue.size == 0


async def test_close_fails_waiters_and_new_submits_with_shutting_down() -> None:
    queue = AdmissionQueue(capacity=1)
    await queue.admit(1, wait=False, timeout_s=None)
    waiter = asyncio.create_task(queue.admit(1, wait=True, timeout_s=5))
    await _until_waiting(queue, 1)
    queue.close()
    with pytest.raises(ShuttingDown):
        await waiter
    with pytest.raises(ShuttingDown):
        await queue.admit(1, wait=False, timeout_s=None)


def test_ready_queues_are_fifo_within_a_handler() -> None:
    ready = ReadyQueues()
    for task_run_id in ("a1", "a2", "a3"):
        ready.push("a", task_run_id)
    ready.push("b", "b1")
    assert list(ready.handlers_with_work()) == ["a", "b"]
    assert [queued.id if (queued := ready.popleft("a")) else None for _ in range(4)] == ["a1", "a2", "a3", None]
    assert list(ready.handlers_with_work()) == ["b"]
