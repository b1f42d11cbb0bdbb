"""The behaviour every store keeps, whatever it is built on: writes, refusals, events, idempotency, lifecycle.

Each test runs on every store of the `make_store` fixture; a new store passes this suite to join.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.server.domain import Payload, Progress, Reason, ReasonCode, State
from taskwire.server.store import (
    DuplicateIdempotencyKey,
    ExecutionSnapshot,
    IdempotencyHit,
    MemoryStore,
    PostgresStore,
    SqliteStore,
    Store,
    StoreClosed,
    StoreError,
    WriteBatch,
)
from tests.unit.store import records
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import list_ids, stats, write

pytestmark = pytest.mark.timeout(30)


def test_every_store_is_a_store() -> None:
    # mypy holds each to the Protocol
    stores: list[Store] = [MemoryStore(), SqliteStore("never-opened.sqlite3"), PostgresStore("postgresql://h/d")]
    assert len(stores) == 3


# --------------------------------------------------------------------------- writes and reads


async def test_a_new_execution_reads_back_with_its_task_runs_in_submission_order(store: Store) -> None:
    new = pending_execution(handlers=("z:last", "a:first", "m:middle"))
    await write(store, WriteBatch(new_executions=[new]))

    snapshot = await store.get_execution(new.execution.id)

    assert snapshot == ExecutionSnapshot(new.execution, tuple(new.task_runs))


@pytest.mark.parametrize("size", [0, 1024, 1025, 100_000])
async def test_an_input_of_any_size_reads_back_whole_and_stays_through_updates(store: Store, size: int) -> None:
    """SQLite keeps a small input in the task run's row and a large one apart: either way it reads back."""
    new = pending_execution(handlers=("tests:a", "tests:b"))
    data = bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)
    new = replace(new, task_runs=[replace(new.task_runs[0], input=Payload(data, "raw")), new.task_runs[1]])
    await write(store, submit_batch(new))
    started = records.running(new.task_runs[0], T0 + timedelta(seconds=1))
    await write(store, WriteBatch(task_runs=[started]))
    snapshot = await store.get_execution(new.execution.id)
    assert snapshot == ExecutionSnapshot(new.execution, (started, new.task_runs[1]))
    assert snapshot.task_runs[0].input.data == data


async def test_an_unknown_execution_reads_as_none(store: Store) -> None:
    assert await store.get_execution("nope") is None


async def test_updates_replace_the_rows_and_keep_the_order(store: Store) -> None:
    new = pending_execution(handlers=("a:b", "c:d"))
    await write(store, submit_batch(new))
    first, second = new.task_runs
    started = records.execution_running(new.execution, T0 + timedelta(seconds=1))
    first_running = records.running(first, T0 + timedelta(seconds=1))
    await write(store, WriteBatch(executions=[started], task_runs=[first_running], events=[event(started.id, 2)]))
    first_done = records.succeeded(first_running, T0 + timedelta(seconds=2))
    cancelled = replace(
        second,
        state=State.CANCELLED,
        reason=Reason(ReasonCode.CANCEL_REQUESTED, "a person said so"),
        updated_at=T0 + timedelta(seconds=2),
        ended_at=T0 + timedelta(seconds=2),
    )
    await write(store, WriteBatch(task_runs=[cancelled, first_done]))

    snapshot = await store.get_execution(new.execution.id)

    assert snapshot == ExecutionSnapshot(started, (first_done, cancelled))


async def test_the_last_update_of_a_record_wins_within_one_group_commit(store: Store) -> None:
    new = pending_execution()
    await write(store, WriteBatch(new_executions=[new]))
    (task_run,) = new.task_runs
    versions = [records.running(task_run, T0 + timedelta(seconds=1))]
    versions.append(replace(versions[0], progress=Progress(0.5, "half"), updated_at=T0 + timedelta(seconds=2)))
    versions.append(records.succeeded(versions[1], T0 + timedelta(seconds=3)))
    before = stats(store)

    assert await store.commit([WriteBatch(task_runs=[version]) for version in versions]) == [None] * 3

    after = stats(store)
    if before is not None and after is not None:
        assert after.commits == before.commits + 1
    snapshot = await store.get_execution(new.execution.id)
    assert snapshot is not None
    assert snapshot.task_runs == (versions[-1],)


