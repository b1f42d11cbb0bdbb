"""Helpers of the store tests: one batch written as callers used to write it, and a held SQLite writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from taskwire.server.domain import State
from taskwire.server.store import ColdTaskRun, NewExecution, SqliteStore, Store, StoreStats, WriteBatch


async def write(store: Store, batch: WriteBatch) -> None:
    """Commit one batch alone; raise why it was refused."""
    [refusal] = await store.commit([batch])
    if refusal is not None:
        raise refusal


@asynccontextmanager
async def writer_held(store: SqliteStore) -> AsyncIterator[None]:
    """The store sends nothing to its writer process until the block ends; commits started inside wait."""
    async with store._commit_lock:
        yield


async def list_ids(
    store: Store, *, states: tuple[State, ...] = (), handler: str = "", page_size: int = 1000
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


def stats(store: Store) -> StoreStats | None:
    """The write counters of a SQLite store; None for a store that keeps none."""
    return store.stats() if isinstance(store, SqliteStore) else None


def cold_entries(new: NewExecution) -> list[ColdTaskRun]:
    """What recovery returns for a cold execution: the queue entries of its task runs."""
    return [ColdTaskRun(t.id, t.execution_id, t.handler) for t in new.task_runs]
