"""taskwire Python SDK: submit tasks to a taskwire server, follow them, and collect their results.

    from taskwire.client import Client

    with Client("127.0.0.1:50051") as client:
        execution = client.submit("echo", {"hello": "world"})
        print(client.wait(execution.id))

`AsyncClient` offers the same calls for asyncio. Values in and out are plain
dataclasses and enums (the domain's own records), `timedelta`s and decoded JSON.
"""

from taskwire.server.domain import (
    AdmissionTimeout,
    Attempt,
    AttemptOutcome,
    ErrorInfo,
    Execution,
    ExecutionSpec,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    Payload,
    QueueFull,
    Reason,
    ReasonCode,
    RetryPolicy,
    ShuttingDown,
    State,
    TaskRun,
    TaskSpec,
    TaskwireError,
    ValidationError,
)

from ._async import AsyncClient
from ._common import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, to_payload
from ._errors import ExecutionCancelled, ExecutionFailed, ServerUnavailable, WaitTimeout
from ._events import ExecutionTransition, LogLevel, TaskLog, TaskProgress, TaskRunTransition, WatchEvent
from ._models import (
    ExecutionSnapshot,
    HandlerStats,
    QueueStats,
    RpcRetry,
    Stats,
    SubmitResult,
    WorkerInfo,
)
from ._sync import Client

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "AdmissionTimeout",
    "AsyncClient",
    "Attempt",
    "AttemptOutcome",
    "Client",
    "ErrorInfo",
    "Execution",
    "ExecutionCancelled",
    "ExecutionFailed",
    "ExecutionSnapshot",
    "ExecutionSpec",
    "ExecutionTransition",
    "HandlerStats",
    "IdempotencyConflict",
    "InvalidTransition",
    "LogLevel",
    "NotFound",
    "Payload",
    "QueueFull",
    "QueueStats",
    "Reason",
    "ReasonCode",
    "RetryPolicy",
    "RpcRetry",
    "ServerUnavailable",
    "ShuttingDown",
    "State",
    "Stats",
    "SubmitResult",
    "TaskLog",
    "TaskProgress",
    "TaskRun",
    "TaskRunTransition",
    "TaskSpec",
    "TaskwireError",
    "ValidationError",
    "WaitTimeout",
    "WatchEvent",
    "WorkerInfo",
    "to_payload",
]