async def test_a_naive_datetime_fails_its_own_write_and_nothing_else(store: Store) -> None:
    new = pending_execution()
    naive = replace(new.execution, deadline=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await write(store, WriteBatch(executions=[naive]))
    await write(store, WriteBatch(new_executions=[new]))
    assert await store.get_execution(new.execution.id) is not None


# --------------------------------------------------------------------------- events


async def test_events_read_in_order_after_a_sequence_and_up_to_a_limit(store: Store) -> None:
    one, other = pending_execution(), pending_execution()
    await write(store, WriteBatch(new_executions=[one, other], events=[event(other.execution.id, 1)]))
    await write(store, WriteBatch(events=[event(one.execution.id, n) for n in (3, 1, 2)]))
    await write(store, WriteBatch(events=[event(one.execution.id, n) for n in (4, 5)]))

    assert [e.sequence for e in await store.read_events(one.execution.id, 0)] == [1, 2, 3, 4, 5]
    assert await store.read_events(one.execution.id, 0) == [event(one.execution.id, n) for n in range(1, 6)]
    assert [e.sequence for e in await store.read_events(one.execution.id, 2)] == [3, 4, 5]
    assert [e.sequence for e in await store.read_events(one.execution.id, 1, limit=2)] == [2, 3]
    assert await store.read_events(one.execution.id, 5) == []
    assert await store.read_events(one.execution.id, 0, limit=0) == []
    assert await store.read_events("unknown", 0) == []


async def test_a_repeated_event_sequence_fails_the_batch_whole(store: Store) -> None:
    new = pending_execution()
    await write(store, submit_batch(new))
    started = records.execution_running(new.execution, T0 + timedelta(seconds=1))

    with pytest.raises(StoreError, match="refused"):
        await write(store, WriteBatch(executions=[started], events=[event(new.execution.id, 1)]))

    snapshot = await store.get_execution(new.execution.id)
    assert snapshot is not None
    assert snapshot.execution == new.execution  # the execution update of that batch was rolled back too


async def test_an_event_of_an_unknown_execution_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match=r"(?i)foreign key"):
        await write(store, WriteBatch(events=[event("ghost", 1)]))


# --------------------------------------------------------------------------- idempotency keys


async def test_an_idempotency_key_finds_its_execution_and_fingerprint(store: Store) -> None:
    new = pending_execution(key="order-42", fingerprint="sha256:abc")
    await write(store, submit_batch(new))

    assert await store.find_idempotency_key("order-42") == IdempotencyHit(new.execution.id, "sha256:abc")
    assert await store.find_idempotency_key("order-43") is None
    assert await store.find_idempotency_key("") is None


async def test_executions_without_a_key_never_collide(store: Store) -> None:
    await write(store, WriteBatch(new_executions=[pending_execution(), pending_execution()]))
    await write(store, WriteBatch(new_executions=[pending_execution()]))
    after = stats(store)
    assert after is None or after.batches_failed == 0


async def test_a_reused_idempotency_key_raises_a_typed_error_and_writes_nothing(store: Store) -> None:
    first = pending_execution(key="k")
    await write(store, submit_batch(first))
    again = pending_execution(key="k")

    with pytest.raises(DuplicateIdempotencyKey) as raised:
        await write(store, submit_batch(again))

    assert raised.value.key == "k"
    assert await store.get_execution(again.execution.id) is None
    assert await store.read_events(again.execution.id, 0) == []
    assert await store.find_idempotency_key("k") == IdempotencyHit(first.execution.id, "fingerprint")


async def test_a_key_reused_within_one_group_fails_only_the_later_batch(store: Store) -> None:
    stored = pending_execution(key="stored")
    await write(store, submit_batch(stored))
    winner, loser, bystander, reuser = (
        pending_execution(key="fresh"),
        pending_execution(key="fresh"),
        pending_execution(),
        pending_execution(key="stored"),
    )
    before = stats(store)

    outcomes = await store.commit([submit_batch(new) for new in (winner, loser, bystander, reuser)])

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], DuplicateIdempotencyKey)
    assert outcomes[1].key == "fresh"
    assert isinstance(outcomes[3], DuplicateIdempotencyKey)
    assert outcomes[3].key == "stored"
    after = stats(store)
    if before is not None and after is not None:
        assert after.commits == before.commits + 1  # refused before the transaction: no retries needed
        assert after.batches_committed == before.batches_committed + 2
        assert after.batches_failed == before.batches_failed + 2
    assert await store.get_execution(winner.execution.id) is not None
    assert await store.get_execution(bystander.execution.id) is not None
    assert await store.get_execution(loser.execution.id) is None


