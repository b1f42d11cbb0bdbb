"""The reads of a store over SQL, once for SQLite and PostgreSQL.

Each store has a queries module with one function per read, of the same name and arguments after the
connection (`_sqlite_queries`, `_postgres_queries`), and its own `_read(function, *args)` that runs one in
a read transaction. What the Store protocol asks beyond that (nothing to read for an empty list or a
non-positive limit, a page token checked before any query, times as the store keeps them) is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import ModuleType
from typing import Any, ClassVar

from taskwire.server.domain import Schedule, State

from ._json import datetime_to_db
from ._paging import check_page_size, decode_page_token
from ._protocol import EventRecord, ExecutionPage, ExecutionSnapshot, IdempotencyHit, RecoveredState


class QueryReads:
    _queries: ClassVar[ModuleType]

    async def _read(self, read: Any, *args: Any) -> Any:
        raise NotImplementedError

    async def get_execution(self, execution_id: str) -> ExecutionSnapshot | None:
        snapshot: ExecutionSnapshot | None = await self._read(self._queries.read_execution, execution_id)
        return snapshot

    async def get_executions(self, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
        """Several executions at once, by id; ids not found are left out."""
        if not execution_ids:
            return {}
        found: dict[str, ExecutionSnapshot] = await self._read(self._queries.read_executions, list(execution_ids))
        return found

    async def last_sequences(self, execution_ids: Sequence[str]) -> dict[str, int]:
        """The highest stored event sequence of each execution (0 when it has none)."""
        if not execution_ids:
            return {}
        sequences: dict[str, int] = await self._read(self._queries.last_sequences, list(execution_ids))
        return sequences

    async def find_idempotency_key(self, key: str) -> IdempotencyHit | None:
        if not key:
            return None
        hit: IdempotencyHit | None = await self._read(self._queries.read_idempotency_key, key)
        return hit

    async def list_executions(
        self,
        *,
        states: Sequence[State],
        handler: str,
        page_size: int,
        page_token: str,
        submitted_by: str | None = None,
    ) -> ExecutionPage:
        """Newest first; only `submitted_by`'s when given. Raises ValidationError('page_token', ...) for a
        token it did not issue."""
        check_page_size(page_size)
        before = decode_page_token(page_token)
        page: ExecutionPage = await self._read(
            self._queries.list_executions, list(states), handler, page_size, before, submitted_by
        )
        return page

    async def read_events(self, execution_id: str, after_sequence: int, limit: int = 1000) -> list[EventRecord]:
        """Events with sequence > after_sequence, in order, at most `limit`."""
        if limit <= 0:
            return []
        events: list[EventRecord] = await self._read(self._queries.read_events, execution_id, after_sequence, limit)
        return events

    async def finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        if limit <= 0:
            return []
        ids: list[str] = await self._read(self._queries.finished_before, datetime_to_db(cutoff), limit)
        return ids

    async def recover(self) -> RecoveredState:
        """Active executions whole; cold ones only as their queue entries (see `RecoveredState`)."""
        recovered: RecoveredState = await self._read(self._queries.recover)
        return recovered

    async def load_schedules(self) -> list[Schedule]:
        """Every stored schedule, by name."""
        schedules: list[Schedule] = await self._read(self._queries.load_schedules)
        return schedules
