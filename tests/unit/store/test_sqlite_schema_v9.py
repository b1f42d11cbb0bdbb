"""SQLite schema version 9: a version-8 file migrates and keeps its data; small inputs live in the task
run's row and large ones apart; the index it dropped and the one it narrowed."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.server.domain import Payload
from taskwire.server.store import ExecutionPage, ExecutionSnapshot, NewExecution, SqliteStore, WriteBatch
from taskwire.server.store import _sqlite_codec as codec
from taskwire.server.store import _sqlite_writer as sqlite_writer
from taskwire.server.store._sqlite_schema import INLINE_INPUT_MAX, MIGRATIONS, SCHEMA_VERSION, migrate
from taskwire.server.store._sqlite_writer import _Writer
from tests.unit.store import records
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import write

AT = [T0 + timedelta(seconds=n) for n in range(10)]
BIG = b"x" * (INLINE_INPUT_MAX + 1)


def with_input(new: NewExecution, data: bytes) -> NewExecution:
    return replace(new, task_runs=[replace(task_run, input=Payload(data)) for task_run in new.task_runs])


def snapshot(new: NewExecution) -> ExecutionSnapshot:
    return ExecutionSnapshot(new.execution, tuple(new.task_runs))


def write_as_version_8(db_path: Path, monkeypatch: pytest.MonkeyPatch, batches: list[WriteBatch]) -> None:
    """The batches, written by version 8's writer: every input in task_run_inputs, no `task_runs.input`."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_writer, "INLINE_INPUT_MAX", -1)
        patch.setattr(
            sqlite_writer,
            "_INSERT_TASK_RUN",
            f"INSERT INTO task_runs ({', '.join(codec.TASK_RUN_COLUMNS)}, position) "
            f"VALUES ({', '.join(':' + c for c in codec.TASK_RUN_COLUMNS)}, :position)",
        )
        db_path.parent.mkdir(parents=True)
        conn = sqlite3.connect(db_path, isolation_level=None)
        try:
            migrate(conn, MIGRATIONS[:8])
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 8
            writer = _Writer(conn)
            conn.execute("BEGIN")
            writer._apply([codec.Rows.of(batch) for batch in batches])
            conn.execute("COMMIT")
        finally:
            conn.close()


async def test_a_version_8_file_migrates_and_keeps_its_data(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = pending_execution(handlers=("m:1", "m:2"))
    big = with_input(pending_execution(), BIG)
    mine = pending_execution()
    mine = replace(mine, execution=replace(mine.execution, submitted_by="alice"))
    done = pending_execution()
    finished = records.succeeded(records.running(done.task_runs[0], AT[1]), AT[2])
    write_as_version_8(
        db_path,
        monkeypatch,
        [
            submit_batch(small),
            submit_batch(big),
            submit_batch(mine),
            submit_batch(done),
            WriteBatch(
                executions=[records.execution_succeeded(done.execution, AT[2])],
                task_runs=[finished],
                events=[event(done.execution.id, 2)],
            ),
        ],
    )

    async with SqliteStore(db_path) as store:
        for new in (small, big, mine):
            assert await store.get_execution(new.execution.id) == snapshot(new)
        done_now = await store.get_execution(done.execution.id)
        assert done_now is not None
        assert done_now.task_runs == (finished,)
        assert await store.read_events(done.execution.id, 0) == [event(done.execution.id, n) for n in (1, 2)]
        state = await store.recover()
        assert {entry.execution_id for entry in state.cold} == {small.execution.id, big.execution.id, mine.execution.id}

        # An update of a task run whose input version 8 wrote apart keeps that input.
        started = records.running(small.task_runs[0], AT[3])
        await write(store, WriteBatch(task_runs=[started]))
        assert await store.get_execution(small.execution.id) == ExecutionSnapshot(
            small.execution, (started, small.task_runs[1])
        )
        # Version 9's own writes: a small input in the row, a large one apart; both read back whole.
        fresh_small, fresh_big = pending_execution(), with_input(pending_execution(), BIG)
        await write(store, submit_batch(fresh_small))
        await write(store, submit_batch(fresh_big))
        assert await store.get_execution(fresh_small.execution.id) == snapshot(fresh_small)
        assert await store.get_execution(fresh_big.execution.id) == snapshot(fresh_big)

        # The narrowed submitter index: a submitter's listing, and the listing of executions of no submitter.
        def ids(page: ExecutionPage) -> list[str]:
            return [s.execution.id for s in page.snapshots]

        alice = await store.list_executions(states=(), handler="", page_size=100, page_token="", submitted_by="alice")
        assert ids(alice) == [mine.execution.id]
        nobody = await store.list_executions(states=(), handler="", page_size=100, page_token="", submitted_by="")
        assert set(ids(nobody)) == {e.execution.id for e in (small, big, done, fresh_small, fresh_big)}

        await write(store, WriteBatch(deleted=[done.execution.id, big.execution.id, fresh_big.execution.id]))
        assert await store.get_execution(big.execution.id) is None

    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
        indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        inputs_apart = {row[0] for row in conn.execute("SELECT task_run_id FROM task_run_inputs")}
        inline = {row[0] for row in conn.execute("SELECT id FROM task_runs WHERE input IS NOT NULL")}
    finally:
        conn.close()
    assert "executions_active" not in indexes
    assert "WHERE submitted_by != ''" in indexes["executions_by_submitter"]
    # Deleting took the inputs of the deleted executions with them, whichever version wrote them.
    assert inputs_apart == {t.id for t in (*small.task_runs, *mine.task_runs)}
    assert inline == {t.id for t in fresh_small.task_runs}
