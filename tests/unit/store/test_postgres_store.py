"""PostgresStore on a real PostgreSQL: what only it has (migrations under a lock and from the first schema, one server
per database, a lost connection, store URLs).

What every store does is in the behaviour suite (`test_behaviour_*.py`), which runs on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from taskwire.server.store import (
    POSTGRES_SCHEMA_VERSION,
    ExecutionSnapshot,
    PostgresStore,
    SqliteStore,
    StoreError,
    StoreInUse,
    WriteBatch,
    _postgres,
    store_from_url,
)
from taskwire.server.store import _postgres_queries as queries
from taskwire.server.store import _postgres_writes as writes
from taskwire.server.store._postgres_schema import MIGRATIONS, migrate
from taskwire.server.store._sqlite_codec import Rows
from taskwire.server.store._url import redact
from tests.unit.store.records import pending_execution, submit_batch
from tests.unit.store.support import cold_entries, write
from tests.unit.store.test_behaviour_schedules import schedule

pytestmark = pytest.mark.timeout(60)


async def test_servers_starting_together_migrate_once(postgres_url: str) -> None:
    connections = [await asyncpg.connect(postgres_url) for _ in range(6)]
    try:
        found = await asyncio.gather(*(migrate(conn) for conn in connections))
        version = await connections[0].fetchval("SELECT version FROM taskwire_schema")
        rows = await connections[0].fetchval("SELECT count(*) FROM taskwire_schema")
    finally:
        for conn in connections:
            await conn.close()
    # One found the database empty and migrated it; every other waited for the lock and found the work done.
    assert sorted(found) == [0] + [POSTGRES_SCHEMA_VERSION] * 5
    assert (version, rows) == (POSTGRES_SCHEMA_VERSION, 1)


async def test_a_store_migrated_before_opens_with_what_it_holds(postgres_url: str) -> None:
    new = pending_execution()
    async with PostgresStore(postgres_url) as store:
        await write(store, submit_batch(new))
    async with PostgresStore(postgres_url) as again:
        snapshot = await again.get_execution(new.execution.id)
    assert snapshot is not None
    assert snapshot.execution == new.execution


async def test_a_second_store_on_the_same_database_is_refused_until_the_first_closes(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    await first.open()
    second = PostgresStore(postgres_url)
    with pytest.raises(StoreInUse, match="another taskwire server uses the database"):
        await second.open()
    await second.close()
    await first.close()
    async with PostgresStore(postgres_url) as third:
        assert await third.get_execution("nope") is None


async def test_the_session_that_holds_the_database_is_named_for_monitoring(postgres_url: str) -> None:
    async with PostgresStore(postgres_url):
        conn = await asyncpg.connect(postgres_url)
        try:
            holders = await conn.fetch(
                "SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted"
            )
        finally:
            await conn.close()
    assert [row[0] for row in holders] == ["taskwire-server"]


async def test_a_database_of_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with PostgresStore(postgres_url):
        pass
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("UPDATE taskwire_schema SET version = 99")
    finally:
        await conn.close()
    store = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="schema version 99, newer than this server supports"):
        await store.open()
    await store.close()


async def test_a_database_with_tables_of_another_application_is_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE executions (id INTEGER)")
    finally:
        await conn.close()
    store = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="did not make"):
        await store.open()
    await store.close()


async def test_a_lost_connection_fails_this_commit_and_every_later_one(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await write(store, submit_batch(pending_execution()))
        conn = await asyncpg.connect(postgres_url)
        try:  # the writer holds the owner lock: end exactly that session
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        finally:
            await conn.close()
        with pytest.raises(StoreError, match="failed"):
            await store.commit([submit_batch(pending_execution())])
        with pytest.raises(StoreError, match="failed"):
            await store.commit([WriteBatch(new_executions=[pending_execution()])])


async def test_an_unreachable_database_is_a_store_error(postgres_url: str) -> None:
    dead = postgres_url.rsplit("/", 1)[0].rsplit(":", 1)[0] + ":1/nothing"
    store = PostgresStore(dead, connect_timeout_s=5)
    with pytest.raises(StoreError, match="cannot open the database"):
        await store.open()
    await store.close()


async def test_a_database_that_does_not_answer_is_a_store_error_that_says_so() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    store = PostgresStore(f"postgresql://taskwire@127.0.0.1:{port}/taskwire", connect_timeout_s=0.2)
    try:
        with pytest.raises(StoreError, match=r"cannot open the database .*/taskwire: TimeoutError$"):
            await store.open()
    finally:
        await store.close()
        silent.close()
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        await silent.wait_closed()


def test_store_urls_name_their_store() -> None:
    assert isinstance(store_from_url("postgresql://u:p@h:5432/d"), PostgresStore)
    assert isinstance(store_from_url("postgres://h/d"), PostgresStore)
    absolute = store_from_url("sqlite:///srv/taskwire/db.sqlite3")
    relative = store_from_url("sqlite:data/db.sqlite3")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == Path("/srv/taskwire/db.sqlite3")
    assert isinstance(relative, SqliteStore)
    assert relative.path == Path("data/db.sqlite3")
    with pytest.raises(ValueError, match="names a host"):
        store_from_url("sqlite://host/db")
    with pytest.raises(ValueError, match="neither"):
        store_from_url("mysql://h/d")


def test_a_password_never_shows() -> None:
    assert redact("postgresql://tw:s3cret@db.example:5433/tw?sslmode=require") == (
        "postgresql://tw:***@db.example:5433/tw?sslmode=require"
    )
    assert redact("postgresql://tw@db/tw") == "postgresql://tw@db/tw"
    assert "s3cret" not in str(PostgresStore("postgresql://tw:s3cret@db/tw"))


async def test_recovery_plans_hash_joins_even_before_the_statistics_know_the_rows(postgres_url: str) -> None:
    """With statistics that expect one row per table (as right after a bulk of submits, before autovacuum
    analyzes them), the planner would rescan an index for every queued row: quadratic, minutes for 100,000."""
    async with PostgresStore(postgres_url) as store:
        await write(store, WriteBatch(new_executions=[pending_execution() for _ in range(500)]))
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction(readonly=True):
            for setting in queries._BULK_READ:
                await conn.execute(setting)
            plans = [
                "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {query}")) for query in queries._RECOVERY[0]
            ]
        analyzed = await conn.fetchval("SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")
    finally:
        await conn.close()
    assert analyzed == 0  # the statistics are as stale as they get
    for plan in plans:
        assert "Nested Loop" not in plan, plan


async def test_a_store_opened_on_rows_without_statistics_analyzes_them(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await write(store, submit_batch(pending_execution()))
    async with PostgresStore(postgres_url):
        conn = await asyncpg.connect(postgres_url)
        try:
            analyzed = await conn.fetch(
                "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL ORDER BY relname"
            )
        finally:
            await conn.close()
    # submit_batch writes one execution, its task run and input, and its first event.
    assert [row[0] for row in analyzed] == ["events", "executions", "task_run_inputs", "task_runs"]


async def test_a_version_1_database_migrates_and_recovers_what_it_holds(postgres_url: str) -> None:
    """A database as the first schema left it (no schedules, no flow-control columns) opens on today's schema:
    its rows read back whole, its cold execution stays cold, and schedules and flow control are written."""
    cold = pending_execution(handlers=("m:1", "m:2"))
    later = {"priority", "concurrency_key", "concurrency_limit", "fairness_key", "rate_limit", "rate_limit_key"}
    task_run_columns = [c for c in writes._NEW_TASK_RUN_COLUMNS if c not in later]
    rows = Rows.of(submit_batch(cold))
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await migrate(conn, MIGRATIONS[:1]) == 0
        async with conn.transaction():  # the first schema's writes: today's, less the columns added since
            await conn.execute(
                writes._INSERT_EXECUTIONS, *writes._columns(rows.new_executions, writes._NEW_EXECUTION_COLUMNS)
            )
            await conn.execute(
                writes._insert("task_runs", task_run_columns), *writes._columns(rows.new_task_runs, task_run_columns)
            )
            await conn.execute(writes._INSERT_INPUTS, *writes._columns(rows.new_task_runs, writes._INPUT_COLUMNS))
    finally:
        await conn.close()

    async with PostgresStore(postgres_url) as store:
        state = await store.recover()
        assert await store.get_execution(cold.execution.id) == ExecutionSnapshot(cold.execution, tuple(cold.task_runs))
        keyed = replace(cold.task_runs[0], concurrency_key="tenant-a", concurrency_limit=2)
        await write(store, WriteBatch(task_runs=[keyed], schedules=[schedule()]))
    assert state.cold == cold_entries(cold)
    assert state.active == []

    async with PostgresStore(postgres_url) as again:
        state = await again.recover()
        assert await again.load_schedules() == [schedule()]
    assert state.cold == []  # a keyed task run keeps its execution out of the cold queue
    assert [snapshot.task_runs for snapshot in state.active] == [(keyed, cold.task_runs[1])]
    conn = await asyncpg.connect(postgres_url)
    try:
        version = await conn.fetchval("SELECT version FROM taskwire_schema")
        index = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'task_runs_not_cold'")
    finally:
        await conn.close()
    assert version == POSTGRES_SCHEMA_VERSION == len(MIGRATIONS) == 6
    assert all(column in index for column in ("priority", "concurrency_key", "fairness_key", "rate_limit"))


async def test_a_migration_step_longer_than_a_statement_may_take_completes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step on a large table (an index over millions of task runs) may run longer than the store lets a statement
    run: the migration waits for it, else the server could never start on that database."""
    later = (*MIGRATIONS, ("SELECT pg_sleep(1.5)",))

    async def with_a_long_step(conn: Any, *args: Any, **kwargs: Any) -> int:
        return await migrate(conn, later, **kwargs)

    monkeypatch.setattr(_postgres, "migrate", with_a_long_step)
    async with PostgresStore(postgres_url, command_timeout_s=1) as store:
        await write(store, submit_batch(pending_execution()))
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT version FROM taskwire_schema") == len(later)
    finally:
        await conn.close()


async def test_a_standby_started_during_a_long_migration_waits_for_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = (*MIGRATIONS, ("SELECT pg_sleep(2)",))

    async def with_a_long_step(conn: Any, *args: Any, **kwargs: Any) -> int:
        return await migrate(conn, later, **kwargs)

    monkeypatch.setattr(_postgres, "migrate", with_a_long_step)
    first = PostgresStore(postgres_url, holder="alpha")
    opening = asyncio.ensure_future(first.open())
    standby = PostgresStore(postgres_url, holder="beta", command_timeout_s=1, standby=True)
    side = await asyncpg.connect(postgres_url)
    try:
        step = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)' AND state = 'active'"
        while not await side.fetchval(step):  # the first server migrates, holding the migration's lock
            assert not opening.done()
            await asyncio.sleep(0.02)
        taking = asyncio.ensure_future(standby.open())
        await asyncio.wait_for(opening, 10)
        await first.close()  # the standby, which waited for the migration, takes over
        await asyncio.wait_for(taking, 10)
        assert standby.lease.epoch == 2
    finally:
        await side.close()
        await first.close()
        await standby.close()
