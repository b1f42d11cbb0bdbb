"""Cold recovery, batch reads, the schema-v2 migration and encoding on the writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskwire.server import _sqlite_store as codec
from taskwire.server._sqlite_store import MIGRATIONS, SCHEMA_VERSION, SqliteStore, migrate
from taskwire.server._store import ColdTaskRun, ExecutionSnapshot, NewExecution, WriteBatch
from taskwire.server.domain import Attempt, AttemptOutcome, Closing, ErrorInfo, Reason, ReasonCode, RetryPolicy, State
from tests.unit.store import records
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import start_writes, writer_held

AT = [T0 + timedelta(seconds=n) for n in range(10)]


def cold_entries(new: NewExecution) -> list[ColdTaskRun]:
    return [ColdTaskRun(t.id, t.execution_id, t.handler) for t in new.task_runs]


# --------------------------------------------------------------------------- classification


def _running_task_run(new: NewExecution) -> WriteBatch:
    return WriteBatch(task_runs=[records.running(new.task_runs[0], AT[1])])


def _waiting_task_run(new: NewExecution) -> WriteBatch:
    waiting = replace(
        new.task_runs[1], state=State.WAITING, reason=Reason(ReasonCode.SCHEDULED, "later"), updated_at=AT[1]
    )
    return WriteBatch(task_runs=[waiting])


def _pending_with_an_attempt(new: NewExecution) -> WriteBatch:
    """A task run back in the queue after a failed attempt: PENDING, but it has history."""
    task_run = new.task_runs[1]
    failed = Attempt(task_run.id, 1, "worker-1", AT[1], AttemptOutcome.FAILED, AT[2], error=ErrorInfo("Boom", "boom"))
    return WriteBatch(task_runs=[replace(task_run, started_at=AT[1], updated_at=AT[2], attempts=(failed,))])


def _closing(new: NewExecution) -> WriteBatch:
    closing = Closing(State.CANCELLED, Reason(ReasonCode.CANCEL_REQUESTED, "stop"))
    return WriteBatch(executions=[replace(new.execution, closing=closing, updated_at=AT[1])])


def _deadline(new: NewExecution) -> WriteBatch:
    return WriteBatch(executions=[replace(new.execution, deadline=AT[9], updated_at=AT[1])])


def _running_execution(new: NewExecution) -> WriteBatch:
    return WriteBatch(executions=[records.execution_running(new.execution, AT[1])])


DISQUALIFIERS: dict[str, Callable[[NewExecution], WriteBatch]] = {
    "a RUNNING task run": _running_task_run,
    "a WAITING task run": _waiting_task_run,
    "a PENDING task run with an attempt": _pending_with_an_attempt,
    "a closing execution": _closing,
    "a deadline": _deadline,
    "a RUNNING execution": _running_execution,
}


@pytest.mark.parametrize("change", DISQUALIFIERS.values(), ids=list(DISQUALIFIERS))
async def test_one_disqualifying_condition_makes_an_execution_active(
    db_path: Path, change: Callable[[NewExecution], WriteBatch]
) -> None:
    cold = pending_execution(handlers=("h:1", "h:2"))
    other = pending_execution(handlers=("h:1", "h:2"))
    batch = change(other)
    async with SqliteStore(db_path) as store:
        await store.write(WriteBatch(new_executions=[cold, other]))
        await store.write(batch)
        expected = await store.get_execution(other.execution.id)
        state = await store.recover()

    assert expected is not None
    assert state.active == [expected]
    assert state.cold == cold_entries(cold)
    assert state.last_sequences == {other.execution.id: 0}
    pending = [t for t in expected.task_runs if t.state is State.PENDING]
    assert sorted(state.pending_order) == sorted(t.id for t in pending)


async def test_a_terminal_execution_is_neither_active_nor_cold(db_path: Path) -> None:
    done = pending_execution()
    cold = pending_execution()
    async with SqliteStore(db_path) as store:
        await store.write(WriteBatch(new_executions=[done, cold]))
        await store.write(WriteBatch(executions=[records.execution_succeeded(done.execution, AT[1])]))
        state = await store.recover()
    assert (state.active, state.pending_order, state.last_sequences) == ([], [], {})
    assert state.cold == cold_entries(cold)


async def test_an_execution_becomes_cold_again_once_nothing_disqualifies_it(db_path: Path) -> None:
    new = pending_execution()
    async with SqliteStore(db_path) as store:
        await store.write(WriteBatch(new_executions=[new]))
        await store.write(_deadline(new))
        await store.write(WriteBatch(executions=[replace(new.execution, updated_at=AT[2])]))
        state = await store.recover()
    assert (state.active, state.cold) == ([], cold_entries(new))


async def test_cold_task_runs_come_in_queue_order_apart_from_active_ones(db_path: Path) -> None:
    a, b, c = (pending_execution(handlers=("q:1", "q:2")) for _ in range(3))
    active = pending_execution(handlers=("q:1",))
    active = replace(active, execution=replace(active.execution, deadline=AT[9]))
    # a's first task run moved later; b's second one to the same instant: insertion order breaks the tie.
    a0 = replace(a.task_runs[0], updated_at=AT[3])
    b1 = replace(b.task_runs[1], updated_at=AT[3])
    c1 = replace(c.task_runs[1], updated_at=AT[1])
    async with SqliteStore(db_path) as store:
        await store.write(WriteBatch(new_executions=[a, b, active, c]))
        await store.write(WriteBatch(task_runs=[b1, c1, a0], events=[event(active.execution.id, 1)]))
        state = await store.recover()

    assert [entry.task_run_id for entry in state.cold] == [
        a.task_runs[1].id,  # AT[0], in insertion order
        b.task_runs[0].id,
        c.task_runs[0].id,
        c1.id,  # AT[1]
        a0.id,  # AT[3], inserted before b1
        b1.id,
    ]
    assert {entry.execution_id for entry in state.cold} == {a.execution.id, b.execution.id, c.execution.id}
    assert all(entry.handler in ("q:1", "q:2") for entry in state.cold)
    assert [s.execution.id for s in state.active] == [active.execution.id]
    assert state.pending_order == [active.task_runs[0].id]
    assert state.last_sequences == {active.execution.id: 1}


def test_the_cold_queue_is_one_covering_index_scan_without_a_sort(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "plan.sqlite3", isolation_level=None)
    try:
        migrate(conn)
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {codec._COLD_QUEUE}")]
    finally:
        conn.close()
    assert plan[0] == "SCAN t USING COVERING INDEX task_runs_pending"
    assert not any("TEMP B-TREE" in step for step in plan)
    assert any(step.startswith("SEARCH e USING COVERING INDEX executions_cold") for step in plan)
    assert any(step.startswith("SEARCH o USING INDEX task_runs_not_cold") for step in plan)


# --------------------------------------------------------------------------- batch reads


async def test_get_executions_returns_those_found(store: SqliteStore) -> None:
    news = [pending_execution(handlers=("g:1", "g:2")) for _ in range(3)]
    await store.write(WriteBatch(new_executions=news))
    running = records.running(news[1].task_runs[0], AT[1])
    await store.write(WriteBatch(task_runs=[running]))

    found = await store.get_executions([news[1].execution.id, "missing", news[0].execution.id, news[1].execution.id])

    assert found == {
        news[0].execution.id: ExecutionSnapshot(news[0].execution, tuple(news[0].task_runs)),
        news[1].execution.id: ExecutionSnapshot(news[1].execution, (running, news[1].task_runs[1])),
    }
    assert await store.get_executions([]) == {}
    assert await store.get_executions(["missing"]) == {}


async def test_get_executions_and_last_sequences_go_beyond_one_chunk(store: SqliteStore) -> None:
    count = 2 * codec._CHUNK + 7
    news = [pending_execution() for _ in range(count)]
    await store.write(WriteBatch(new_executions=news, events=[event(new.execution.id, 1) for new in news[::2]]))
    ids = [new.execution.id for new in news]

    found = await store.get_executions(ids)
    assert list(found) == ids  # every one, in the order asked
    assert all(found[new.execution.id].task_runs == tuple(new.task_runs) for new in news)
    assert await store.last_sequences(ids) == {
        new.execution.id: 1 if position % 2 == 0 else 0 for position, new in enumerate(news)
    }


async def test_last_sequences_gives_the_highest_or_zero_for_each_id(store: SqliteStore) -> None:
    a, b = pending_execution(), pending_execution()
    await store.write(WriteBatch(new_executions=[a, b], events=[event(a.execution.id, n) for n in (1, 2, 3)]))
    assert await store.last_sequences([a.execution.id, b.execution.id, "missing"]) == {
        a.execution.id: 3,
        b.execution.id: 0,
        "missing": 0,
    }
    assert await store.last_sequences([]) == {}


# --------------------------------------------------------------------------- migration


async def test_a_schema_v1_file_migrates_and_recovers_cold_and_active(db_path: Path) -> None:
    cold = pending_execution(handlers=("m:1", "m:2"))
    active = pending_execution()
    running = records.running(active.task_runs[0], AT[1])
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn, MIGRATIONS[:1]) == 0  # the schema as version 1 shipped it
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        writer = codec._Writer(conn)
        conn.execute("BEGIN")
        writer._apply([codec._Rows.of(submit_batch(cold)), codec._Rows.of(submit_batch(active))])
        writer._apply([codec._Rows.of(WriteBatch(task_runs=[running], events=[event(active.execution.id, 2)]))])
        conn.execute("COMMIT")
    finally:
        conn.close()

    async with SqliteStore(db_path) as store:
        state = await store.recover()
        assert await store.get_execution(cold.execution.id) == ExecutionSnapshot(cold.execution, tuple(cold.task_runs))

    assert SCHEMA_VERSION == 2
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    assert {"task_runs_pending", "executions_cold", "task_runs_not_cold"} <= indexes
    assert state.cold == cold_entries(cold)
    assert state.active == [ExecutionSnapshot(active.execution, (running,))]
    assert state.last_sequences == {active.execution.id: 2}
    assert state.pending_order == []


# --------------------------------------------------------------------------- encoding


async def test_an_unencodable_batch_fails_alone_and_the_rest_of_its_group_commits(store: SqliteStore) -> None:
    good = [pending_execution() for _ in range(3)]
    bad = pending_execution()
    naive = replace(bad, execution=replace(bad.execution, deadline=T0.replace(tzinfo=None)))
    batches = [submit_batch(good[0]), submit_batch(naive), submit_batch(good[1]), submit_batch(good[2])]
    before = store.stats()

    with writer_held(store):
        tasks = await start_writes(store, batches)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert [o is None for o in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1], ValueError)
    assert "naive datetime" in str(outcomes[1])
    for new in good:
        assert await store.get_execution(new.execution.id) is not None
    assert await store.get_execution(bad.execution.id) is None
    after = store.stats()
    assert after.batches_failed == before.batches_failed + 1
    assert after.batches_committed == before.batches_committed + 3
    assert after.commits == before.commits + 1  # the good ones still shared one commit


async def test_batches_are_encoded_by_the_caller_not_by_the_writer_thread(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding in the writer thread would contend with the event loop for the interpreter lock."""
    threads: list[str] = []
    encode = codec.execution_to_row

    def spy(execution: Any) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return encode(execution)

    monkeypatch.setattr(codec, "execution_to_row", spy)
    await store.write(submit_batch(pending_execution()))
    assert threads == [threading.current_thread().name]


