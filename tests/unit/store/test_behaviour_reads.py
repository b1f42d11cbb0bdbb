"""The behaviour every store keeps in its reads: listing and paging, batch reads, recovery, cold executions.

Each test runs on every store of the `make_store` fixture; a new store passes this suite to join.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from taskwire.server.domain import (
    DEFAULT_PRIORITY,
    Attempt,
    AttemptOutcome,
    Closing,
    ErrorInfo,
    Reason,
    ReasonCode,
    State,
    ValidationError,
)
from taskwire.server.store import ExecutionSnapshot, NewExecution, Store, WriteBatch
from tests.unit.store import records
from tests.unit.store.conftest import Reopen
from tests.unit.store.records import T0, event, pending_execution
from tests.unit.store.support import cold_entries, list_ids, write

pytestmark = pytest.mark.timeout(30)
AT = [T0 + timedelta(seconds=n) for n in range(10)]


# --------------------------------------------------------------------------- listing


async def test_listing_pages_newest_first_with_filters(store: Store) -> None:
    news = [pending_execution(handlers=("h:even" if i % 2 == 0 else "h:odd", "h:all")) for i in range(11)]
    for new in news:
        await write(store, WriteBatch(new_executions=[new]))
    done = [records.execution_succeeded(news[i].execution, T0 + timedelta(seconds=1)) for i in (1, 4, 7)]
    await write(store, WriteBatch(executions=done))
    newest_first = [new.execution.id for new in reversed(news)]
    finished = {execution.id for execution in done}

    for page_size in (1, 3, 11, 1000):
        assert await list_ids(store, page_size=page_size) == newest_first
    assert await list_ids(store, states=(State.SUCCESS,), page_size=2) == [i for i in newest_first if i in finished]
    assert await list_ids(store, states=(State.PENDING, State.SUCCESS), page_size=4) == newest_first
    assert await list_ids(store, states=(State.FAILED,)) == []
    evens = [new.execution.id for new in reversed(news[::2])]
    assert await list_ids(store, handler="h:even", page_size=2) == evens
    assert await list_ids(store, handler="h:all", page_size=5) == newest_first
    assert await list_ids(store, handler="h:none") == []
    assert await list_ids(store, states=(State.SUCCESS,), handler="h:even", page_size=1) == [news[4].execution.id]


async def test_a_page_carries_full_snapshots(store: Store) -> None:
    new = pending_execution(handlers=("a:1", "b:2"))
    await write(store, WriteBatch(new_executions=[new]))
    page = await store.list_executions(states=(), handler="", page_size=10, page_token="")
    assert page.snapshots == [ExecutionSnapshot(new.execution, tuple(new.task_runs))]
    assert page.next_page_token == ""


async def test_the_last_full_page_has_no_next_token(store: Store) -> None:
    await write(store, WriteBatch(new_executions=[pending_execution() for _ in range(4)]))
    first = await store.list_executions(states=(), handler="", page_size=2, page_token="")
    second = await store.list_executions(states=(), handler="", page_size=2, page_token=first.next_page_token)
    assert first.next_page_token
    assert len(second.snapshots) == 2
    assert second.next_page_token == ""


# The last two: numbers past the largest a store numbers rows with (2**63 - 1), as a forged token may carry.
_FOREIGN_TOKENS = ["garbage", "c2VxOg==", "c2VxOi0x", "c2VxOjE=!", "bm9wZTox", "c2VxOjAx", "•"]
_FOREIGN_TOKENS += ["c2VxOjEwMDAwMDAwMDAwMDAwMDAwMDAwMA==", "c2VxOjkyMjMzNzIwMzY4NTQ3NzU4MDg="]


@pytest.mark.parametrize("token", _FOREIGN_TOKENS)
async def test_a_page_token_the_store_did_not_issue_is_a_validation_error(store: Store, token: str) -> None:
    with pytest.raises(ValidationError) as raised:
        await store.list_executions(states=(), handler="", page_size=10, page_token=token)
    assert raised.value.field == "page_token"


# --------------------------------------------------------------------------- batch reads


async def test_get_executions_returns_those_found(store: Store) -> None:
    news = [pending_execution(handlers=("g:1", "g:2")) for _ in range(3)]
    await write(store, WriteBatch(new_executions=news))
    running = records.running(news[1].task_runs[0], AT[1])
    await write(store, WriteBatch(task_runs=[running]))

    found = await store.get_executions([news[1].execution.id, "missing", news[0].execution.id, news[1].execution.id])

    assert found == {
        news[0].execution.id: ExecutionSnapshot(news[0].execution, tuple(news[0].task_runs)),
        news[1].execution.id: ExecutionSnapshot(news[1].execution, (running, news[1].task_runs[1])),
    }
    assert await store.get_executions([]) == {}
    assert await store.get_executions(["missing"]) == {}


async def test_last_sequences_gives_the_highest_or_zero_for_each_id(store: Store) -> None:
    a, b = pending_execution(), pending_execution()
    await write(store, WriteBatch(new_executions=[a, b], events=[event(a.execution.id, n) for n in (1, 2, 3)]))
    assert await store.last_sequences([a.execution.id, b.execution.id, "missing"]) == {
        a.execution.id: 3,
        b.execution.id: 0,
        "missing": 0,
    }
    assert await store.last_sequences([]) == {}


# --------------------------------------------------------------------------- recovery


async def test_recover_returns_active_executions_queue_order_and_last_sequences(store: Store, reopen: Reopen) -> None:
    at = [T0 + timedelta(seconds=n) for n in range(10)]
    a, b, c, d = (pending_execution(at=at[0], handlers=("x:1", "x:2")) for _ in range(4))
    # c and d carry a deadline, so they are active (not cold) although nothing of them has run yet.
    c = replace(c, execution=replace(c.execution, deadline=at[9]))
    d = replace(d, execution=replace(d.execution, deadline=at[9]))
    await write(store, WriteBatch(new_executions=[a, b], events=[event(a.execution.id, 1)]))
    await write(store, WriteBatch(new_executions=[c, d]))
    # a: finished, gone from recovery.
    await write(
        store,
        WriteBatch(
            executions=[records.execution_succeeded(a.execution, at[1])],
            events=[event(a.execution.id, 2), event(b.execution.id, 1), event(b.execution.id, 2)],
        ),
    )
    # b: running its first task; its second one became PENDING again later than others.
    b_running = records.execution_running(b.execution, at[2])
    b0 = records.running(b.task_runs[0], at[2])
    b1 = replace(b.task_runs[1], updated_at=at[5])
    # c: its second task re-queued at the same instant as d's first: insertion order breaks the tie.
    c1 = replace(c.task_runs[1], updated_at=at[3])
    d0 = replace(d.task_runs[0], updated_at=at[3])
    await write(store, WriteBatch(executions=[b_running], task_runs=[b1, b0, d0, c1]))
    await write(store, WriteBatch(events=[event(d.execution.id, 1)]))

    state = await (await reopen(store)).recover()

    assert [s.execution.id for s in state.active] == [b.execution.id, c.execution.id, d.execution.id]
    assert state.active[0] == ExecutionSnapshot(b_running, (b0, b1))
    assert state.active[1].task_runs == (c.task_runs[0], c1)
    assert state.last_sequences == {b.execution.id: 2, c.execution.id: 0, d.execution.id: 1}
    assert state.pending_order == [
        c.task_runs[0].id,  # unchanged since submission (at[0]), inserted before d's
        d.task_runs[1].id,
        c1.id,  # at[3], inserted before d0
        d0.id,
        b1.id,  # at[5]
    ]


async def test_recover_on_an_empty_store(store: Store) -> None:
    state = await store.recover()
    assert (state.active, state.last_sequences, state.pending_order, state.cold) == ([], {}, [], [])


# --------------------------------------------------------------------------- cold classification


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


def _schedule_to_start(new: NewExecution) -> WriteBatch:
    task_run = new.task_runs[1]
    return WriteBatch(task_runs=[replace(task_run, schedule_to_start_timeout=timedelta(seconds=5), updated_at=AT[1])])


def _priority(new: NewExecution) -> WriteBatch:
    """Cold task runs come back in the store's plain queue order: one of another priority stays in memory."""
    return WriteBatch(task_runs=[replace(new.task_runs[1], priority=DEFAULT_PRIORITY + 1, updated_at=AT[1])])


