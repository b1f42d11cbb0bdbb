"""The store: one protocol, an in-memory implementation for tests and the SQLite default."""

from ._memory import MemoryStore
from ._protocol import (
    ColdTaskRun,
    DuplicateIdempotencyKey,
    EventRecord,
    ExecutionPage,
    ExecutionSnapshot,
    IdempotencyHit,
    NewExecution,
    RecoveredState,
    Store,
    StoreClosed,
    StoreError,
    WriteBatch,
)

__all__ = [
    "ColdTaskRun",
    "DuplicateIdempotencyKey",
    "EventRecord",
    "ExecutionPage",
    "ExecutionSnapshot",
    "IdempotencyHit",
    "MemoryStore",
    "NewExecution",
    "RecoveredState",
    "Store",
    "StoreClosed",
    "StoreError",
    "WriteBatch",
]
