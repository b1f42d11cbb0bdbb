"""One error hierarchy for all of taskwire: everything taskwire raises on purpose is a `TaskwireError`.

The tree, by where each branch lives:

- here: the errors that cross the wire (`ValidationError`, `InvalidTransition` and
  `TerminalStateError`, `NotFound`, `AlreadyExists` and `IdempotencyConflict`, `QueueFull`,
  `AdmissionTimeout`, `ShuttingDown`, `WatcherFellBehind`, `Unauthenticated`, `PermissionDenied`,
  `RateLimited`, `RequestTooLarge`);
- `taskwire.client`: `ServerUnavailable`, `WaitTimeout`, and `ExecutionEnded` with
  `ExecutionFailed` and `ExecutionCancelled`;
- `taskwire.worker`: `WorkerAgentError` and its family (`NonRetryableError`,
  `HandlerLoadError`, `Aborted`, ...).

Each error names the gRPC status it maps to (by name, so this module stays free
of grpc); `taskwire.common.wire` turns that name into a status for the server and
a status back into the same class for the client.
"""

from __future__ import annotations

from typing import ClassVar

#: The most UTF-8 bytes of an error's message. A message quotes what it was given, and a status's message
#: travels in a gRPC trailer, percent-encoded, which peers refuse past 8 to 16 KiB: an id of megabytes
#: quoted whole would turn the caller's mistake into a broken call.
MAX_MESSAGE_BYTES = 1000


def _clamped(message: str) -> str:
    if len(message) * 4 <= MAX_MESSAGE_BYTES:  # the common case, without encoding it
        return message
    encoded = message.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    kept = encoded[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")
    return f"{kept}… ({len(message) - len(kept)} more characters)"


class TaskwireError(Exception):
    """The root of every error taskwire raises on purpose. Its message is cut to `MAX_MESSAGE_BYTES`."""

    status_name: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str = "", *args: object) -> None:
        message = _clamped(message)
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message if len(self.args) <= 1 else super().__str__()


class ValidationError(TaskwireError):
    """A request field is wrong. `field` is a path such as `execution.tasks[1].handler`."""

    status_name = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class InvalidTransition(TaskwireError):
    """An event that the state machine does not allow in the record's current state."""

    status_name = "FAILED_PRECONDITION"

    def __init__(self, *, entity: str, entity_id: str, state: str, event: str, reason: str) -> None:
        super().__init__(f"{entity} {entity_id} is {state}: cannot apply {event} ({reason})")
        self.entity = entity
        self.entity_id = entity_id
        self.state = state
        self.event = event
        self.reason = reason


class TerminalStateError(InvalidTransition):
    """An event that would change a record already in a terminal state."""


class Unimplemented(TaskwireError):
    """The server does not know the call: it is older than this client."""

    status_name = "UNIMPLEMENTED"


class NotFound(TaskwireError):
    status_name = "NOT_FOUND"

    def __init__(self, entity: str, entity_id: str, *, key: str = "id") -> None:
        super().__init__(f"no {entity} with {key} {entity_id!r}")
        self.entity = entity
        self.entity_id = entity_id


class AlreadyExists(TaskwireError):
    """Something with that name (or key) exists already: a schedule name, an idempotency key."""

    status_name = "ALREADY_EXISTS"


class IdempotencyConflict(AlreadyExists):
    """An idempotency key reused with a different request."""

    status_name = "ALREADY_EXISTS"

    def __init__(self, key: str, execution_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for execution {execution_id} "
            "with a different request; use a new key"
        )
        self.key = key
        self.execution_id = execution_id


class QueueFull(TaskwireError):
    """A fail-fast submit found no room in the bounded queue."""

    status_name = "RESOURCE_EXHAUSTED"

    def __init__(self, *, size: int, capacity: int, requested: int) -> None:
        super().__init__(
            f"queue full: {size} of {capacity} task runs queued, {requested} more requested; "
            "retry later or submit with wait-for-room"
        )
        self.size = size
        self.capacity = capacity
        self.requested = requested


class AdmissionTimeout(TaskwireError):
    """A wait-for-room submit whose deadline passed before the queue had room."""

    status_name = "DEADLINE_EXCEEDED"


class WatcherFellBehind(TaskwireError):
    """A watcher of all executions read too slowly: the server dropped it rather than buffer without bound."""

    status_name = "ABORTED"


class Superseded(TaskwireError):
    """A worker's hello that waited (its attempts handed over from another replica) while a later hello of the same
    worker instance connected: the later stream stands, and this one, which the worker gave up, is refused."""

    status_name = "ABORTED"


class ShuttingDown(TaskwireError):
    """The server is stopping and takes no new work."""

    status_name = "UNAVAILABLE"


class Unauthenticated(TaskwireError):
    """The call carries no credential, or one the server does not know."""

    status_name = "UNAUTHENTICATED"


class PermissionDenied(TaskwireError):
    """The caller's identity may not do this (its role, or the attempt is another identity's)."""

    status_name = "PERMISSION_DENIED"


class RequestTooLarge(TaskwireError):
    """A request (or an answer) larger than a side of the call accepts: gRPC's limit on one message."""

    status_name = "RESOURCE_EXHAUSTED"


class RateLimited(TaskwireError):
    """The caller went over one of its limits (submit rate, worker streams). `retry_after_s` is the
    server's hint of when a retry may pass (0: not until something is released, such as a stream)."""

    status_name = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
