"""taskwire worker agent: write handlers, run them on a worker, test them with the harness.

Everything public is re-exported here; the modules behind it are private (the
executor that runs attempts, in particular, is an internal of `Worker` and
`HandlerHarness`). `Payload` and `ErrorInfo` are the shared values of
`taskwire.common`; every error raised here is a `taskwire.common.TaskwireError`.
"""

from taskwire.common import ErrorInfo, Payload, TaskwireError
from taskwire.common.tls import TlsFiles

from ._abort import Aborted, AbortReason, AbortSignal, AbortWait
from ._context import AttemptInfo, LogLine, ProgressUpdate, TaskContext
from ._errors import (
    ConnectionLostError,
    HandlerLoadError,
    HandlerRegistrationError,
    InputDecodingError,
    NonRetryableError,
    OutputEncodingError,
    RateLimited,
    WorkerAgentError,
    WorkerRefused,
)
from ._executor import Isolation
from ._harness import HandlerHarness, HarnessRun
from ._outcome import Cancelled, Completed, Failed, Outcome
from ._payload import PayloadLike
from ._process import ChildLimits
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
from ._stream import SessionInfo
from ._worker import Worker

# The name this package used for `ErrorInfo` before it was shared; the same class.
ErrorDetails = ErrorInfo

__all__ = [
    "AbortReason",
    "AbortSignal",
    "AbortWait",
    "Aborted",
    "AsyncHandler",
    "AttemptInfo",
    "Cancelled",
    "ChildLimits",
    "Completed",
    "ConnectionLostError",
    "ErrorDetails",
    "ErrorInfo",
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
    "RateLimited",
    "RegisteredHandler",
    "SessionInfo",
    "SyncHandler",
    "TaskContext",
    "TaskwireError",
    "TlsFiles",
    "Worker",
    "WorkerAgentError",
    "WorkerRefused",
    "default_registry",
    "handler",
    "load_handlers",
]
