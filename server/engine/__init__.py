"""The engine: the one writer of live state, split into rooms by concept (see `_engine`).

Nothing here imports protobuf or grpc: the engine speaks domain values, and the
wire layer (`taskwire.server._worker_wire`, `taskwire.server._history_wire`)
encodes and decodes at the edge.
"""

from ._admission import AdmissionQueue
from ._clock import Cancellable, Clock, ManualClock, SystemClock, aware
from ._engine import Engine
from ._history import HistoryCodec
from ._observer import Observer, Unobserved
from ._sessions import (
    AttemptEnd,
    AttemptKey,
    AttemptLog,
    AttemptProgress,
    Draining,
    Heartbeat,
    HelloRead,
    Welcome,
    WorkerHello,
    WorkerLink,
    WorkerReport,
    WorkerSession,
    WorkerView,
)
from ._submits import BatchItemResult, SubmitItem, SubmitResult
from ._timers import Timers

__all__ = [
    "AdmissionQueue",
    "AttemptEnd",
    "AttemptKey",
    "AttemptLog",
    "AttemptProgress",
    "BatchItemResult",
    "Cancellable",
    "Clock",
    "Draining",
    "Engine",
    "Heartbeat",
    "HelloRead",
    "HistoryCodec",
    "ManualClock",
    "Observer",
    "SubmitItem",
    "SubmitResult",
    "SystemClock",
    "Timers",
    "Unobserved",
    "Welcome",
    "WorkerHello",
    "WorkerLink",
    "WorkerReport",
    "WorkerSession",
    "WorkerView",
    "aware",
]
