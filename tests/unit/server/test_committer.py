"""The committer's coalescing: what one commit carries when a record changed several times before it."""

from __future__ import annotations

import asyncio

from taskwire.server._committer import Committer
from taskwire.server._store import WriteBatch
from taskwire.server.domain import (
    ExecutionStarted,
    Payload,
    State,
    TaskDispatched,
    TaskSucceeded,
    transition_execution,
    transition_task_run,
)
from taskwire.server.engine._bus import EventBus
from tests.unit.store.records import T0, pending_execution


class RecordingStore:
    """Holds each write until released, so that changes can be staged while one is in flight."""

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []
        self.release = asyncio.Event()

    async def write(self, batch: WriteBatch) -> None:
        self.batches.append(batch)
        await self.release.wait()


async def test_a_new_execution_is_inserted_as_it_is_at_commit_time_and_not_updated_too() -> None:
    store = RecordingStore()
    committer = Committer(store=store, bus=EventBus(), on_fatal=lambda error: None)  # type: ignore[arg-type]
    committer.start()
    new = pending_execution()
    task_run = new.task_runs[0]
    running = transition_task_run(task_run, TaskDispatched(1, "worker"), T0).record
    done = transition_task_run(running, TaskSucceeded(1, Payload(b"{}")), T0).record
    execution = transition_execution(new.execution, ExecutionStarted(), T0).record

    committer.stage_new(new)
    committer.stage_task_run(running)
    committer.stage_task_run(done)
    committer.stage_execution(execution)
    store.release.set()
    await asyncio.wait_for(committer.durable(), timeout=5)

    [batch] = store.batches
    assert [(n.execution, list(n.task_runs)) for n in batch.new_executions] == [(execution, [done])]
    assert batch.executions == []
    assert batch.task_runs == []
    assert done.state is State.SUCCESS
    await committer.close()


async def test_changes_staged_after_the_insert_left_are_written_as_updates() -> None:
    store = RecordingStore()
    committer = Committer(store=store, bus=EventBus(), on_fatal=lambda error: None)  # type: ignore[arg-type]
    committer.start()
    new = pending_execution()
    running = transition_task_run(new.task_runs[0], TaskDispatched(1, "worker"), T0).record

    committer.stage_new(new)
    first = committer.durable()
    await asyncio.sleep(0)  # the committer takes the insert and starts writing it
    committer.stage_task_run(running)
    store.release.set()
    await asyncio.wait_for(first, timeout=5)
    await asyncio.wait_for(committer.durable(), timeout=5)

    inserted, updated = store.batches
    assert [n.task_runs[0] for n in inserted.new_executions] == [new.task_runs[0]]
    assert updated.new_executions == []
    assert updated.task_runs == [running]
    await committer.close()
