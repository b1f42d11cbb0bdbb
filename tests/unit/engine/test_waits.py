"""Waiting for a set of executions to end (`Engine.wait_ends`): those finished already in the first batch,
each other one once when its end is durable (those of one commit together), wherever it was when the wait
began (in memory, or queued out of memory in the cold tier); unknown or another's ids are NotFound. Those
that ended last are answered from memory (`RecentEnds`) until deleted, and so are gets of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from taskwire.server.domain import ErrorInfo, ExecutionSpec, NotFound, ShuttingDown, State
from taskwire.server.engine._waits import RecentEnds, held_bytes
from taskwire.server.store import ExecutionSnapshot, MemoryStore, SqliteStore, Store
from tests.unit.engine.support import CONFIG, Rig, idle, started, task, until


class Waiter:
    """Collects the batches `wait_ends` yields, in the background."""

    def __init__(self, rig: Rig, execution_ids: list[str], owner: str | None = None) -> None:
        self.batches: list[list[ExecutionSnapshot]] = []
        self.error: BaseException | None = None
        self.ended = False
        self._source = rig.engine.wait_ends(execution_ids, owner=owner)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self._source:
                self.batches.append(batch)
            self.ended = True
        except Exception as error:
            self.error = error

    def ids(self) -> list[list[str]]:
        return [[snapshot.execution.id for snapshot in batch] for batch in self.batches]


async def test_finished_ones_come_at_once_and_the_others_once_each_as_they_end(rig: Rig) -> None:
    worker = rig.connect(slots=2)
    done = await rig.submit()
    worker.complete(worker.invocations[0])
    await rig.engine.flush()
    first, second = await rig.submit(), await rig.submit()

    waiter = Waiter(rig, [first, done, second])
    await until(lambda: waiter.batches, "the first batch")
    assert waiter.ids() == [[done]]
    assert waiter.batches[0][0].execution.state is State.SUCCESS

    worker.complete(worker.invocations[2])  # the second one ends first
    await until(lambda: len(waiter.batches) == 2, "the second's end")
    assert waiter.ids()[1] == [second]
    await idle()
    assert not waiter.ended

    worker.complete(worker.invocations[1])
    await until(lambda: waiter.ended, "the end of the wait")
    assert waiter.ids() == [[done], [second], [first]]
    final = waiter.batches[2][0]
    assert final == await rig.snapshot(first)  # the execution as stored
    assert rig.engine.bus.watcher_count == 0


async def test_the_ends_of_one_commit_come_in_one_batch(rig: Rig) -> None:
    worker = rig.connect(slots=5)
    execution_ids = [await rig.submit() for _ in range(5)]
    waiter = Waiter(rig, execution_ids)
    await until(lambda: waiter.batches, "the first batch")
    for invoked in worker.invocations:
        worker.complete(invoked)
    await until(lambda: waiter.ended, "the end of the wait")
    assert waiter.ids() == [[], execution_ids]


async def test_two_waits_on_one_execution_both_receive_it(rig: Rig) -> None:
    worker = rig.connect()
    execution_id = await rig.submit()
    waiters = [Waiter(rig, [execution_id]), Waiter(rig, [execution_id])]
    await until(lambda: all(w.batches for w in waiters), "both first batches")
    worker.complete(worker.invocations[0])
    await until(lambda: all(w.ended for w in waiters), "both ends")
    assert [w.ids() for w in waiters] == [[[], [execution_id]]] * 2


async def test_an_unknown_id_or_another_identitys_execution_is_not_found(rig: Rig) -> None:
    mine = await _submit_as(rig, "alice")
    theirs = await _submit_as(rig, "bob")
    unknown = "0" * 32
    for execution_ids, owner, missing in (
        ([mine, unknown], None, unknown),
        ([mine, theirs], "alice", theirs),
    ):
        refusal = await _refusal(Waiter(rig, execution_ids, owner=owner))
        assert isinstance(refusal, NotFound), refusal
        assert refusal.entity_id == missing
    await rig.engine.flush()
    await rig.engine.cancel(theirs, "")
    await rig.engine.flush()
    # Finished, in the store only: still not alice's.
    assert isinstance(await _refusal(Waiter(rig, [theirs], owner="alice")), NotFound)
    assert rig.engine.bus.watcher_count == 0


async def _refusal(waiter: Waiter) -> BaseException | None:
    """The error a wait ended with, before it yielded anything."""
    await until(lambda: waiter.error is not None or waiter.ended, "the refusal")
    assert waiter.batches == []
    return waiter.error


async def _submit_as(rig: Rig, identity: str) -> str:
    result = await rig.engine.submit(
        ExecutionSpec(tasks=(task(),)), fingerprint="", wait_for_room=False, timeout_s=None, submitted_by=identity
    )
    return result.snapshot.execution.id


@pytest.fixture
async def all_cold() -> AsyncIterator[Rig]:
    """Every queued execution that may leave memory does."""
    async with started(MemoryStore(), replace(CONFIG, hot_queue_size=0)) as rig:
        yield rig


async def test_a_cold_execution_is_waited_for_until_it_comes_back_and_ends(all_cold: Rig) -> None:
    rig = all_cold
    execution_id = await rig.submit()
    await rig.engine.flush()
    await until(lambda: execution_id not in rig.engine._executions.by_id, "the execution to go cold")
    waiter = Waiter(rig, [execution_id])
    await until(lambda: waiter.batches, "the first batch")
    assert waiter.ids() == [[]]
    worker = rig.connect()
    await until(lambda: worker.invocations, "the cold execution dispatched")
    worker.complete(worker.invocations[0])
    await until(lambda: waiter.ended, "the end of the wait")
    assert waiter.ids() == [[], [execution_id]]


async def test_a_wait_ends_with_shutting_down_when_the_engine_closes(rig: Rig) -> None:
    execution_id = await rig.submit(task("nobody"))
    waiter = Waiter(rig, [execution_id])
    await until(lambda: waiter.batches, "the first batch")
    await rig.engine.close()
    await until(lambda: waiter.error is not None, "the wait to end")
    assert isinstance(waiter.error, ShuttingDown)


def store_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of each `get_executions` call made of `store` from now on (what a wait asks of the store)."""
    reads: list[list[str]] = []
    read = store.get_executions

    async def counted(execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
        reads.append(list(execution_ids))
        return await read(execution_ids)

    monkeypatch.setattr(store, "get_executions", counted)
    return reads


async def _finished(rig: Rig, count: int) -> list[str]:
    """Executions that ran and ended, their ends durable: they have left memory."""
    worker = rig.connect(slots=count)
    execution_ids = [await rig.submit() for _ in range(count)]
    for invoked in list(worker.invocations):
        worker.complete(invoked)
    await rig.engine.flush()
    assert not set(execution_ids) & set(rig.engine._executions.by_id)
    return execution_ids


async def test_a_wait_right_after_the_end_is_answered_from_memory(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    execution_ids = await _finished(rig, 3)
    reads = store_reads(rig.store, monkeypatch)

    waiter = Waiter(rig, execution_ids)
    await until(lambda: waiter.ended, "the end of the wait")

    assert reads == []
    assert waiter.ids() == [execution_ids]
    for snapshot in waiter.batches[0]:
        assert snapshot == await rig.store.get_execution(snapshot.execution.id)  # the execution as stored


async def test_a_deleted_execution_is_not_found_by_a_wait_right_after(rig: Rig) -> None:
    one, many = await _finished(rig, 2)
    await rig.engine.delete(one)
    await rig.engine.delete_many([many])
    for execution_id in (one, many):
        refusal = await _refusal(Waiter(rig, [execution_id]))
        assert isinstance(refusal, NotFound), refusal
        assert refusal.entity_id == execution_id
        with pytest.raises(NotFound):
            await rig.engine.get(execution_id)


async def test_the_recent_ends_keep_the_last_ones_within_their_count_and_bytes(rig: Rig) -> None:
    snapshots = [await rig.snapshot(execution_id) for execution_id in await _finished(rig, 3)]
    ids = [snapshot.execution.id for snapshot in snapshots]
    recent = RecentEnds(capacity=2)
    for snapshot in snapshots:
        recent.remember(snapshot)
    assert [recent.get(execution_id) for execution_id in ids] == [None, *snapshots[1:]]
    recent.forget(ids[2])
    assert recent.get(ids[2]) is None
    assert (len(recent), recent.bytes) == (1, held_bytes(snapshots[1]))

    size = held_bytes(snapshots[0])
    by_bytes = RecentEnds(max_bytes=2 * size)
    for snapshot in snapshots:
        by_bytes.remember(snapshot)
    assert [by_bytes.get(execution_id) is not None for execution_id in ids] == [False, True, True]
    assert by_bytes.bytes == 2 * size
    labelled = replace(snapshots[0], execution=replace(snapshots[0].execution, metadata={"note": "x" * 5_000}))
    assert held_bytes(labelled) >= size + 5_000
    too_large = RecentEnds(max_bytes=size - 1)
    too_large.remember(snapshots[0])
    none = RecentEnds(capacity=0)
    none.remember(snapshots[0])
    assert len(too_large) == len(none) == 0


@pytest.fixture
async def on_sqlite(tmp_path: Path) -> AsyncIterator[Rig]:
    """The engine on a real SQLite store."""
    async with started(SqliteStore(tmp_path / "taskwire.db")) as rig:
        yield rig


async def _succeeded_and_failed(rig: Rig) -> tuple[str, str]:
    """Two executions that ended and left memory, one SUCCESS and one FAILED with its error."""
    worker = rig.connect(slots=2)
    succeeded, failed = await rig.submit(), await rig.submit()
    worker.complete(worker.invocations[0])
    worker.fail(
        worker.invocations[1], ErrorInfo(type="ValueError", message="boom", retryable=False, traceback="at line 1")
    )
    await rig.engine.flush()
    return succeeded, failed


async def test_what_a_wait_answers_from_memory_is_what_the_store_holds(
    on_sqlite: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = on_sqlite
    succeeded, failed = await _succeeded_and_failed(rig)
    reads = store_reads(rig.store, monkeypatch)

    waiter = Waiter(rig, [succeeded, failed])
    await until(lambda: waiter.ended, "the end of the wait")

    assert reads == []
    (answered,) = waiter.batches
    assert answered == [await rig.store.get_execution(succeeded), await rig.store.get_execution(failed)]
    assert [snapshot.execution.state for snapshot in answered] == [State.SUCCESS, State.FAILED]


async def test_a_get_right_after_the_end_is_answered_from_memory_as_stored(
    on_sqlite: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = on_sqlite
    succeeded, failed = await _succeeded_and_failed(rig)
    stored = [await rig.store.get_execution(succeeded), await rig.store.get_execution(failed)]
    reads: list[str] = []
    read = rig.store.get_execution

    async def counted(execution_id: str) -> ExecutionSnapshot | None:
        reads.append(execution_id)
        return await read(execution_id)

    monkeypatch.setattr(rig.store, "get_execution", counted)
    assert [await rig.engine.get(succeeded), await rig.engine.get(failed)] == stored
    assert reads == []
    await rig.engine.delete(succeeded)
    reads.clear()
    with pytest.raises(NotFound):
        await rig.engine.get(succeeded)
    assert reads == [succeeded]  # forgotten with its deletion: the store answers
