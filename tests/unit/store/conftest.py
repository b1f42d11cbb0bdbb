"""Fixtures of the store tests: every store the behaviour suite holds to one contract, a real SQLite file and a
real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from taskwire.server.store import MemoryStore, PostgresStore, SqliteStore, Store

# A store that holds what was written before: the same file, or the same memory.
Reopen = Callable[[Store], Awaitable[Store]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "taskwire.sqlite3"


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, db_path: Path) -> Callable[[], Store]:
    """A new, unopened store of each kind (PostgreSQL: on a new database of its own)."""
    if request.param == "memory":
        return MemoryStore
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore(url)
    return lambda: SqliteStore(db_path)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def reopen() -> AsyncIterator[Reopen]:
    """Close a SQLite or PostgreSQL store and open a new one on its database, as a restarted server does; a memory
    store stays."""
    opened: list[Store] = []

    async def again(store: Store) -> Store:
        if isinstance(store, MemoryStore):
            return store
        await store.close()
        if isinstance(store, PostgresStore):
            opened.append(PostgresStore(store.url))
        else:
            assert isinstance(store, SqliteStore)
            opened.append(SqliteStore(store.path))
        await opened[-1].open()
        return opened[-1]

    yield again
    for store in opened:
        await store.close()


@pytest.fixture
async def sqlite(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path) as opened:
        yield opened
