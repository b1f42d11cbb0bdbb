"""taskwire worker agent: write handlers, run them on a worker, test them with the harness.

Everything public is re-exported here; the modules behind it are private.
"""

from ._abort import Aborted, AbortReason, AbortSignal, AbortWait
from ._context import AttemptInfo, LogLine, ProgressUpdate, TaskContext
from ._errors import (
    ConnectionLostError,
    HandlerLoadError,
    HandlerRegistrationError,
    InputDecodingError,
    NonRetryableError,
    OutputEncodingError,
    WorkerAgentError,
)
from ._executor import AttemptKey, AttemptSink, AttemptSpec, Executor, Isolation, SubmitResult
from ._harness import HandlerHarness, HarnessRun
from ._outcome import Cancelled, Completed, ErrorDetails, Failed, Outcome
from ._payload import Payload, PayloadLike
from ._registry import (
    AsyncHandler,
    HandlerLookup,
    HandlerRegistry,
    RegisteredHandler,
    SyncHandler,
    default_registry,
    handler,
    load_handlers,
)
from ._worker import SessionInfo, Worker

__all__ = [
    "AbortReason",
    "AbortSignal",
    "AbortWait",
    "Aborted",
    "AsyncHandler",
    "AttemptInfo",
    "AttemptKey",
    "AttemptSink",
    "AttemptSpec",
    "Cancelled",
    "Completed",
    "ConnectionLostError",
    "ErrorDetails",
    "Executor",
    "Failed",
    "HandlerHarness",
    "HandlerLoadError",
    "HandlerLookup",
    "HandlerRegistrationError",
    "HandlerRegistry",
    "HarnessRun",
    "InputDecodingError",
    "Isolation",
    "LogLine",
    "NonRetryableError",
    "Outcome",
    "OutputEncodingError",
    "Payload",
    "PayloadLike",
    "ProgressUpdate",
    "RegisteredHandler",
    "SessionInfo",
    "SubmitResult",
    "SyncHandler",
    "TaskContext",
    "Worker",
    "WorkerAgentError",
    "default_registry",
    "handler",
    "load_handlers",
]
