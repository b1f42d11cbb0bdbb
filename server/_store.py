"""Where the store's records used to live; they are in `taskwire.server.store` now."""

from .store._protocol import (
    ColdTaskRun,
    EventRecord,
    ExecutionPage,
    ExecutionSnapshot,
    IdempotencyHit,
    NewExecution,
    RecoveredState,
    Store,
    WriteBatch,
)

__all__ = [
    "ColdTaskRun",
    "EventRecord",
    "ExecutionPage",
    "ExecutionSnapshot",
    "IdempotencyHit",
    "NewExecution",
    "RecoveredState",
    "Store",
    "WriteBatch",
]