def _concurrency_key(new: NewExecution) -> WriteBatch:
    """The engine counts the places of a key: a task run with one stays in memory."""
    keyed = replace(new.task_runs[1], concurrency_key="customer-42", concurrency_limit=2, updated_at=AT[1])
    return WriteBatch(task_runs=[keyed])


def _fairness_key(new: NewExecution) -> WriteBatch:
    return WriteBatch(task_runs=[replace(new.task_runs[1], fairness_key="tenant-a", updated_at=AT[1])])


def _rate_limit(new: NewExecution) -> WriteBatch:
    keyed = replace(new.task_runs[1], rate_limit="remote-api", rate_limit_key="customer-42", updated_at=AT[1])
    return WriteBatch(task_runs=[keyed])


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
    "a schedule-to-start timeout": _schedule_to_start,
    "a priority other than the default": _priority,
    "a concurrency key": _concurrency_key,
    "a fairness key": _fairness_key,
    "a rate limit": _rate_limit,
    "a closing execution": _closing,
    "a deadline": _deadline,
    "a RUNNING execution": _running_execution,
}


@pytest.mark.parametrize("change", DISQUALIFIERS.values(), ids=list(DISQUALIFIERS))
async def test_one_disqualifying_condition_makes_an_execution_active(
    store: Store, change: Callable[[NewExecution], WriteBatch]
) -> None:
    cold = pending_execution(handlers=("h:1", "h:2"))
    other = pending_execution(handlers=("h:1", "h:2"))
    batch = change(other)
    await write(store, WriteBatch(new_executions=[cold, other]))
    await write(store, batch)
    expected = await store.get_execution(other.execution.id)
    state = await store.recover()

    assert expected is not None
    assert state.active == [expected]
    assert state.cold == cold_entries(cold)
    assert state.last_sequences == {other.execution.id: 0}
    pending = [t for t in expected.task_runs if t.state is State.PENDING]
    assert sorted(state.pending_order) == sorted(t.id for t in pending)


