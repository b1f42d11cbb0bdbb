"""The records of taskwire: Execution, TaskRun and Attempt, with their parts.

Records are frozen; a change makes a new record (`evolve`, `dataclasses.replace` made fast). Each
record checks its own invariants when built, so a WAITING record without a
reason or a terminal one without its reason cannot exist. The checks apply to
the values this version knows: a record that a newer server sent with a state,
reason code or outcome from the future is kept as it came (a server never builds
one), so the SDK can show it.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from ._payload import Payload
from ._states import TERMINAL_REASONS, WAITING_REASONS, AttemptOutcome, ReasonCode, State


@dataclass(frozen=True, slots=True)
class Reason:
    """A reason code with the human message that goes with it."""

    code: ReasonCode
    message: str


def _message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as error:  # a handler's own exception class: its __str__ may raise too
        return f"(its message could not be read: {type(error).__name__} in {type(exc).__name__}.__str__)"


def _attribute(exc: BaseException, name: str, default: object) -> object:
    try:
        return getattr(exc, name, default)
    except Exception:  # a property that raises
        return default


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error raised by a handler, as the worker reports it and the server records it."""

    type: str
    message: str
    retryable: bool = True
    traceback: str = ""
    # Set when the handler reported that the remote side rate limited it (`taskwire.worker.RateLimited`): the
    # server retries after this long, and the attempt costs nothing.
    retry_after: timedelta | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """The error type is the exception's class name; ``retryable`` is its ``retryable`` attribute;
        ``retry_after`` its ``taskwire_retry_after`` (what `taskwire.worker.RateLimited` sets). An exception
        whose ``__str__`` or attributes themselves raise still gives one: what it could not tell is said so."""
        retry_after = _attribute(exc, "taskwire_retry_after", None)
        try:
            formatted = "".join(traceback.format_exception(exc))
        except Exception as error:
            formatted = f"(its traceback could not be formatted: {type(error).__name__})"
        return cls(
            type=type(exc).__name__,
            message=_message_of(exc),
            retryable=bool(_attribute(exc, "retryable", True)),
            traceback=formatted,
            retry_after=retry_after if isinstance(retry_after, timedelta) else None,
        )

    @property
    def is_rate_limited(self) -> bool:
        """The handler said the remote side rate limited it: not the handler's failure."""
        return self.retry_after is not None

    @property
    def is_refusal(self) -> bool:
        """A worker refused the attempt (`Refusal`): its handler never ran."""
        return self.type in _REFUSALS

    @property
    def is_worker_shutdown(self) -> bool:
        """The worker shut down before the handler finished: not the handler's fault."""
        return self.type == WORKER_SHUTDOWN_ERROR


class Refusal(StrEnum):
    """The error types of a worker's refusal: the attempt never ran, so it costs no attempt."""

    WORKER_DRAINING = "WorkerDraining"
    ATTEMPT_ALREADY_RUNNING = "AttemptAlreadyRunning"
    SLOTS_EXHAUSTED = "SlotsExhausted"


_REFUSALS = frozenset(refusal.value for refusal in Refusal)

# The error type of an attempt its worker abandoned because it shut down (`ErrorInfo.is_worker_shutdown`).
WORKER_SHUTDOWN_ERROR = "WorkerShutdown"


@dataclass(frozen=True, slots=True)
class Progress:
    """The last progress a handler reported."""

    fraction: float
    message: str = ""