# --------------------------------------------------------------------------- memoized codec


def test_decoded_metadata_is_not_shared_between_records() -> None:
    new = pending_execution()
    row = codec.execution_to_row(new.execution)
    first = codec.execution_from_row(row)
    assert isinstance(first.metadata, dict)
    first.metadata["changed"] = "yes"
    assert codec.execution_from_row(row).metadata == {"team": "store"}


def test_equal_retry_policies_that_encode_differently_keep_their_own_text() -> None:
    assert codec._retry_policy_to_db(RetryPolicy(backoff_coefficient=0.0)) != codec._retry_policy_to_db(
        RetryPolicy(backoff_coefficient=-0.0)
    )
    back = codec._memo_retry_policies_from_db.get(
        codec._retry_policy_to_db(RetryPolicy(backoff_coefficient=-0.0)), codec._retry_policy_from_text
    )
    assert str(back.backoff_coefficient) == "-0.0"


def test_a_full_memo_starts_over() -> None:
    memo = codec._Memo(limit=2)
    calls: list[int] = []

    def make(key: int) -> int:
        calls.append(key)
        return key * 10

    assert [memo.get(k, make) for k in (1, 2, 1, 3, 1)] == [10, 20, 10, 30, 10]
    assert calls == [1, 2, 3, 1]
