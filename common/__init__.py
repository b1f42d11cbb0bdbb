"""What the client, the worker agent and the server share: states, reason codes, value types, records,
specs, statistics, the error tree, the JSON view, and the one argument type both command lines use.

Everything here is pure (no grpc, no protobuf, no I/O, no clock), and nothing here
imports the server. The converter between these values and the wire messages, with
the mapping of errors to gRPC status codes, is `taskwire.common.wire`; the TLS channel credentials that
the SDK, the CLI and the worker agent make from certificate files come from `taskwire.common.tls`.

The enums are open (`OpenEnum`): a value from a newer version of taskwire is kept as
a pseudo-member, and the records' invariant checks apply to known values only; see
`taskwire.common._states`.
"""

from ._arguments import positive_int
from ._errors import (
    AdmissionTimeout,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    QueueFull,
    RateLimited,
    ShuttingDown,
    TaskwireError,
    TerminalStateError,
    Unauthenticated,
    ValidationError,
)
from ._filters import ExecutionFilter
from ._json_view import JSON_VIEW_VERSION, attempt_view, execution_view, iso, payload_view, task_run_view
from ._models import (
    DEFAULT_INFRASTRUCTURE_RETRIES,
    MAX_ATTEMPTS_LIMIT,
    MAX_INFRASTRUCTURE_RETRIES_LIMIT,
    WORKER_SHUTDOWN_ERROR,
    Attempt,
    Closing,
    ErrorInfo,
    Execution,
    Progress,
    Reason,
    Refusal,
    RetryPolicy,
    TaskRun,
)
from ._payload import (
    JSON_CONTENT_TYPE,
    OCTET_STREAM,
    Payload,
    decode_payload,
    dumps_json,
    is_json_content_type,
    json_payload,
    loads_json,
)
from ._refs import MARKER as REFERENCE_MARKER
from ._refs import InputReferenceError, references, resolve
from ._specs import DEFAULT_TASK_ID, ExecutionSpec, Limits, TaskSpec, find_cycle, validate_execution_spec
from ._states import (
    TERMINAL_REASONS,
    TERMINAL_STATES,
    WAITING_REASONS,
    AttemptOutcome,
    ExecutionState,
    LogLevel,
    OpenEnum,
    ReasonCode,
    State,
    TaskRunState,
)
from ._stats import HandlerStats, QueueStats, Stats

__all__ = [
    "DEFAULT_INFRASTRUCTURE_RETRIES",
    "DEFAULT_TASK_ID",
    "JSON_CONTENT_TYPE",
    "JSON_VIEW_VERSION",
    "MAX_ATTEMPTS_LIMIT",
    "MAX_INFRASTRUCTURE_RETRIES_LIMIT",
    "OCTET_STREAM",
    "REFERENCE_MARKER",
    "TERMINAL_REASONS",
    "TERMINAL_STATES",
    "WAITING_REASONS",
    "WORKER_SHUTDOWN_ERROR",
    "AdmissionTimeout",
    "Attempt",
    "AttemptOutcome",
    "Closing",
    "ErrorInfo",
    "Execution",
    "ExecutionFilter",
    "ExecutionSpec",
    "ExecutionState",
    "HandlerStats",
    "IdempotencyConflict",
    "InputReferenceError",
    "InvalidTransition",
    "Limits",
    "LogLevel",
    "NotFound",
    "OpenEnum",
    "Payload",
    "PermissionDenied",
    "Progress",
    "QueueFull",
    "QueueStats",
    "RateLimited",
    "Reason",
    "ReasonCode",
    "Refusal",
    "RetryPolicy",
    "ShuttingDown",
    "State",
    "Stats",
    "TaskRun",
    "TaskRunState",
    "TaskSpec",
    "TaskwireError",
    "TerminalStateError",
    "Unauthenticated",
    "ValidationError",
    "attempt_view",
    "decode_payload",
    "dumps_json",
    "execution_view",
    "find_cycle",
    "is_json_content_type",
    "iso",
    "json_payload",
    "loads_json",
    "payload_view",
    "positive_int",
    "references",
    "resolve",
    "task_run_view",
    "validate_execution_spec",
]