async def test_a_terminal_execution_is_neither_active_nor_cold(store: Store) -> None:
    done = pending_execution()
    cold = pending_execution()
    await write(store, WriteBatch(new_executions=[done, cold]))
    await write(store, WriteBatch(executions=[records.execution_succeeded(done.execution, AT[1])]))
    state = await store.recover()
    assert (state.active, state.pending_order, state.last_sequences) == ([], [], {})
    assert state.cold == cold_entries(cold)


async def test_an_execution_becomes_cold_again_once_nothing_disqualifies_it(store: Store) -> None:
    new = pending_execution()
    await write(store, WriteBatch(new_executions=[new]))
    await write(store, _deadline(new))
    await write(store, WriteBatch(executions=[replace(new.execution, updated_at=AT[2])]))
    state = await store.recover()
    assert (state.active, state.cold) == ([], cold_entries(new))


async def test_cold_task_runs_come_in_queue_order_apart_from_active_ones(store: Store) -> None:
    a, b, c = (pending_execution(handlers=("q:1", "q:2")) for _ in range(3))
    active = pending_execution(handlers=("q:1",))
    active = replace(active, execution=replace(active.execution, deadline=AT[9]))
    # a's first task run moved later; b's second one to the same instant: insertion order breaks the tie.
    a0 = replace(a.task_runs[0], updated_at=AT[3])
    b1 = replace(b.task_runs[1], updated_at=AT[3])
    c1 = replace(c.task_runs[1], updated_at=AT[1])
    await write(store, WriteBatch(new_executions=[a, b, active, c]))
    await write(store, WriteBatch(task_runs=[b1, c1, a0], events=[event(active.execution.id, 1)]))
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


# --------------------------------------------------------------------------- identities


async def test_the_submitter_and_the_workers_identity_survive_a_reopen(store: Store, reopen: Reopen) -> None:
    mine = pending_execution()
    mine = replace(mine, execution=replace(mine.execution, submitted_by="alice"))
    theirs = pending_execution()
    theirs = replace(theirs, execution=replace(theirs.execution, submitted_by="bob"))
    anonymous = pending_execution()
    for new in (mine, theirs, anonymous):
        await write(store, WriteBatch(new_executions=[new]))
    running = records.running(mine.task_runs[0], AT[1])
    running = replace(
        running, attempts=(replace(running.attempts[0], worker_identity="worker-a", worker_instance="instance-a"),)
    )
    await write(store, WriteBatch(task_runs=[running]))

    store = await reopen(store)
    got = await store.get_execution(mine.execution.id)
    assert got is not None
    assert got.execution.submitted_by == "alice"
    assert got.task_runs[0].attempts[0].worker_identity == "worker-a"
    assert got.task_runs[0].attempts[0].worker_instance == "instance-a"
    page = await store.list_executions(states=(), handler="", page_size=10, page_token="", submitted_by="alice")
    assert [s.execution.id for s in page.snapshots] == [mine.execution.id]
    page = await store.list_executions(
        states=(State.PENDING,), handler="", page_size=10, page_token="", submitted_by=""
    )
    assert [s.execution.id for s in page.snapshots] == [anonymous.execution.id]
    everyone = await list_ids(store)
    assert set(everyone) == {mine.execution.id, theirs.execution.id, anonymous.execution.id}
