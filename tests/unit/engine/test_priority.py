"""Priority: a handler's queue dispatches higher priorities first, FIFO within one, and a waiting task ages up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from taskwire.server.domain import DEFAULT_PRIORITY, MAX_PRIORITY, ExecutionSpec, RetryPolicy, ValidationError
from taskwire.server.engine import ManualClock
from taskwire.server.store import MemoryStore
from tests.unit.engine.support import CONFIG, FakeWorker, Rig, task, until

AGING_S = CONFIG.priority_aging.total_seconds()


async def _rig(**config: object) -> AsyncIterator[Rig]:
    store = MemoryStore()
    await store.open()
    started = await Rig(store, ManualClock(), replace(CONFIG, **config)).start()  # type: ignore[arg-type]
    try:
        yield started
    finally:
        await started.close()
        await store.close()


@pytest.fixture
async def strict() -> AsyncIterator[Rig]:
    """No aging: strict priority."""
    async for rig in _rig(priority_aging=timedelta(0)):
        yield rig


@pytest.fixture
async def all_cold() -> AsyncIterator[Rig]:
    """Every durable, untouched queued execution leaves memory."""
    async for rig in _rig(hot_queue_size=0):
        yield rig


async def _submit(rig: Rig, priority: int, name: str) -> str:
    return await rig.submit(task(priority=priority), name=name)


async def _run_one_at_a_time(rig: Rig, worker: FakeWorker, count: int) -> list[str]:
    """Let `worker` (one slot) run `count` tasks, completing each; the execution names in dispatch order."""
    names = []
    for done in range(count):
        await until(lambda: len(worker.invocations) > done, f"dispatch {done + 1}")  # noqa: B023
        invoked = worker.invocations[done]
        names.append((await rig.engine.get(invoked.task_run.execution_id)).execution.name)
        worker.complete(invoked)
    return names


async def test_higher_priority_first_and_first_come_first_served_within_one(rig: Rig) -> None:
    for priority, name in ((5, "a"), (1, "b"), (9, "c"), (9, "d"), (5, "e"), (1, "f")):
        await _submit(rig, priority, name)
    worker = rig.connect(slots=1)
    assert await _run_one_at_a_time(rig, worker, 6) == ["c", "d", "a", "e", "b", "f"]


async def test_a_waiting_task_rises_one_priority_per_aging_interval(rig: Rig) -> None:
    await _submit(rig, 1, "old-low")
    rig.advance(4 * AGING_S)  # effective priority 1 + 4 = 5, queued before anything below
    await _submit(rig, DEFAULT_PRIORITY, "new-default")
    await _submit(rig, DEFAULT_PRIORITY + 1, "new-six")
    worker = rig.connect(slots=1)
    assert await _run_one_at_a_time(rig, worker, 3) == ["new-six", "old-low", "new-default"]


async def test_after_the_documented_bound_nothing_queued_later_overtakes(rig: Rig) -> None:
    worker = rig.connect(slots=1)
    await _submit(rig, DEFAULT_PRIORITY, "blocker")
    await _submit(rig, 1, "old-low")
    rig.advance((MAX_PRIORITY - 1) * AGING_S - 1)  # one second short of the bound: effective priority 8
    await _submit(rig, MAX_PRIORITY, "top-before")
    worker.complete(worker.invocations[0])
    await until(lambda: len(worker.invocations) == 2, "the next dispatch")
    rig.advance(1)  # effective priority 9 now, and queued before anything submitted from here on
    await _submit(rig, MAX_PRIORITY, "top-after")
    worker.complete(worker.invocations[1])
    await until(lambda: len(worker.invocations) == 3, "the next dispatch")
    worker.complete(worker.invocations[2])
    await until(lambda: len(worker.invocations) == 4, "the last dispatch")
    names = [(await rig.engine.get(i.task_run.execution_id)).execution.name for i in worker.invocations]
    assert names == ["blocker", "top-before", "old-low", "top-after"]


async def test_without_aging_a_low_priority_waits_behind_every_higher_one(strict: Rig) -> None:
    await _submit(strict, 1, "low")
    strict.advance(100 * AGING_S)
    await _submit(strict, 2, "later-two")
    worker = strict.connect(slots=1)
    assert await _run_one_at_a_time(strict, worker, 2) == ["later-two", "low"]


async def test_a_retry_queues_at_its_priority(rig: Rig) -> None:
    worker = rig.connect(slots=1)
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=1))
    first = await rig.submit(task(priority=8, retry_policy=policy), name="retried")
    worker.fail(worker.invocations[0])
    await _submit(rig, DEFAULT_PRIORITY, "default")  # taken at once: the slot is free
    await _submit(rig, DEFAULT_PRIORITY, "waiting-default")
    rig.advance(1)  # the retry is due: priority 8 goes before the default one queued earlier
    worker.complete(worker.invocations[1])
    await until(lambda: len(worker.invocations) == 3, "the next dispatch")
    assert worker.invocations[2].task_run.execution_id == first
    assert worker.invocations[2].attempt.number == 2


async def test_priority_survives_a_restart(rig: Rig) -> None:
    await _submit(rig, 2, "low")
    await _submit(rig, DEFAULT_PRIORITY, "default")
    await _submit(rig, 7, "high")
    await rig.engine.flush()
    await rig.restart()
    worker = rig.connect(slots=1)
    assert await _run_one_at_a_time(rig, worker, 3) == ["high", "default", "low"]
    assert (await rig.engine.get(worker.invocations[0].task_run.execution_id)).task_runs[0].priority == 7


async def test_a_priority_task_goes_before_a_cold_queue(all_cold: Rig) -> None:
    rig = all_cold
    for n in range(5):
        await _submit(rig, DEFAULT_PRIORITY, f"cold-{n}")
    await _submit(rig, MAX_PRIORITY, "urgent")
    await rig.engine.flush()
    worker = rig.connect(slots=1)
    assert await _run_one_at_a_time(rig, worker, 6) == ["urgent", *(f"cold-{n}" for n in range(5))]


async def test_a_priority_out_of_range_is_refused_naming_the_field(rig: Rig) -> None:
    for priority in (0, MAX_PRIORITY + 1):
        spec = ExecutionSpec(tasks=(task(priority=priority),))
        with pytest.raises(ValidationError, match=r"execution\.tasks\[0\]\.priority"):
            await rig.engine.submit(spec, fingerprint="", wait_for_room=False, timeout_s=None)