DEFAULT_INITIAL_INTERVAL = timedelta(seconds=1)
DEFAULT_BACKOFF_COEFFICIENT = 2.0
MAX_ATTEMPTS_LIMIT = 100
# Retries after failures that are not the handler's fault (worker lost, worker shutdown), on top of
# `max_attempts`: the default, and the most a policy may ask for.
DEFAULT_INFRASTRUCTURE_RETRIES = 3
MAX_INFRASTRUCTURE_RETRIES_LIMIT = 100
# A task's priority: an integer from MIN_PRIORITY to MAX_PRIORITY, higher dispatched first (docs/flow-control.md).
MIN_PRIORITY = 1
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
# The largest concurrency limit a task may name.
MAX_CONCURRENCY_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Whether a failed attempt is retried, and after how long.

    The delay before attempt n+1 is
    min(initial_interval * backoff_coefficient ** (n - 1), maximum_interval).

    `max_attempts` counts the attempts whose handler had its say. An attempt lost with its worker
    (lease expired, or the worker no longer runs it) or abandoned by a worker shutting down is not the
    handler's fault: it does not count, and up to `max_infrastructure_retries` of those are retried.
    """

    max_attempts: int = 1
    initial_interval: timedelta = DEFAULT_INITIAL_INTERVAL
    backoff_coefficient: float = DEFAULT_BACKOFF_COEFFICIENT
    maximum_interval: timedelta | None = None  # None: 100 × initial_interval
    non_retryable_error_types: tuple[str, ...] = ()
    max_infrastructure_retries: int = DEFAULT_INFRASTRUCTURE_RETRIES

    @property
    def effective_maximum_interval(self) -> timedelta:
        return self.maximum_interval if self.maximum_interval is not None else self.initial_interval * 100

    def delay_after(self, failed_attempt: int) -> timedelta:
        """The backoff before the attempt that follows attempt number `failed_attempt`."""
        cap = self.effective_maximum_interval
        try:
            scaled = self.initial_interval.total_seconds() * self.backoff_coefficient ** (failed_attempt - 1)
        except OverflowError:
            return cap
        # Compare as seconds first: a large exponent would overflow timedelta before min() could cap it.
        if not scaled < cap.total_seconds():
            return cap
        return min(timedelta(seconds=scaled), cap)

    def allows_retry_of(self, error: ErrorInfo | None) -> bool:
        """False when the error is marked non-retryable by the handler or by this policy."""
        if error is None:
            return True
        return error.retryable and error.type not in self.non_retryable_error_types


@dataclass(frozen=True, slots=True)
class Attempt:
    """One dispatch of a task run to a worker."""

    task_run_id: str
    number: int
    worker_id: str
    started_at: datetime
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    ended_at: datetime | None = None
    output: Payload | None = None
    error: ErrorInfo | None = None
    # The identity of the worker's credential (server side only; "" without authentication): only a worker
    # with this identity may report on the attempt or take it back after a reconnect.
    worker_identity: str = ""
    # The worker's instance id (server side only; "" in attempts stored before it was kept): after a restart
    # or an adoption, only that worker process takes the attempt back, whatever name other workers share.
    worker_instance: str = ""

    def __post_init__(self) -> None:
        if self.number < 1:
            raise ValueError(f"attempt number must be at least 1, got {self.number}")
        if self.outcome.is_known and (self.outcome is AttemptOutcome.RUNNING) != (self.ended_at is None):
            raise ValueError("an attempt has ended_at exactly when its outcome is not RUNNING")
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("an attempt cannot end before it started")

    @property
    def is_running(self) -> bool:
        return self.outcome is AttemptOutcome.RUNNING


def _check_state_reason(kind: str, record_id: str, state: State, reason: Reason | None) -> None:
    if not state.is_known or (reason is not None and not reason.code.is_known):
        return  # a value from a newer version: kept as it came
    if state is State.WAITING:
        if reason is None or reason.code not in WAITING_REASONS:
            raise ValueError(f"{kind} {record_id}: WAITING needs a reason among {sorted(WAITING_REASONS)}")
    elif state.is_terminal and (reason is None or reason.code not in TERMINAL_REASONS[state]):
        raise ValueError(f"{kind} {record_id}: {state} needs a reason among {sorted(TERMINAL_REASONS[state])}")
    if reason is not None and not reason.message:
        raise ValueError(f"{kind} {record_id}: a reason needs a human message")


def _check_timestamps(
    kind: str,
    record_id: str,
    state: State,
    created_at: datetime,
    started_at: datetime | None,
    ended_at: datetime | None,
    updated_at: datetime,
) -> None:
    if state.is_known and state.is_terminal != (ended_at is not None):
        raise ValueError(f"{kind} {record_id}: ended_at is set exactly when the state is terminal")
    # created_at <= started_at <= ended_at (those set) <= updated_at; compared in place, as it runs per transition.
    latest = created_at
    for moment in (started_at, ended_at):
        if moment is not None:
            if moment < latest:
                raise ValueError(f"{kind} {record_id}: timestamps out of order")
            latest = moment
    if updated_at < latest:
        raise ValueError(f"{kind} {record_id}: timestamps out of order")


def _ended(state: State, ended_at: datetime | None) -> bool:
    """Terminal: a state this version knows says so; for a newer one, ended_at (set exactly when terminal) does."""
    return state.is_terminal if state.is_known else ended_at is not None


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One task of an execution: what to run, and everything that happened to it."""

    id: str
    execution_id: str
    task_id: str
    handler: str
    input: Payload
    depends_on: tuple[str, ...]
    timeout: timedelta | None
    retry_policy: RetryPolicy
    state: State
    reason: Reason | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    # When a WAITING(RETRY_BACKOFF or SCHEDULED) task run becomes eligible.
    not_before: datetime | None = None
    # A cancellation sent to the worker of the running attempt and not yet answered.
    pending_cancel: Reason | None = None
    progress: Progress | None = None
    # How long it may wait PENDING for a worker to start it; None: no limit.
    schedule_to_start_timeout: timedelta | None = None
    # MIN_PRIORITY to MAX_PRIORITY; among a handler's queued task runs a higher one is dispatched first.
    priority: int = DEFAULT_PRIORITY
    # With a key: at most `concurrency_limit` attempts of the key run at once (docs/flow-control.md).
    concurrency_key: str = ""
    concurrency_limit: int = 0
    # Its tenant: within a priority, dispatch takes the fairness keys of a handler's queue in turns.
    fairness_key: str = ""
    # The server's rate limit it draws a token from at each dispatch, and the key of its own bucket of it.
    rate_limit: str = ""
    rate_limit_key: str = ""

    def __post_init__(self) -> None:
        _check_state_reason("task run", self.id, self.state, self.reason)
        _check_timestamps(
            "task run", self.id, self.state, self.created_at, self.started_at, self.ended_at, self.updated_at
        )
        if not self.state.is_known:
            return  # a value from a newer version: kept as it came
        running = 0
        for attempt in self.attempts:
            if not attempt.outcome.is_known:
                return  # as above
            running += attempt.outcome is AttemptOutcome.RUNNING
        if (self.state is State.RUNNING) != (running > 0) or running > 1:
            raise ValueError(f"task run {self.id}: exactly one attempt runs while RUNNING, none otherwise")
        if running and not self.attempts[-1].is_running:
            raise ValueError(f"task run {self.id}: only the latest attempt may run")
        if self.pending_cancel is not None and self.state is not State.RUNNING:
            raise ValueError(f"task run {self.id}: a pending cancel only exists while RUNNING")

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    @property
    def output(self) -> Payload | None:
        """The output of its successful attempt, or None (it has not succeeded)."""
        for attempt in reversed(self.attempts):
            if attempt.outcome is AttemptOutcome.SUCCEEDED:
                return attempt.output
        return None

    @property
    def is_terminal(self) -> bool:
        """Ended for good, also in a terminal state from a newer version (then `ended_at` says so)."""
        return _ended(self.state, self.ended_at)


