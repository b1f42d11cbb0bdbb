"""Rate limits: a dispatch takes a token of its bucket; without one the task run waits WAITING(RATE_LIMITED)
and is dispatched, in order, as tokens come back at the limit's rate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from taskwire.server._config import RateLimit
from taskwire.server.domain import ExecutionSpec, ReasonCode, RetryPolicy, State, TaskSpec, ValidationError
from taskwire.server.engine import ManualClock
from taskwire.server.store import MemoryStore
from tests.unit.engine.support import CONFIG, Rig, idle, task, until

API = RateLimit("api", rate=2.0, burst=3)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = MemoryStore()
    await store.open()
    started = await Rig(store, ManualClock(), replace(CONFIG, rate_limits=(API,))).start()
    try:
        yield started
    finally:
        await started.close()
        await store.close()


def limited(key: str = "", **fields: object) -> TaskSpec:
    return task(rate_limit="api", rate_limit_key=key, **fields)  # type: ignore[arg-type]


async def test_a_burst_then_the_rate_and_the_rest_wait_in_order(rig: Rig) -> None:
    worker = rig.connect(slots=20)
    ids = [await rig.submit(limited()) for _ in range(10)]
    assert len(worker.invocations) == API.burst
    waiting = await rig.task_run(ids[3])
    assert waiting.state is State.WAITING
    assert waiting.reason is not None
    assert waiting.reason.code is ReasonCode.RATE_LIMITED
    assert "rate limit 'api' is empty: 2 per second, burst 3; 1 waiting" in waiting.reason.message
    (bucket,) = rig.engine.stats().rate_limits
    assert (bucket.name, bucket.tokens, bucket.waiting) == ("api", 0, 7)

    for step in range(1, 15):
        rig.advance(0.5)
        await idle()
        # Over the first `step` half seconds: at most the burst and one token per half second.
        assert len(worker.invocations) <= API.burst + step
        assert len(worker.invocations) == min(10, API.burst + step)
    assert [invoked.task_run.execution_id for invoked in worker.invocations] == ids


async def test_each_key_has_a_bucket_of_its_own(rig: Rig) -> None:
    worker = rig.connect(slots=20)
    for key in ("a", "b"):
        for _ in range(5):
            await rig.submit(limited(key))
    assert len(worker.invocations) == 2 * API.burst
    names = {bucket.name: bucket.waiting for bucket in rig.engine.stats().rate_limits}
    assert names == {"api[a]": 2, "api[b]": 2}


async def test_a_task_cancelled_while_waiting_gives_its_token_to_the_next(rig: Rig) -> None:
    worker = rig.connect(slots=20)
    for _ in range(API.burst):
        await rig.submit(limited())
    skipped = await rig.submit(limited())
    nxt = await rig.submit(limited())
    await rig.engine.cancel(skipped, "not needed")
    rig.advance(0.5)
    await until(lambda: len(worker.invocations) == API.burst + 1, "the next dispatched")
    assert worker.invocations[-1].task_run.execution_id == nxt
    assert await rig.state(skipped) is State.CANCELLED


async def test_tasks_without_the_limit_are_not_held_back(rig: Rig) -> None:
    worker = rig.connect(slots=20)
    for _ in range(API.burst + 2):
        await rig.submit(limited())
    free = await rig.submit()
    await idle()
    assert free in [invoked.task_run.execution_id for invoked in worker.invocations]


async def test_the_waiting_line_comes_back_after_a_restart(rig: Rig) -> None:
    worker = rig.connect(slots=20)
    for _ in range(API.burst):
        await rig.submit(limited())
    later = [await rig.submit(limited()) for _ in range(2)]
    await rig.engine.flush()
    await rig.restart()
    back = rig.connect(slots=20, running=[i.key for i in worker.invocations])
    rig.clock.advance(0)  # the line's timer: the bucket, new after the restart, is full
    await until(lambda: len(back.invocations) == 2, "the waiting ones dispatched from a full bucket")
    assert [invoked.task_run.execution_id for invoked in back.invocations] == later


async def test_an_unknown_rate_limit_is_refused_naming_the_field(rig: Rig) -> None:
    spec = ExecutionSpec(tasks=(task(rate_limit="nope"),))
    with pytest.raises(ValidationError, match=r"execution\.tasks\[0\]\.rate_limit.*defines no rate limit 'nope'"):
        await rig.engine.submit(spec, fingerprint="", wait_for_room=False, timeout_s=None)


async def test_a_task_set_aside_for_another_worker_takes_a_token_too() -> None:
    """A retry whose worker still runs its fenced attempt goes to another worker: that dispatch takes a token."""
    store = MemoryStore()
    await store.open()
    slow = RateLimit("slow", rate=0.001, burst=2)
    rig = await Rig(store, ManualClock(), replace(CONFIG, rate_limits=(slow,))).start()
    try:
        first = rig.connect("first", slots=4)
        policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=1))
        timed = await rig.submit(task(rate_limit="slow", timeout=timedelta(seconds=1), retry_policy=policy))
        second = rig.connect("second", slots=4)
        rig.advance(1)  # attempt 1 times out on the server; its worker has not reported it: it still runs there
        rig.advance(1)  # the retry is due: set aside for the first worker, taken by the second
        await until(lambda: second.invocations, "the retry dispatched to the other worker")
        assert second.invocations[0].key == ((await rig.task_run(timed)).id, 2)
        assert len(first.invocations) == 1
        late = await rig.submit(task(rate_limit="slow"))
        run = await rig.task_run(late)
        assert (run.state, run.reason.code if run.reason else None) == (State.WAITING, ReasonCode.RATE_LIMITED)
    finally:
        await rig.close()
        await store.close()
