"""Events: the plain values that drive the state machine.

Attempt-scoped events name their attempt number; that number is the fence that
lets a late message from an old attempt be recognised and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._models import ErrorInfo, Payload, Reason
from ._states import ReasonCode

# ---- Task run events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskDispatched:
    """Attempt `attempt` was sent to worker `worker_id` (its name) of instance `worker_instance`, whose
    credential names `worker_identity` ("" when the server runs without authentication)."""

    attempt: int
    worker_id: str
    worker_identity: str = ""
    worker_instance: str = ""


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    attempt: int
    output: Payload


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """The handler raised. Whether it is retried is the retry policy's call."""

    attempt: int
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class TaskTimedOut:
    """The task run's own timeout passed while `attempt` ran."""

    attempt: int


@dataclass(frozen=True, slots=True)
class LeaseExpired:
    """The worker holding `attempt` lost it: it stopped heartbeating, or said it no longer runs it."""

    attempt: int
    #: What happened, after the worker's name in the attempt's error.
    why: str = "stopped heartbeating"


@dataclass(frozen=True, slots=True)
class CancelAcknowledged:
    """The worker stopped the handler of a cancelled attempt."""

    attempt: int


@dataclass(frozen=True, slots=True)
class CancelGraceExpired:
    """The worker did not acknowledge a cancel in time: the attempt is fenced."""

    attempt: int


@dataclass(frozen=True, slots=True)
class TaskProgressed:
    """A handler reported progress. Changes no state, but is recorded."""

    attempt: int
    fraction: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class RetryDue:
    """The backoff of a WAITING(RETRY_BACKOFF) task run is over."""


@dataclass(frozen=True, slots=True)
class ScheduleDue:
    """The not-before time of a WAITING(SCHEDULED) record has come."""


@dataclass(frozen=True, slots=True)
class DependenciesMet:
    """Every task this one depends on succeeded."""


@dataclass(frozen=True, slots=True)
class DependenciesFailed:
    """A task this one depends on ended without success."""

    task_id: str


@dataclass(frozen=True, slots=True)
class StartTimedOut:
    """A PENDING task run waited its schedule-to-start timeout and no worker started it.

    `attempts` is how many attempts it had when it became PENDING: a timer from an earlier wait no longer applies.
    """

    attempts: int


@dataclass(frozen=True, slots=True)
class KeyFull:
    """A task run just queued finds its concurrency key full: it waits for a place (`message` has the numbers)."""

    message: str


@dataclass(frozen=True, slots=True)
class KeyPlaceFree:
    """A place of its concurrency key is this WAITING(CONCURRENCY_LIMIT) task run's now: it may queue."""


@dataclass(frozen=True, slots=True)
class RateLimitEmpty:
    """A task run about to be dispatched finds its rate limit without a token: it waits for one (`message` has the
    numbers)."""

    message: str


@dataclass(frozen=True, slots=True)
class RateTokenGranted:
    """A token of its rate limit is this WAITING(RATE_LIMITED) task run's now: it may queue."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Stop this task run: cancelled, timed out or upstream failed, as `reason` says."""

    reason: Reason


TaskRunEvent = (
    TaskDispatched
    | TaskSucceeded
    | TaskFailed
    | TaskTimedOut
    | LeaseExpired
    | CancelAcknowledged
    | CancelGraceExpired
    | TaskProgressed
    | RetryDue
    | ScheduleDue
    | DependenciesMet
    | DependenciesFailed
    | StartTimedOut
    | KeyFull
    | KeyPlaceFree
    | RateLimitEmpty
    | RateTokenGranted
    | CancelRequested
)

ATTEMPT_EVENTS = (
    TaskDispatched,
    TaskSucceeded,
    TaskFailed,
    TaskTimedOut,
    LeaseExpired,
    CancelAcknowledged,
    CancelGraceExpired,
    TaskProgressed,
)

# ---- Execution events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecutionStarted:
    """Its first task run was dispatched."""


@dataclass(frozen=True, slots=True)
class ExecutionSucceeded:
    """Every task run succeeded."""


@dataclass(frozen=True, slots=True)
class ExecutionFailed:
    """A task run failed terminally: the execution fails once the rest have stopped."""

    task_id: str
    code: ReasonCode
    message: str


@dataclass(frozen=True, slots=True)
class CancellationRequested:
    """A client asked to cancel the execution."""

    message: str = "cancellation requested"


@dataclass(frozen=True, slots=True)
class ExecutionTimeoutFired:
    """The execution deadline passed."""


@dataclass(frozen=True, slots=True)
class ExecutionSettled:
    """A closing execution has no active task run left: it takes its final state."""


ExecutionEvent = (
    ExecutionStarted
    | ExecutionSucceeded
    | ExecutionFailed
    | CancellationRequested
    | ExecutionTimeoutFired
    | ExecutionSettled
    | ScheduleDue
)


def event_name(event: TaskRunEvent | ExecutionEvent) -> str:
    """The event's stable name, as stored and shown (`TaskDispatched`, ...)."""
    return type(event).__name__
