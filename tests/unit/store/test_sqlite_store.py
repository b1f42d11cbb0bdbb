"""SqliteStore on real files: writes, reads, group commit, listing, recovery, lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.server._sqlite_store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DuplicateIdempotencyKey,
    SqliteStore,
    StoreClosed,
    StoreError,
    _connect,
    migrate,
)
from taskwire.server._store import ExecutionSnapshot, IdempotencyHit, Store, WriteBatch
from taskwire.server.domain import Progress, Reason, ReasonCode, State, ValidationError
from tests.unit.store import records
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import start_writes, writer_held

pytestmark = pytest.mark.timeout(30)


def test_sqlite_store_is_a_store(store: SqliteStore) -> None:
    as_store: Store = store
    assert as_store is store


async def test_open_creates_the_folders_and_a_durable_wal_database(db_path: Path, store: SqliteStore) -> None:
    assert await asyncio.to_thread(db_path.exists)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    # The writer process opens its connection with `_connect`, as every connection of the store is opened.
    writer = _connect(db_path, busy_timeout_s=1.0, read_only=False)
    try:
        assert writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert writer.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        writer.close()


# --------------------------------------------------------------------------- writes and reads


async def test_a_new_execution_reads_back_with_its_task_runs_in_submission_order(store: SqliteStore) -> None:
    new = pending_execution(handlers=("z:last", "a:first", "m:middle"))
    await store.write(WriteBatch(new_executions=[new]))

    snapshot = await store.get_execution(new.execution.id)

    assert snapshot == ExecutionSnapshot(new.execution, tuple(new.task_runs))


async def test_an_unknown_execution_reads_as_none(store: SqliteStore) -> None:
    assert await store.get_execution("nope") is None


async def test_updates_replace_the_rows_and_keep_the_order(store: SqliteStore) -> None:
    new = pending_execution(handlers=("a:b", "c:d"))
    await store.write(submit_batch(new))
    first, second = new.task_runs
    started = records.execution_running(new.execution, T0 + timedelta(seconds=1))
    first_running = records.running(first, T0 + timedelta(seconds=1))
    await store.write(WriteBatch(executions=[started], task_runs=[first_running], events=[event(started.id, 2)]))
    first_done = records.succeeded(first_running, T0 + timedelta(seconds=2))
    cancelled = replace(
        second,
        state=State.CANCELLED,
        reason=Reason(ReasonCode.CANCEL_REQUESTED, "a person said so"),
        updated_at=T0 + timedelta(seconds=2),
        ended_at=T0 + timedelta(seconds=2),
    )
    await store.write(WriteBatch(task_runs=[cancelled, first_done]))

    snapshot = await store.get_execution(new.execution.id)

    assert snapshot == ExecutionSnapshot(started, (first_done, cancelled))


async def test_the_last_update_of_a_record_wins_within_one_group_commit(store: SqliteStore) -> None:
    new = pending_execution()
    await store.write(WriteBatch(new_executions=[new]))
    (task_run,) = new.task_runs
    versions = [records.running(task_run, T0 + timedelta(seconds=1))]
    versions.append(replace(versions[0], progress=Progress(0.5, "half"), updated_at=T0 + timedelta(seconds=2)))
    versions.append(records.succeeded(versions[1], T0 + timedelta(seconds=3)))
    before = store.stats()

    with writer_held(store):
        tasks = await start_writes(store, [WriteBatch(task_runs=[version]) for version in versions])
    await asyncio.gather(*tasks)

    assert store.stats().commits == before.commits + 1
    snapshot = await store.get_execution(new.execution.id)
    assert snapshot is not None
    assert snapshot.task_runs == (versions[-1],)


async def test_reads_see_only_committed_writes(store: SqliteStore) -> None:
    new = pending_execution()
    with writer_held(store):
        (task,) = await start_writes(store, [WriteBatch(new_executions=[new])])
        assert await store.get_execution(new.execution.id) is None
    await task
    assert await store.get_execution(new.execution.id) is not None


async def test_an_empty_batch_is_a_no_op(store: SqliteStore) -> None:
    await store.write(WriteBatch())
    assert store.stats().commits == 0


async def test_a_naive_datetime_fails_its_own_write_and_nothing_else(store: SqliteStore) -> None:
    new = pending_execution()
    naive = replace(new.execution, deadline=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.write(WriteBatch(executions=[naive]))
    await store.write(WriteBatch(new_executions=[new]))
    assert await store.get_execution(new.execution.id) is not None


# --------------------------------------------------------------------------- events


async def test_events_read_in_order_after_a_sequence_and_up_to_a_limit(store: SqliteStore) -> None:
    one, other = pending_execution(), pending_execution()
    await store.write(WriteBatch(new_executions=[one, other], events=[event(other.execution.id, 1)]))
    await store.write(WriteBatch(events=[event(one.execution.id, n) for n in (3, 1, 2)]))
    await store.write(WriteBatch(events=[event(one.execution.id, n) for n in (4, 5)]))

    assert [e.sequence for e in await store.read_events(one.execution.id, 0)] == [1, 2, 3, 4, 5]
    assert await store.read_events(one.execution.id, 0) == [event(one.execution.id, n) for n in range(1, 6)]
    assert [e.sequence for e in await store.read_events(one.execution.id, 2)] == [3, 4, 5]
    assert [e.sequence for e in await store.read_events(one.execution.id, 1, limit=2)] == [2, 3]
    assert await store.read_events(one.execution.id, 5) == []
    assert await store.read_events(one.execution.id, 0, limit=0) == []
    assert await store.read_events("unknown", 0) == []


async def test_a_repeated_event_sequence_fails_the_batch_whole(store: SqliteStore) -> None:
    new = pending_execution()
    await store.write(submit_batch(new))
    started = records.execution_running(new.execution, T0 + timedelta(seconds=1))

    with pytest.raises(StoreError, match="refused"):
        await store.write(WriteBatch(executions=[started], events=[event(new.execution.id, 1)]))

    snapshot = await store.get_execution(new.execution.id)
    assert snapshot is not None
    assert snapshot.execution == new.execution  # the execution update of that batch was rolled back too


async def test_an_event_of_an_unknown_execution_is_refused(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        await store.write(WriteBatch(events=[event("ghost", 1)]))


# --------------------------------------------------------------------------- idempotency keys


async def test_an_idempotency_key_finds_its_execution_and_fingerprint(store: SqliteStore) -> None:
    new = pending_execution(key="order-42", fingerprint="sha256:abc")
    await store.write(submit_batch(new))

    assert await store.find_idempotency_key("order-42") == IdempotencyHit(new.execution.id, "sha256:abc")
    assert await store.find_idempotency_key("order-43") is None
    assert await store.find_idempotency_key("") is None


async def test_executions_without_a_key_never_collide(store: SqliteStore) -> None:
    await store.write(WriteBatch(new_executions=[pending_execution(), pending_execution()]))
    await store.write(WriteBatch(new_executions=[pending_execution()]))
    assert store.stats().batches_failed == 0


async def test_a_reused_idempotency_key_raises_a_typed_error_and_writes_nothing(store: SqliteStore) -> None:
    first = pending_execution(key="k")
    await store.write(submit_batch(first))
    again = pending_execution(key="k")

    with pytest.raises(DuplicateIdempotencyKey) as raised:
        await store.write(submit_batch(again))

    assert raised.value.key == "k"
    assert await store.get_execution(again.execution.id) is None
    assert await store.read_events(again.execution.id, 0) == []
    assert await store.find_idempotency_key("k") == IdempotencyHit(first.execution.id, "fingerprint")


async def test_a_key_reused_within_one_group_fails_only_the_later_batch(store: SqliteStore) -> None:
    stored = pending_execution(key="stored")
    await store.write(submit_batch(stored))
    winner, loser, bystander, reuser = (
        pending_execution(key="fresh"),
        pending_execution(key="fresh"),
        pending_execution(),
        pending_execution(key="stored"),
    )
    before = store.stats()

    with writer_held(store):
        tasks = await start_writes(store, [submit_batch(new) for new in (winner, loser, bystander, reuser)])
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], DuplicateIdempotencyKey)
    assert outcomes[1].key == "fresh"
    assert isinstance(outcomes[3], DuplicateIdempotencyKey)
    assert outcomes[3].key == "stored"
    after = store.stats()
    assert after.commits == before.commits + 1  # refused before the transaction: no retries needed
    assert after.batches_committed == before.batches_committed + 2
    assert after.batches_failed == before.batches_failed + 2
    assert await store.get_execution(winner.execution.id) is not None
    assert await store.get_execution(bystander.execution.id) is not None
    assert await store.get_execution(loser.execution.id) is None


async def test_a_key_reused_within_one_batch_fails_that_batch(store: SqliteStore) -> None:
    with pytest.raises(DuplicateIdempotencyKey):
        await store.write(WriteBatch(new_executions=[pending_execution(key="twice"), pending_execution(key="twice")]))
    assert await store.find_idempotency_key("twice") is None


# --------------------------------------------------------------------------- one bad batch in a group


async def test_a_bad_batch_fails_alone_and_the_rest_of_its_group_commits(store: SqliteStore) -> None:
    existing = pending_execution()
    await store.write(submit_batch(existing))
    ghost = records.running(pending_execution().task_runs[0], T0 + timedelta(seconds=1))
    good = [pending_execution() for _ in range(3)]
    batches = [submit_batch(good[0]), WriteBatch(task_runs=[ghost]), submit_batch(good[1]), submit_batch(good[2])]
    before = store.stats()

    with writer_held(store):
        tasks = await start_writes(store, batches)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert [o is None for o in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1], StoreError)
    assert ghost.id in str(outcomes[1])
    for new in good:
        assert await store.get_execution(new.execution.id) is not None
    after = store.stats()
    assert after.batches_failed == before.batches_failed + 1
    assert after.batches_committed == before.batches_committed + 3
    # The store keeps serving.
    await store.write(submit_batch(pending_execution()))


async def test_an_update_of_an_unknown_execution_names_it(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="executions that do not exist: ghost"):
        await store.write(WriteBatch(executions=[replace(pending_execution().execution, id="ghost")]))


async def test_a_task_run_update_under_the_wrong_execution_is_refused(store: SqliteStore) -> None:
    new = pending_execution()
    await store.write(WriteBatch(new_executions=[new]))
    moved = replace(new.task_runs[0], execution_id="elsewhere")
    with pytest.raises(StoreError, match="task runs that do not exist"):
        await store.write(WriteBatch(task_runs=[moved]))


# --------------------------------------------------------------------------- group commit


async def test_concurrent_writes_share_commits(store: SqliteStore) -> None:
    news = [pending_execution() for _ in range(200)]

    await asyncio.gather(*(store.write(submit_batch(new)) for new in news))

    stats = store.stats()
    assert stats.batches_committed == 200
    assert stats.commits <= 200 // 5, stats
    assert stats.largest_commit >= 10, stats
    assert stats.rows_written == 200 * 4  # execution, task run, its input, event
    for new in news[::37]:
        assert await store.get_execution(new.execution.id) is not None


async def test_one_commit_per_batch_when_grouping_is_off(db_path: Path) -> None:
    async with SqliteStore(db_path, max_batches_per_commit=1) as store:
        await asyncio.gather(*(store.write(submit_batch(pending_execution())) for _ in range(20)))
        assert store.stats().commits == 20
        assert store.stats().largest_commit == 1


# --------------------------------------------------------------------------- listing


async def list_ids(
    store: SqliteStore, *, states: tuple[State, ...] = (), handler: str = "", page_size: int = 1000
) -> list[str]:
    """Every id the listing returns, following page tokens."""
    ids: list[str] = []
    token = ""
    while True:
        page = await store.list_executions(states=states, handler=handler, page_size=page_size, page_token=token)
        assert len(page.snapshots) <= page_size
        ids.extend(snapshot.execution.id for snapshot in page.snapshots)
        if not page.next_page_token:
            return ids
        token = page.next_page_token


async def test_listing_pages_newest_first_with_filters(store: SqliteStore) -> None:
    news = [pending_execution(handlers=("h:even" if i % 2 == 0 else "h:odd", "h:all")) for i in range(11)]
    for new in news:
        await store.write(WriteBatch(new_executions=[new]))
    done = [records.execution_succeeded(news[i].execution, T0 + timedelta(seconds=1)) for i in (1, 4, 7)]
    await store.write(WriteBatch(executions=done))
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


async def test_a_page_carries_full_snapshots(store: SqliteStore) -> None:
    new = pending_execution(handlers=("a:1", "b:2"))
    await store.write(WriteBatch(new_executions=[new]))
    page = await store.list_executions(states=(), handler="", page_size=10, page_token="")
    assert page.snapshots == [ExecutionSnapshot(new.execution, tuple(new.task_runs))]
    assert page.next_page_token == ""


async def test_the_last_full_page_has_no_next_token(store: SqliteStore) -> None:
    await store.write(WriteBatch(new_executions=[pending_execution() for _ in range(4)]))
    first = await store.list_executions(states=(), handler="", page_size=2, page_token="")
    second = await store.list_executions(states=(), handler="", page_size=2, page_token=first.next_page_token)
    assert first.next_page_token
    assert len(second.snapshots) == 2
    assert second.next_page_token == ""


@pytest.mark.parametrize("token", ["garbage", "c2VxOg==", "c2VxOi0x", "c2VxOjE=!", "bm9wZTox", "c2VxOjAx", "•"])
async def test_a_page_token_the_store_did_not_issue_is_a_validation_error(store: SqliteStore, token: str) -> None:
    with pytest.raises(ValidationError) as raised:
        await store.list_executions(states=(), handler="", page_size=10, page_token=token)
    assert raised.value.field == "page_token"


# --------------------------------------------------------------------------- recovery


async def test_recover_returns_active_executions_queue_order_and_last_sequences(db_path: Path) -> None:
    at = [T0 + timedelta(seconds=n) for n in range(10)]
    a, b, c, d = (pending_execution(at=at[0], handlers=("x:1", "x:2")) for _ in range(4))
    # c and d carry a deadline, so they are active (not cold) although nothing of them has run yet.
    c = replace(c, execution=replace(c.execution, deadline=at[9]))
    d = replace(d, execution=replace(d.execution, deadline=at[9]))
    async with SqliteStore(db_path) as store:
        await store.write(WriteBatch(new_executions=[a, b], events=[event(a.execution.id, 1)]))
        await store.write(WriteBatch(new_executions=[c, d]))
        # a: finished, gone from recovery.
        await store.write(
            WriteBatch(
                executions=[records.execution_succeeded(a.execution, at[1])],
                events=[event(a.execution.id, 2), event(b.execution.id, 1), event(b.execution.id, 2)],
            )
        )
        # b: running its first task; its second one became PENDING again later than others.
        b_running = records.execution_running(b.execution, at[2])
        b0 = records.running(b.task_runs[0], at[2])
        b1 = replace(b.task_runs[1], updated_at=at[5])
        # c: its second task re-queued at the same instant as d's first: insertion order breaks the tie.
        c1 = replace(c.task_runs[1], updated_at=at[3])
        d0 = replace(d.task_runs[0], updated_at=at[3])
        await store.write(WriteBatch(executions=[b_running], task_runs=[b1, b0, d0, c1]))
        await store.write(WriteBatch(events=[event(d.execution.id, 1)]))

    async with SqliteStore(db_path) as store:
        state = await store.recover()

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


async def test_recover_on_an_empty_store(store: SqliteStore) -> None:
    state = await store.recover()
    assert (state.active, state.last_sequences, state.pending_order, state.cold) == ([], {}, [], [])


# --------------------------------------------------------------------------- lifecycle


async def test_close_is_idempotent_and_refuses_later_use(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.open()  # a second open does nothing
    await asyncio.gather(store.close(), store.close())
    await store.close()

    with pytest.raises(StoreClosed, match="closed"):
        await store.write(submit_batch(pending_execution()))
    with pytest.raises(StoreClosed):
        await store.write(WriteBatch())
    with pytest.raises(StoreClosed):
        await store.get_execution("x")
    with pytest.raises(StoreClosed):
        await store.recover()
    with pytest.raises(StoreClosed):
        await store.open()


async def test_a_close_while_opening_wins(db_path: Path) -> None:
    store = SqliteStore(db_path)
    opened, closed = await asyncio.gather(store.open(), store.close(), return_exceptions=True)
    assert isinstance(opened, StoreClosed)
    assert closed is None
    with pytest.raises(StoreClosed):
        await store.get_execution("x")


async def test_a_store_that_was_never_opened_refuses_writes_and_closes(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with pytest.raises(StoreClosed, match="not open"):
        await store.write(submit_batch(pending_execution()))
    await store.close()
    assert not await asyncio.to_thread(db_path.exists)


async def test_close_commits_what_is_queued_first(db_path: Path) -> None:
    news = [pending_execution() for _ in range(50)]
    store = SqliteStore(db_path)
    await store.open()
    writes = [asyncio.create_task(store.write(submit_batch(new))) for new in news]
    await asyncio.sleep(0)  # every write is queued
    await store.close()
    assert all(task.done() and task.exception() is None for task in writes)

    async with SqliteStore(db_path) as reopened:
        for new in news:
            assert await reopened.get_execution(new.execution.id) is not None


def test_memory_databases_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        SqliteStore(":memory:")
    with pytest.raises(ValueError, match="readers"):
        SqliteStore("x.db", readers=0)
    with pytest.raises(ValueError, match="max_batches_per_commit"):
        SqliteStore("x.db", max_batches_per_commit=0)


# --------------------------------------------------------------------------- schema versions


def _set_pragma(path: Path, pragma: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA {pragma} = {value}")
        conn.commit()
    finally:
        conn.close()


async def test_a_database_from_a_newer_server_is_refused(db_path: Path) -> None:
    _set_pragma(db_path, "user_version", SCHEMA_VERSION + 1)
    store = SqliteStore(db_path)
    with pytest.raises(StoreError, match="newer than this server supports"):
        await store.open()
    await store.close()


async def test_a_file_of_another_application_is_refused(db_path: Path) -> None:
    _set_pragma(db_path, "application_id", 1234)
    with pytest.raises(StoreError, match="not a taskwire database"):
        await SqliteStore(db_path).open()


async def test_a_later_migration_runs_once_on_an_existing_database(db_path: Path) -> None:
    async with SqliteStore(db_path) as store:
        await store.write(submit_batch(pending_execution()))

    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE executions ADD COLUMN labels TEXT NOT NULL DEFAULT '[]'")

    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn, (*MIGRATIONS, add_column)) == SCHEMA_VERSION
        assert migrate(conn, (*MIGRATIONS, add_column)) == SCHEMA_VERSION + 1  # nothing left to do
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert conn.execute("SELECT labels FROM executions").fetchall() == [("[]",)]
    finally:
        conn.close()


# --------------------------------------------------------------------------- the writer process


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie has exited
    except FileNotFoundError:
        return True


async def test_when_the_writer_process_dies_every_write_fails_and_nothing_hangs(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        kept = pending_execution()
        await store.write(submit_batch(kept))
        pid = store.writer_pid
        assert pid is not None
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)

        for _ in range(2):  # the first write finds it dead; later ones are refused the same way
            with pytest.raises(StoreError, match="writer process exited unexpectedly"):
                await asyncio.wait_for(store.write(submit_batch(pending_execution())), timeout=30)
        assert await store.get_execution(kept.execution.id) is not None  # reads go on
    finally:
        await asyncio.wait_for(store.close(), timeout=30)


async def test_an_interrupt_sent_to_the_whole_process_group_leaves_the_writer_writing(db_path: Path) -> None:
    """Ctrl-C in a terminal reaches every process of the group; stopping is the server's decision."""
    store = SqliteStore(db_path)
    await store.open()
    try:
        pid = store.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        new = pending_execution()
        await asyncio.wait_for(store.write(submit_batch(new)), timeout=30)
        assert await store.get_execution(new.execution.id) is not None
    finally:
        await store.close()
    assert _process_gone(pid)


async def test_closing_the_store_ends_its_writer_process(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    pid = store.writer_pid
    assert pid is not None
    await store.close()
    assert store.writer_pid is None
    assert _process_gone(pid)


async def test_a_folder_named_server_in_the_working_directory_does_not_shadow_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Projects that run taskwire often have a `server` folder of their own."""
    theirs = tmp_path / "project" / "server"
    theirs.mkdir(parents=True)
    (theirs / "__init__.py").write_text("raise ImportError('this is the project\\'s own server package')\n")
    monkeypatch.chdir(theirs.parent)
    store = SqliteStore(tmp_path / "taskwire.db")
    await asyncio.wait_for(store.open(), timeout=30)
    try:
        new = pending_execution()
        await store.write(submit_batch(new))
        assert await store.get_execution(new.execution.id) is not None
    finally:
        await store.close()
