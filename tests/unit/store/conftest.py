"""Fixtures of the store tests: every store the behaviour suite holds to one contract, and a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from taskwire.server.store import MemoryStore, SqliteStore, Store

# A store that holds what was written before: the same file, or the same memory.
Reopen = Callable[[Store], Awaitable[Store]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "taskwire.sqlite3"


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, db_path: Path) -> Callable[[], Store]:
    """A new, unopened store of each kind (a PostgreSQL store joins here)."""
    if request.param == "memory":
        return MemoryStore
    return lambda: SqliteStore(db_path)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def reopen() -> AsyncIterator[Reopen]:
    """Close a SQLite store and open a new one on its file, as a restarted server does; a memory store stays."""
    opened: list[SqliteStore] = []

    async def again(store: Store) -> Store:
        if isinstance(store, MemoryStore):
            return store
        assert isinstance(store, SqliteStore)
        await store.close()
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