async def test_a_key_reused_within_one_batch_fails_that_batch(store: Store) -> None:
    with pytest.raises(DuplicateIdempotencyKey):
        await write(store, WriteBatch(new_executions=[pending_execution(key="twice"), pending_execution(key="twice")]))
    assert await store.find_idempotency_key("twice") is None


# --------------------------------------------------------------------------- one bad batch in a group


async def test_a_bad_batch_fails_alone_and_the_rest_of_its_group_commits(store: Store) -> None:
    existing = pending_execution()
    await write(store, submit_batch(existing))
    ghost = records.running(pending_execution().task_runs[0], T0 + timedelta(seconds=1))
    good = [pending_execution() for _ in range(3)]
    batches = [submit_batch(good[0]), WriteBatch(task_runs=[ghost]), submit_batch(good[1]), submit_batch(good[2])]
    before = stats(store)

    outcomes = await store.commit(batches)

    assert [o is None for o in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1], StoreError)
    assert ghost.id in str(outcomes[1])
    for new in good:
        assert await store.get_execution(new.execution.id) is not None
    after = stats(store)
    if before is not None and after is not None:
        assert after.batches_failed == before.batches_failed + 1
        assert after.batches_committed == before.batches_committed + 3
    # The store keeps serving.
    await write(store, submit_batch(pending_execution()))


async def test_an_update_of_an_unknown_execution_names_it(store: Store) -> None:
    with pytest.raises(StoreError, match="executions that do not exist: ghost"):
        await write(store, WriteBatch(executions=[replace(pending_execution().execution, id="ghost")]))


async def test_a_task_run_update_under_the_wrong_execution_is_refused(store: Store) -> None:
    new = pending_execution()
    await write(store, WriteBatch(new_executions=[new]))
    moved = replace(new.task_runs[0], execution_id="elsewhere")
    with pytest.raises(StoreError, match="task runs that do not exist"):
        await write(store, WriteBatch(task_runs=[moved]))


# --------------------------------------------------------------------------- lifecycle


async def test_close_is_idempotent_and_refuses_later_use(make_store: Callable[[], Store]) -> None:
    store = make_store()
    await store.open()
    await store.open()  # a second open does nothing
    await asyncio.gather(store.close(), store.close())
    await store.close()

    with pytest.raises(StoreClosed, match="closed"):
        await write(store, submit_batch(pending_execution()))
    with pytest.raises(StoreClosed):
        await write(store, WriteBatch())
    with pytest.raises(StoreClosed):
        await store.get_execution("x")
    with pytest.raises(StoreClosed):
        await store.recover()
    with pytest.raises(StoreClosed):
        await store.open()


async def test_a_store_that_was_never_opened_refuses_writes_and_closes(
    make_store: Callable[[], Store], db_path: Path
) -> None:
    store = make_store()
    with pytest.raises(StoreClosed, match="not open"):
        await write(store, submit_batch(pending_execution()))
    await store.close()
    assert not await asyncio.to_thread(db_path.exists)


@pytest.mark.parametrize("odd", ["nul \x00 inside", "\ue000 starts with the private-use mark", "\x00"])
async def test_any_text_a_caller_or_handler_chooses_round_trips_and_matches(store: Store, odd: str) -> None:
    new = pending_execution(handlers=(f"h:{odd}",), key=f"key {odd}")
    execution = replace(new.execution, name=odd)
    [task_run] = new.task_runs
    task_run = replace(task_run, input=replace(task_run.input, content_type=odd))
    new = replace(new, execution=execution, task_runs=[task_run])
    await write(store, submit_batch(new))
    failed = replace(
        task_run,
        state=State.FAILED,
        reason=Reason(ReasonCode.HANDLER_ERROR, odd),
        updated_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=1),
    )
    await write(store, WriteBatch(task_runs=[failed]))

    assert await store.get_execution(execution.id) == ExecutionSnapshot(execution, (failed,))
    assert await store.find_idempotency_key(f"key {odd}") == IdempotencyHit(execution.id, "fingerprint")
    assert await list_ids(store, handler=f"h:{odd}") == [execution.id]
    assert await store.get_execution(f"{execution.id}{odd}") is None  # an id asked for may hold anything
    assert await store.read_events(odd, 0) == []
    with pytest.raises(DuplicateIdempotencyKey):
        await write(store, submit_batch(pending_execution(key=f"key {odd}")))
