"""taskwire Python SDK: submit tasks to a taskwire server, follow them, and collect their results.

    from taskwire.client import Client

    with Client("127.0.0.1:50051") as client:
        execution = client.submit("echo", {"hello": "world"})
        print(client.wait(execution.id))

`AsyncClient` offers the same calls for asyncio. Values in and out are plain
dataclasses and enums (the records of `taskwire.common`, shared with the server),
`timedelta`s and decoded JSON. They are forward compatible: a state, reason code,
outcome or log level from a newer server is kept and shown (`State.is_known` is
False for it), and a kind of watch event this version does not know comes as an
`UnknownEvent`.

Over TLS (mutual TLS with a client certificate), pass `credentials=tls_credentials(ca=..., cert=...,
key=...)` to either client.
"""

from taskwire.common import (
    AdmissionTimeout,
    AlreadyExists,
    Attempt,
    AttemptOutcome,
    Closing,
    ConcurrencyKeyStats,
    ErrorInfo,
    Execution,
    ExecutionFilter,
    ExecutionSpec,
    HandlerStats,
    IdempotencyConflict,
    InvalidTransition,
    LogLevel,
    NotFound,
    OverlapPolicy,
    Payload,
    PermissionDenied,
    Progress,
    QueueFull,
    QueueStats,
    RateLimited,
    RateLimitStats,
    Reason,
    ReasonCode,
    RequestTooLarge,
    RetryPolicy,
    ScheduleSpec,
    ShuttingDown,
    State,
    Stats,
    TaskRun,
    TaskSpec,
    TaskwireError,
    Unauthenticated,
    ValidationError,
    WatcherFellBehind,
)
from taskwire.common.tls import tls_credentials

from ._async import AsyncClient
from ._common import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, to_payload
from ._errors import ExecutionCancelled, ExecutionEnded, ExecutionFailed, ServerUnavailable, WaitTimeout
from ._events import (
    ExecutionTransition,
    TaskLog,
    TaskNote,
    TaskProgress,
    TaskRunTransition,
    UnknownEvent,
    WatchEvent,
)
from ._models import BulkResult, ExecutionSnapshot, Identity, RpcRetry, SubmitResult, WorkerInfo
from ._schedules import ScheduleInfo
from ._sync import Client

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "AdmissionTimeout",
    "AlreadyExists",
    "AsyncClient",
    "Attempt",
    "AttemptOutcome",
    "BulkResult",
    "Client",
    "Closing",
    "ConcurrencyKeyStats",
    "ErrorInfo",
    "Execution",
    "ExecutionCancelled",
    "ExecutionEnded",
    "ExecutionFailed",
    "ExecutionFilter",
    "ExecutionSnapshot",
    "ExecutionSpec",
    "ExecutionTransition",
    "HandlerStats",
    "IdempotencyConflict",
    "Identity",
    "InvalidTransition",
    "LogLevel",
    "NotFound",
    "OverlapPolicy",
    "Payload",
    "PermissionDenied",
    "Progress",
    "QueueFull",
    "QueueStats",
    "RateLimitStats",
    "RateLimited",
    "Reason",
    "ReasonCode",
    "RequestTooLarge",
    "RetryPolicy",
    "RpcRetry",
    "ScheduleInfo",
    "ScheduleSpec",
    "ServerUnavailable",
    "ShuttingDown",
    "State",
    "Stats",
    "SubmitResult",
    "TaskLog",
    "TaskNote",
    "TaskProgress",
    "TaskRun",
    "TaskRunTransition",
    "TaskSpec",
    "TaskwireError",
    "Unauthenticated",
    "UnknownEvent",
    "ValidationError",
    "WaitTimeout",
    "WatchEvent",
    "WatcherFellBehind",
    "WorkerInfo",
    "tls_credentials",
    "to_payload",
]
