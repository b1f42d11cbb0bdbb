"""taskwire worker agent: write handlers, run them on a worker, test them with the harness.

Everything public is re-exported here; the modules behind it are private.
"""

from worker_agent._abort import Aborted, AbortReason, AbortSignal, AbortWait
from worker_agent._context import AttemptInfo, LogLine, ProgressUpdate, TaskContext
from worker_agent._errors import (
    ConnectionLostError,
    HandlerLoadError,
    HandlerRegistrationError,
    InputDecodingError,
    NonRetryableError,
    OutputEncodingError,
    WorkerAgentError,
)
from worker_agent._executor import AttemptKey, AttemptSink, AttemptSpec, Executor, Isolation, SubmitResult
from worker_agent._harness import HandlerHarness, HarnessRun
from worker_agent._outcome import Cancelled, Completed, ErrorDetails, Failed, Outcome
from worker_agent._payload import Payload, PayloadLike
from worker_agent._registry import (
    AsyncHandler,
    HandlerLookup,
    HandlerRegistry,
    RegisteredHandler,
    SyncHandler,
    default_registry,
    handler,
    load_handlers,
)
from worker_agent._worker import SessionInfo, Worker

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
