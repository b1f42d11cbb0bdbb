"""The store: one protocol, an in-memory implementation for tests and the SQLite default.

Rooms, and what each may import:

- `_protocol`: the `Store` Protocol, the records it speaks and the store errors (domain only).
- `_json`, `_paging`: what every store reuses: records as JSON values and scalars as integers,
  page tokens; `_schedule_json`: a schedule as one JSON document.
- `_group_commit`: the `Committer`, the one place where writes are grouped (below).
- `_memory`: `MemoryStore`, for tests.
- `_lock`: one server per store: an exclusive lock beside the database, which the writer process shares.
- `_sqlite` (the `SqliteStore` facade) over `_sqlite_codec` (records ↔ rows), `_sqlite_schema`
  (tables, migrations, connections), `_sqlite_queries` (reads) and `_sqlite_writer` (the writer
  process, both sides).
- `_postgres` (the `PostgresStore` facade) over `_postgres_lease` (one writer at a time: the lease,
  its epoch and the fence in every commit), `_postgres_schema` (tables, migrations under an
  advisory lock), `_postgres_queries` (reads), `_postgres_writes` (a group in one transaction) and
  `_postgres_replicas` (several active replicas on one database: holders, claims, mail, the leader).
  Its tables mirror SQLite's column for column, so it reuses `_sqlite_codec` for records ↔ rows.
- `_url`: which store a `--store` URL names.

The names below load on first use (`__getattr__`): the writer process imports this package on its way to
`_sqlite_writer` and needs none of them, and a server on SQLite never loads PostgreSQL's modules.

Group commit happens in one place: the committer. It stages the engine's changes as the engine
makes them and keeps one commit in flight; what is staged meanwhile becomes the next group. Only
there can the changes of a window be coalesced (the latest version of a record, a new execution
inserted as it is at commit time), so a task that is submitted, dispatched and finished before its
submit's commit is encoded once and costs one row. A store does not gather writes of its own: it
commits the group it is given in one transaction (one fsync, one round trip to SQLite's writer
process) and answers for each batch, so a refused batch fails alone while the others of its group
commit. The store's own queue of waiting writes, which grouped concurrent `write` calls, is gone:
under the committer it only ever saw one write at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskwire.server._lazy import lazy_names

if TYPE_CHECKING:
    from ._group_commit import Committer, EventSink, StoreFailure
    from ._lock import StoreInUse
    from ._memory import MemoryStore
    from ._postgres import PostgresStore
    from ._postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
    from ._protocol import (
        ColdTaskRun,
        DuplicateIdempotencyKey,
        EventRecord,
        EventScope,
        ExecutionPage,
        ExecutionSnapshot,
        IdempotencyHit,
        Mail,
        NewExecution,
        RecoveredState,
        ReplicaStore,
        Store,
        StoreClosed,
        StoreError,
        StoreFenced,
        WriteBatch,
    )
    from ._schedule_json import schedule_to_text
    from ._sqlite import SqliteStore, StoreStats
    from ._sqlite_schema import SCHEMA_VERSION
    from ._url import store_from_url

# Each public name: the module that defines it and its name there (loaded by __getattr__, below).
_WHERE = {
    "POSTGRES_SCHEMA_VERSION": ("._postgres_schema", "SCHEMA_VERSION"),
    "SCHEMA_VERSION": ("._sqlite_schema", "SCHEMA_VERSION"),
    "ColdTaskRun": ("._protocol", "ColdTaskRun"),
    "Committer": ("._group_commit", "Committer"),
    "DuplicateIdempotencyKey": ("._protocol", "DuplicateIdempotencyKey"),
    "EventRecord": ("._protocol", "EventRecord"),
    "EventScope": ("._protocol", "EventScope"),
    "EventSink": ("._group_commit", "EventSink"),
    "ExecutionPage": ("._protocol", "ExecutionPage"),
    "ExecutionSnapshot": ("._protocol", "ExecutionSnapshot"),
    "IdempotencyHit": ("._protocol", "IdempotencyHit"),
    "Mail": ("._protocol", "Mail"),
    "MemoryStore": ("._memory", "MemoryStore"),
    "NewExecution": ("._protocol", "NewExecution"),
    "PostgresStore": ("._postgres", "PostgresStore"),
    "RecoveredState": ("._protocol", "RecoveredState"),
    "ReplicaStore": ("._protocol", "ReplicaStore"),
    "SqliteStore": ("._sqlite", "SqliteStore"),
    "Store": ("._protocol", "Store"),
    "StoreClosed": ("._protocol", "StoreClosed"),
    "StoreError": ("._protocol", "StoreError"),
    "StoreFailure": ("._group_commit", "StoreFailure"),
    "StoreFenced": ("._protocol", "StoreFenced"),
    "StoreInUse": ("._lock", "StoreInUse"),
    "StoreStats": ("._sqlite", "StoreStats"),
    "WriteBatch": ("._protocol", "WriteBatch"),
    "schedule_to_text": ("._schedule_json", "schedule_to_text"),
    "store_from_url": ("._url", "store_from_url"),
}

__all__ = [
    "POSTGRES_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "ColdTaskRun",
    "Committer",
    "DuplicateIdempotencyKey",
    "EventRecord",
    "EventScope",
    "EventSink",
    "ExecutionPage",
    "ExecutionSnapshot",
    "IdempotencyHit",
    "Mail",
    "MemoryStore",
    "NewExecution",
    "PostgresStore",
    "RecoveredState",
    "ReplicaStore",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreFailure",
    "StoreFenced",
    "StoreInUse",
    "StoreStats",
    "WriteBatch",
    "schedule_to_text",
    "store_from_url",
]


if not TYPE_CHECKING:  # the type checker sees the imports above instead
    __getattr__ = lazy_names(__name__, globals(), _WHERE)
