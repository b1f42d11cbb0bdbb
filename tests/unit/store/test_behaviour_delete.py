"""Deleting executions (`WriteBatch.deleted`) and finding the finished ones retention deletes
(`finished_before`), on every store of the `make_store` fixture."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskwire.server.store import NewExecution, Store, WriteBatch
from tests.unit.store import records
from tests.unit.store.conftest import Reopen
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import list_ids, write

pytestmark = pytest.mark.timeout(30)


async def _finished(store: Store, *, ended_after_s: float, key: str = "") -> NewExecution:
    """A stored execution whose one task run succeeded `ended_after_s` seconds after T0, with three events."""
    new = pending_execution(key=key)
    await write(store, submit_batch(new))
    at = T0 + timedelta(seconds=ended_after_s)
    (task_run,) = new.task_runs
    await write(
        store,
        WriteBatch(
            executions=[records.execution_succeeded(new.execution, at)],
            task_runs=[records.succeeded(records.running(task_run, at), at)],
            events=[event(new.execution.id, 2), event(new.execution.id, 3)],
        ),
    )
    return new


async def test_a_deleted_execution_is_gone_with_its_task_runs_history_and_key(store: Store) -> None:
    gone = await _finished(store, ended_after_s=1, key="once")
    kept = await _finished(store, ended_after_s=2)

    await write(store, WriteBatch(deleted=[gone.execution.id]))

    assert await store.get_execution(gone.execution.id) is None
    assert await store.read_events(gone.execution.id, 0) == []
    assert await store.find_idempotency_key("once") is None
    assert await store.last_sequences([gone.execution.id]) == {gone.execution.id: 0}
    assert await list_ids(store) == [kept.execution.id]
    assert len(await store.read_events(kept.execution.id, 0)) == 3
    # The key is free again, and the task runs' ids too: the same records can be written anew.
    await write(store, submit_batch(gone))
    assert (await store.get_execution(gone.execution.id)) is not None


async def test_deleting_an_unknown_execution_does_nothing(store: Store) -> None:
    kept = await _finished(store, ended_after_s=1)

    assert await store.commit([WriteBatch(deleted=["never-stored"])]) == [None]

    assert await list_ids(store) == [kept.execution.id]


async def test_a_delete_comes_after_the_rest_of_its_batch(store: Store) -> None:
    new = pending_execution()

    batch = WriteBatch(new_executions=[new], events=[event(new.execution.id, 1)], deleted=[new.execution.id])
    await write(store, batch)

    assert await store.get_execution(new.execution.id) is None
    assert await store.read_events(new.execution.id, 0) == []


async def test_finished_before_lists_terminal_executions_that_ended_before_the_cutoff_earliest_first(
    store: Store,
) -> None:
    late = await _finished(store, ended_after_s=30)
    early = await _finished(store, ended_after_s=10)
    middle = await _finished(store, ended_after_s=20)
    running = pending_execution()
    await write(store, submit_batch(running))
    await write(store, WriteBatch(executions=[records.execution_running(running.execution, T0)]))

    cutoff = T0 + timedelta(seconds=25)
    assert await store.finished_before(cutoff, 10) == [early.execution.id, middle.execution.id]
    assert await store.finished_before(cutoff, 1) == [early.execution.id]
    assert await store.finished_before(T0 + timedelta(seconds=10), 10) == []  # ended at the cutoff: not before
    assert await store.finished_before(cutoff, 0) == []
    assert late.execution.id in await store.finished_before(T0 + timedelta(days=1), 10)


async def test_a_deleted_execution_stays_gone_after_a_restart(store: Store, reopen: Reopen) -> None:
    gone = await _finished(store, ended_after_s=1)
    await write(store, WriteBatch(deleted=[gone.execution.id]))

    again = await reopen(store)

    assert await again.get_execution(gone.execution.id) is None
    assert await again.finished_before(T0 + timedelta(days=1), 10) == []
