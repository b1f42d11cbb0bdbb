"""Group commit: what one commit carries when a record changed several times before it, and how writes share commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import pytest

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
from taskwire.server.store import Committer, EventRecord, SqliteStore, StoreFailure, WriteBatch
from tests.unit.store.records import T0, event, pending_execution


class RecordingStore:
    """Holds each write until released, so that changes can be staged while one is in flight."""

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []
        self.release = asyncio.Event()

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        self.batches.extend(batches)
        await self.release.wait()
        return [None] * len(batches)


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


async def test_concurrent_writes_share_commits(sqlite: SqliteStore) -> None:
    """Submits staged while a commit is under way go together into the next: one fsync for many."""
    committer = Committer(store=sqlite, bus=EventBus(), on_fatal=lambda error: None)
    committer.start()
    news = [pending_execution() for _ in range(200)]

    async def submit(index: int) -> None:
        for _ in range(index % 5):  # arrive over several turns of the event loop, some while a commit runs
            await asyncio.sleep(0)
        committer.stage_new(news[index])
        committer.stage_event(event(news[index].execution.id, 1))
        await committer.durable()

    await asyncio.gather(*(submit(index) for index in range(200)))

    stats = sqlite.stats()
    assert committer.commits <= 200 // 5, committer.commits
    assert stats.commits == committer.commits
    assert stats.rows_written == 200 * 3  # execution, task run (its small input in its row), event
    for new in news[::37]:
        assert await sqlite.get_execution(new.execution.id) is not None
    await committer.close()


async def test_a_failed_commit_fails_its_waiters_and_stops_the_server(sqlite: SqliteStore) -> None:
    stopped: list[BaseException] = []
    committer = Committer(store=sqlite, bus=EventBus(), on_fatal=stopped.append)
    committer.start()
    committer.stage_event(EventRecord("ghost", 1, T0, "log", b""))  # an event of an unknown execution

    with pytest.raises(StoreFailure, match="FOREIGN KEY"):
        await committer.durable()

    assert len(stopped) == 1
    with pytest.raises(StoreFailure):
        committer.durable()
    await committer.close()


class FailingStore(RecordingStore):
    """Holds each write until released, then fails it as a lost database does."""

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        await super().commit(batches)
        raise OSError("the database went away")


async def test_a_commit_that_fails_in_flight_fails_what_was_staged_meanwhile_and_close_returns() -> None:
    store = FailingStore()
    stopped: list[BaseException] = []
    committer = Committer(store=store, bus=EventBus(), on_fatal=stopped.append)  # type: ignore[arg-type]
    committer.start()
    committer.stage_event(EventRecord("first", 1, T0, "log", b""))
    in_flight = committer.durable()
    await asyncio.sleep(0)  # the first group leaves for the store, which holds it
    committer.stage_event(EventRecord("second", 1, T0, "log", b""))
    staged_meanwhile = committer.durable()
    closing = asyncio.ensure_future(committer.close())  # a stop while the commit hangs: it flushes
    store.release.set()

    for waiter in (in_flight, staged_meanwhile):
        with pytest.raises(StoreFailure, match="the database went away"):
            await asyncio.wait_for(waiter, timeout=5)
    await asyncio.wait_for(closing, timeout=5)
    assert len(stopped) == 1


@pytest.mark.parametrize("after_the_rest", [False, True])
async def test_what_is_staged_after_the_rest_is_taken_after_what_the_block_woke(after_the_rest: bool) -> None:
    order: list[str] = []

    class Store(RecordingStore):
        async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
            order.append("commit")
            return [None] * len(batches)

    committer = Committer(store=Store(), bus=EventBus(), on_fatal=lambda error: None)  # type: ignore[arg-type]
    committer.start()
    await asyncio.sleep(0)  # the committer waits for something staged
    woken = asyncio.Event()

    async def other() -> None:
        await woken.wait()
        order.append("other")

    waiting = asyncio.create_task(other())
    await asyncio.sleep(0)
    with committer.after_the_rest() if after_the_rest else contextlib.nullcontext():
        committer.stage_execution(pending_execution().execution)
        woken.set()
    await asyncio.wait_for(committer.durable(), timeout=5)
    await waiting
    assert order == (["other", "commit"] if after_the_rest else ["commit", "other"])
    await committer.close()


async def test_what_waited_for_a_commit_and_what_it_wakes_run_before_the_next_commit_is_taken() -> None:
    """A submit resumes when its commit is durable, and wakes its stream's writer to send the answer: both run
    before the committer takes what was staged meanwhile (under load, that is more to take, and the answer is
    not held behind the next commit's encoding)."""
    order: list[str] = []
    store = RecordingStore()
    committer = Committer(store=store, bus=EventBus(), on_fatal=lambda error: None)  # type: ignore[arg-type]
    committer.start()
    record = pending_execution()
    answer_ready = asyncio.Event()

    async def submit() -> None:
        committer.stage_new(record)
        await committer.durable()
        order.append("resumed")
        answer_ready.set()

    async def stream_writer() -> None:
        await answer_ready.wait()
        order.append("answer written")

    writing = asyncio.create_task(stream_writer())
    submitting = asyncio.create_task(submit())
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the committer has taken the submit's insert; its commit is in flight
    assert len(store.batches) == 1
    committer.stage_execution(record.execution)  # staged meanwhile: the next commit's
    commit = store.commit

    async def recording(batches: Sequence[WriteBatch]) -> list[Exception | None]:
        order.append("next commit taken")
        return await commit(batches)

    store.commit = recording  # type: ignore[method-assign]
    store.release.set()
    await asyncio.wait_for(asyncio.gather(submitting, writing), timeout=5)
    await asyncio.wait_for(committer.durable(), timeout=5)
    assert order == ["resumed", "answer written", "next commit taken"]
    await committer.close()


async def test_a_waiter_that_gives_up_leaves_the_commit_to_the_others() -> None:
    # One caller's deadline cancels its own wait only: the others waiting on the same commit, and those who
    # ask for it afterwards, still get it.
    store = RecordingStore()
    committer = Committer(store=store, bus=EventBus(), on_fatal=lambda error: None)  # type: ignore[arg-type]
    committer.start()
    committer.stage_new(pending_execution())
    impatient = asyncio.ensure_future(asyncio.wait_for(committer.durable(), timeout=0.01))
    patient = asyncio.ensure_future(committer.durable())
    with pytest.raises(TimeoutError):
        await impatient
    late = committer.durable()
    assert not late.done()
    store.release.set()
    await asyncio.wait_for(asyncio.gather(patient, late), timeout=5)
    assert len(store.batches) == 1
    await committer.close()