@dataclass(frozen=True, slots=True)
class Execution:
    """One submitted unit of work, made of task runs."""

    id: str
    name: str
    state: State
    reason: Reason | None
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    deadline: datetime | None = None
    not_before: datetime | None = None
    idempotency_key: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # Set when the execution must end (cancelled, timed out or failed) but task
    # runs are still stopping; the state becomes final once nothing is active.
    closing: Closing | None = None
    # The identity that submitted it ("" when the server runs without authentication).
    submitted_by: str = ""
    # The submitter's W3C trace context (traceparent, tracestate); empty: none.
    trace_context: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_state_reason("execution", self.id, self.state, self.reason)
        _check_timestamps(
            "execution", self.id, self.state, self.created_at, self.started_at, self.ended_at, self.updated_at
        )
        if self.closing is not None and self.state.is_terminal:
            raise ValueError(f"execution {self.id}: a terminal execution is not closing")

    @property
    def is_terminal(self) -> bool:
        """Ended for good, also in a terminal state from a newer version (then `ended_at` says so)."""
        return _ended(self.state, self.ended_at)


@dataclass(frozen=True, slots=True)
class Closing:
    """The terminal state an execution will take once its task runs have stopped."""

    state: State
    reason: Reason

    def __post_init__(self) -> None:
        if not self.state.is_known or not self.reason.code.is_known:
            return  # a value from a newer version: kept as it came
        if self.reason.code not in TERMINAL_REASONS.get(self.state, frozenset()):
            raise ValueError(f"{self.reason.code} is not a reason for {self.state}")
