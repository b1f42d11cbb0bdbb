"""SQLite's side of recovery and encoding: the query plan of the cold queue, chunked reads, the schema-v2
migration, encoding on the caller's thread, and the memoized JSON columns."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskwire.server.domain import RetryPolicy
from taskwire.server.store import ExecutionSnapshot, SqliteStore, WriteBatch
from taskwire.server.store import _json as json_codec
from taskwire.server.store import _sqlite_codec as codec
from taskwire.server.store import _sqlite_queries as queries
from taskwire.server.store import _sqlite_writer as sqlite_writer
from taskwire.server.store._sqlite_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from taskwire.server.store._sqlite_writer import _Writer
from tests.unit.store import records
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import cold_entries, write

AT = [T0 + timedelta(seconds=n) for n in range(10)]


# --------------------------------------------------------------------------- the queue scan


def test_the_cold_queue_is_one_covering_index_scan_without_a_sort(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "plan.sqlite3", isolation_level=None)
    try:
        migrate(conn)
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {queries._COLD_QUEUE}")]
    finally:
        conn.close()
    assert plan[0] == "SCAN t USING COVERING INDEX task_runs_pending"
    assert not any("TEMP B-TREE" in step for step in plan)
    assert any(step.startswith("SEARCH e USING COVERING INDEX executions_cold") for step in plan)
    assert any(step.startswith("SEARCH o USING INDEX task_runs_not_cold") for step in plan)


# --------------------------------------------------------------------------- batch reads


async def test_get_executions_and_last_sequences_go_beyond_one_chunk(sqlite: SqliteStore) -> None:
    count = 2 * queries.CHUNK + 7
    news = [pending_execution() for _ in range(count)]
    await write(sqlite, WriteBatch(new_executions=news, events=[event(new.execution.id, 1) for new in news[::2]]))
    ids = [new.execution.id for new in news]

    found = await sqlite.get_executions(ids)
    assert list(found) == ids  # every one, in the order asked
    assert all(found[new.execution.id].task_runs == tuple(new.task_runs) for new in news)
    assert await sqlite.last_sequences(ids) == {
        new.execution.id: 1 if position % 2 == 0 else 0 for position, new in enumerate(news)
    }


# --------------------------------------------------------------------------- migration


async def test_a_schema_v1_file_migrates_and_recovers_cold_and_active(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Today's writer, less the columns later versions added (sqlite3 ignores the parameters left over).
    later = {"schedule_to_start_us", "priority", "concurrency_key", "concurrency_limit", "fairness_key"}
    later |= {"rate_limit", "rate_limit_key"}
    v1_columns = [c for c in codec.TASK_RUN_COLUMNS if c not in later]
    v1_execution_columns = [c for c in codec.EXECUTION_COLUMNS if c not in ("trace_context", "submitted_by")]
    monkeypatch.setattr(sqlite_writer, "INLINE_INPUT_MAX", -1)  # before version 9 every input went to task_run_inputs
    monkeypatch.setattr(
        sqlite_writer,
        "_INSERT_EXECUTION",
        f"INSERT INTO executions ({', '.join(v1_execution_columns)}, request_fingerprint) "
        f"VALUES ({', '.join(':' + c for c in v1_execution_columns)}, :request_fingerprint)",
    )
    monkeypatch.setattr(
        sqlite_writer,
        "_UPDATE_EXECUTION",
        f"UPDATE executions SET {', '.join(f'{c} = :{c}' for c in v1_execution_columns if c != 'id')} WHERE id = :id",
    )
    monkeypatch.setattr(
        sqlite_writer,
        "_INSERT_TASK_RUN",
        f"INSERT INTO task_runs ({', '.join(v1_columns)}, position) "
        f"VALUES ({', '.join(':' + c for c in v1_columns)}, :position)",
    )
    monkeypatch.setattr(
        sqlite_writer,
        "_UPDATE_TASK_RUN",
        f"UPDATE task_runs SET {', '.join(f'{c} = :{c}' for c in v1_columns if c not in ('id', 'execution_id'))} "
        "WHERE id = :id AND execution_id = :execution_id",
    )
    cold = pending_execution(handlers=("m:1", "m:2"))
    active = pending_execution()
    running = records.running(active.task_runs[0], AT[1])
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn, MIGRATIONS[:1]) == 0  # the schema as version 1 shipped it
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        writer = _Writer(conn)
        conn.execute("BEGIN")
        writer._apply([codec.Rows.of(submit_batch(cold)), codec.Rows.of(submit_batch(active))])
        writer._apply([codec.Rows.of(WriteBatch(task_runs=[running], events=[event(active.execution.id, 2)]))])
        conn.execute("COMMIT")
    finally:
        conn.close()

    async with SqliteStore(db_path) as store:
        state = await store.recover()
        assert await store.get_execution(cold.execution.id) == ExecutionSnapshot(cold.execution, tuple(cold.task_runs))

    assert SCHEMA_VERSION == 9
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    assert {
        "task_runs_pending",
        "executions_cold",
        "task_runs_not_cold",
        "executions_finished",
        "executions_by_submitter",
    } <= indexes
    assert state.cold == cold_entries(cold)
    assert state.active == [ExecutionSnapshot(active.execution, (running,))]
    assert state.last_sequences == {active.execution.id: 2}
    assert state.pending_order == []


# --------------------------------------------------------------------------- encoding


async def test_an_unencodable_batch_fails_alone_and_the_rest_of_its_group_commits(sqlite: SqliteStore) -> None:
    good = [pending_execution() for _ in range(3)]
    bad = pending_execution()
    naive = replace(bad, execution=replace(bad.execution, deadline=T0.replace(tzinfo=None)))
    batches = [submit_batch(good[0]), submit_batch(naive), submit_batch(good[1]), submit_batch(good[2])]
    before = sqlite.stats()

    outcomes = await sqlite.commit(batches)

    assert [o is None for o in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1], ValueError)
    assert "naive datetime" in str(outcomes[1])
    for new in good:
        assert await sqlite.get_execution(new.execution.id) is not None
    assert await sqlite.get_execution(bad.execution.id) is None
    after = sqlite.stats()
    assert after.batches_failed == before.batches_failed + 1
    assert after.batches_committed == before.batches_committed + 3
    assert after.commits == before.commits + 1  # the good ones still shared one commit


async def test_batches_are_encoded_by_the_caller_not_by_the_writer_thread(
    sqlite: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding in the writer thread would contend with the event loop for the interpreter lock."""
    threads: list[str] = []
    encode = codec.execution_to_row

    def spy(execution: Any) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return encode(execution)

    monkeypatch.setattr(codec, "execution_to_row", spy)
    await write(sqlite, submit_batch(pending_execution()))
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
    assert json_codec.retry_policy_to_text(RetryPolicy(backoff_coefficient=0.0)) != json_codec.retry_policy_to_text(
        RetryPolicy(backoff_coefficient=-0.0)
    )
    back = json_codec.retry_policy_from_text(json_codec.retry_policy_to_text(RetryPolicy(backoff_coefficient=-0.0)))
    assert str(back.backoff_coefficient) == "-0.0"


def test_a_full_memo_starts_over() -> None:
    memo = json_codec.Memo(limit=2)
    calls: list[int] = []

    def make(key: int) -> int:
        calls.append(key)
        return key * 10

    assert [memo.get(k, make) for k in (1, 2, 1, 3, 1)] == [10, 20, 10, 30, 10]
    assert calls == [1, 2, 3, 1]
