"""Deterministic group commits for tests: hold the writer, queue batches, release."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from taskwire.server._sqlite_store import SqliteStore
from taskwire.server._store import WriteBatch


@contextmanager
def writer_held(store: SqliteStore) -> Iterator[None]:
    """The writer takes nothing queued until the block ends.

    Batches queued inside the block are then committed together, in one group.
    """
    store._gate.clear()
    try:
        yield
    finally:
        store._gate.set()


async def start_writes(store: SqliteStore, batches: Sequence[WriteBatch]) -> list[asyncio.Task[None]]:
    """Start one write per batch and return once every batch is queued (each task ran up to its first await)."""
    tasks = [asyncio.create_task(store.write(batch)) for batch in batches]
    await asyncio.sleep(0)
    return tasks
