"""Deleting finished executions: on request, and by retention on the engine's clock, in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from taskwire.server.domain import InvalidTransition, NotFound, State
from taskwire.server.engine import ManualClock
from taskwire.server.store import MemoryStore
from tests.unit.engine.support import CONFIG, Rig, until

RETENTION = timedelta(hours=1)


@pytest.fixture
async def short() -> AsyncIterator[Rig]:
    """An engine that keeps finished executions for an hour and deletes them three at a time."""
    store = MemoryStore()
    await store.open()
    started = await Rig(store, ManualClock(), replace(CONFIG, retention=RETENTION, retention_batch=3)).start()
    try:
        yield started
    finally:
        await started.close()
        await store.close()


async def _finished(rig: Rig, count: int) -> list[str]:
    worker = rig.workers[0] if rig.workers else rig.connect("w1", slots=100)
    before = len(worker.invocations)
    ids = [await rig.submit() for _ in range(count)]
    await until(lambda: len(worker.invocations) == before + count, "the tasks dispatched")
    for invoked in worker.invocations[-count:]:
        worker.complete(invoked)
    for execution_id in ids:
        assert await rig.state(execution_id) is State.SUCCESS
    return ids


async def _gone(rig: Rig, execution_id: str) -> bool:
    try:
        await rig.engine.get(execution_id)
    except NotFound:
        return True
    return False


async def test_a_finished_execution_is_deleted_with_its_history_and_key(rig: Rig) -> None:
    worker = rig.connect("w1")
    execution_id = await rig.submit(idempotency_key="nightly")
    worker.complete(worker.invocations[0])
    assert await rig.state(execution_id) is State.SUCCESS

    await rig.engine.delete(execution_id)

    assert await _gone(rig, execution_id)
    assert await rig.store.read_events(execution_id, 0) == []
    assert await rig.store.find_idempotency_key("nightly") is None
    with pytest.raises(NotFound, match=execution_id):
        await rig.engine.delete(execution_id)
    # The key is free: the same key makes a new execution.
    again = await rig.submit(idempotency_key="nightly")
    assert again != execution_id


async def test_an_execution_just_finished_in_memory_is_deleted_once_its_end_is_written(rig: Rig) -> None:
    worker = rig.connect("w1")
    execution_id = await rig.submit()
    worker.complete(worker.invocations[0])  # terminal in memory, its end not committed yet

    await rig.engine.delete(execution_id)

    assert await _gone(rig, execution_id)


async def test_a_running_or_queued_execution_is_refused_naming_its_state(rig: Rig) -> None:
    worker = rig.connect("w1")
    running = await rig.submit()
    queued = await rig.submit()
    assert worker.invocations

    with pytest.raises(InvalidTransition, match="is RUNNING") as refused:
        await rig.engine.delete(running)
    assert refused.value.status_name == "FAILED_PRECONDITION"
    with pytest.raises(InvalidTransition, match="is PENDING"):
        await rig.engine.delete(queued)
    with pytest.raises(NotFound):
        await rig.engine.delete("exe-unknown")
    assert await rig.state(running) is State.RUNNING


async def test_retention_deletes_old_finished_executions_in_batches_and_leaves_the_rest(short: Rig) -> None:
    retention = short.engine.retention
    old = await _finished(short, 7)
    short.advance(RETENTION.total_seconds() / 2)
    recent = await _finished(short, 2)
    running = await short.submit()
    worker = short.workers[0]
    await until(lambda: len(worker.invocations) == 10, "the last task dispatched")

    # Past the retention of the old ones only: the next sweep deletes them, three per commit.
    short.advance(RETENTION.total_seconds() / 2 + retention.interval_s)
    await until(lambda: retention.deleted == 7, "the old executions deleted")
    await until(lambda: retention.sweeps >= 1, "the sweep finished")
    assert retention.commits == 3  # 3 + 3 + 1
    for execution_id in old:
        assert await _gone(short, execution_id)
    for execution_id in recent:
        assert await short.state(execution_id) is State.SUCCESS
    assert await short.state(running) is State.RUNNING

    # Later sweeps take the recent ones once they too are past it; the running one stays.
    short.advance(RETENTION.total_seconds() / 2 + retention.interval_s)
    await until(lambda: retention.deleted == 9, "the recent executions deleted")
    assert await short.state(running) is State.RUNNING


async def test_a_wait_right_after_retention_deleted_an_execution_finds_none(short: Rig) -> None:
    (execution_id,) = await _finished(short, 1)
    short.advance(RETENTION.total_seconds() + short.engine.retention.interval_s)
    await until(lambda: short.engine.retention.deleted == 1, "the execution deleted")
    with pytest.raises(NotFound, match=execution_id):
        async for _ in short.engine.wait_ends([execution_id]):
            pass


async def test_zero_retention_keeps_everything(rig: Rig) -> None:
    await rig.restart_with(retention=timedelta(0))
    (execution_id,) = await _finished(rig, 1)
    rig.workers[0].disconnect()
    rig.clock.advance(timedelta(days=30).total_seconds())  # no worker left holding anything
    assert await rig.state(execution_id) is State.SUCCESS
    assert rig.engine.retention.sweeps == 0


async def test_many_finished_executions_are_deleted_in_one_commit_skipping_those_gone(rig: Rig) -> None:
    worker = rig.connect("w1", slots=10)
    finished = [await rig.submit() for _ in range(5)]
    for invocation in list(worker.invocations):
        worker.complete(invocation)
    for execution_id in finished:
        assert await rig.state(execution_id) is State.SUCCESS
    await rig.engine.delete(finished[0])  # gone before the bulk delete
    commits = rig.count_commits()

    assert await rig.engine.delete_many(finished) == 4

    assert commits == [1]
    for execution_id in finished:
        assert await _gone(rig, execution_id)


async def test_deleting_many_stops_at_one_not_finished_and_keeps_the_deletes_before_it(rig: Rig) -> None:
    worker = rig.connect("w1")
    done = await rig.submit()
    worker.complete(worker.invocations[0])
    assert await rig.state(done) is State.SUCCESS
    active = await rig.submit()
    with pytest.raises(InvalidTransition):
        await rig.engine.delete_many([done, active, "exe-unknown"])
    assert await _gone(rig, done)
    assert not await _gone(rig, active)
