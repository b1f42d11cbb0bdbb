"""SqliteStore on real files: what only SQLite has (the file, its schema versions, the writer process).

What every store does is in the behaviour suite (`test_behaviour_*.py`), which runs on SQLite too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from taskwire.server.store import SCHEMA_VERSION, SqliteStore, StoreClosed, StoreError, WriteBatch
from taskwire.server.store._sqlite_schema import MIGRATIONS, connect, migrate
from tests.harness import process_gone
from tests.unit.store.records import pending_execution, submit_batch
from tests.unit.store.support import write, writer_held

pytestmark = pytest.mark.timeout(30)


async def test_open_creates_the_folders_and_a_durable_wal_database(db_path: Path, sqlite: SqliteStore) -> None:
    assert await asyncio.to_thread(db_path.exists)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    # The writer process opens its connection with `connect`, as every connection of the store is opened.
    writer = connect(db_path, busy_timeout_s=1.0, read_only=False)
    try:
        assert writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert writer.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        writer.close()


async def test_reads_see_only_committed_writes(sqlite: SqliteStore) -> None:
    new = pending_execution()
    async with writer_held(sqlite):
        task = asyncio.create_task(write(sqlite, WriteBatch(new_executions=[new])))
        await asyncio.sleep(0)  # the commit is encoded and waits for the writer
        assert not task.done()
        assert await sqlite.get_execution(new.execution.id) is None
    await task
    assert await sqlite.get_execution(new.execution.id) is not None


async def test_an_empty_batch_is_a_no_op(sqlite: SqliteStore) -> None:
    await write(sqlite, WriteBatch())
    assert sqlite.stats().commits == 0


# --------------------------------------------------------------------------- commits


async def test_each_commit_call_is_one_transaction(sqlite: SqliteStore) -> None:
    """The store does not gather concurrent commits: grouping is the committer's (see the package)."""
    await asyncio.gather(*(write(sqlite, submit_batch(pending_execution())) for _ in range(20)))
    assert sqlite.stats().commits == 20
    assert sqlite.stats().largest_commit == 1


async def test_a_commit_reaches_the_writer_process_before_the_loop_runs_anything_else(
    db_path: Path, sqlite: SqliteStore
) -> None:
    """The group leaves in the caller's own step: while the event loop stays busy after it (here: blocked),
    the writer process commits it all the same; a hand-over left for a later loop turn would never go."""
    new = pending_execution()
    task = asyncio.create_task(write(sqlite, submit_batch(new)))
    await asyncio.sleep(0)  # the commit runs up to its first wait, and no further
    conn = sqlite3.connect(db_path, timeout=5)
    try:
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:  # the loop stays blocked meanwhile
            found = conn.execute("SELECT id FROM executions WHERE id = ?", (new.execution.id,)).fetchone()
    finally:
        conn.close()
    assert found is not None, "the writer process did not get the group while the event loop was busy"
    await task


# --------------------------------------------------------------------------- lifecycle


async def test_a_close_while_opening_wins(db_path: Path) -> None:
    store = SqliteStore(db_path)
    opened, closed = await asyncio.gather(store.open(), store.close(), return_exceptions=True)
    assert isinstance(opened, StoreClosed)
    assert closed is None
    with pytest.raises(StoreClosed):
        await store.get_execution("x")


async def test_close_commits_what_is_queued_first(db_path: Path) -> None:
    news = [pending_execution() for _ in range(50)]
    store = SqliteStore(db_path)
    await store.open()
    writes = [asyncio.create_task(write(store, submit_batch(new))) for new in news]
    await asyncio.sleep(0)  # every write is encoded and waits its turn
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
        await write(store, submit_batch(pending_execution()))

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


async def test_a_commit_whose_caller_stops_waiting_is_made_and_the_next_commit_gets_its_own_answer(
    sqlite: SqliteStore,
) -> None:
    kept = pending_execution()
    abandoned = asyncio.create_task(sqlite.commit([submit_batch(kept)]))
    await asyncio.sleep(0)  # it has sent its group to the writer process and waits for the answer
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned

    # Sent while the abandoned group may still be in the writer: each answer goes to its own group.
    [refused] = await sqlite.commit([WriteBatch(executions=[replace(pending_execution().execution, id="ghost")])])
    assert isinstance(refused, StoreError)
    assert "ghost" in str(refused)
    fresh = pending_execution()
    assert await sqlite.commit([submit_batch(fresh)]) == [None]
    assert await sqlite.get_execution(kept.execution.id) is not None
    assert await sqlite.get_execution(fresh.execution.id) is not None


async def test_when_the_writer_process_dies_every_write_fails_and_nothing_hangs(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        kept = pending_execution()
        await write(store, submit_batch(kept))
        pid = store.writer_pid
        assert pid is not None
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)

        for _ in range(2):  # the first write finds it dead; later ones are refused the same way
            with pytest.raises(StoreError, match="writer process exited unexpectedly"):
                await asyncio.wait_for(write(store, submit_batch(pending_execution())), timeout=30)
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
        await asyncio.wait_for(write(store, submit_batch(new)), timeout=30)
        assert await store.get_execution(new.execution.id) is not None
    finally:
        await store.close()
    assert process_gone(pid)


async def test_closing_the_store_ends_its_writer_process(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    pid = store.writer_pid
    assert pid is not None
    await store.close()
    assert store.writer_pid is None
    assert process_gone(pid)


async def test_an_open_given_up_while_the_writer_starts_is_closed_whole(db_path: Path) -> None:
    # The caller's deadline passes while the writer process starts: closing the store still stops the writer
    # and lets go of the database, so that another store opens it at once.
    store = SqliteStore(db_path)
    opening = asyncio.ensure_future(store.open())
    await asyncio.sleep(0)  # the writer's start is under way
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await asyncio.wait_for(store.close(), timeout=30)
    assert store._process is not None, "the writer had started"
    assert process_gone(store._process.pid)
    again = SqliteStore(db_path)
    await asyncio.wait_for(again.open(), timeout=5)  # the lock was let go: no wait for an orphan
    await again.close()


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
        await write(store, submit_batch(new))
        assert await store.get_execution(new.execution.id) is not None
    finally:
        await store.close()
