"""States, attempt outcomes and reason codes: the closed vocabulary of taskwire."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The state of an execution or of a task run.

    PENDING means eligible and queued; WAITING means "not eligible yet" and always
    carries a reason. SUCCESS, FAILED and CANCELLED are terminal.
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Not terminal: the record may still change."""
        return self not in TERMINAL_STATES


# Executions and task runs share one set of states; the aliases keep signatures readable.
ExecutionState = State
TaskRunState = State

TERMINAL_STATES = frozenset({State.SUCCESS, State.FAILED, State.CANCELLED})


class AttemptOutcome(StrEnum):
    """How one dispatch of a task run to a worker ended."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    LOST = "LOST"  # the lease expired: the worker stopped heartbeating


class ReasonCode(StrEnum):
    """Why a record is in its state. One closed list; see the README's table."""

    COMPLETED = "COMPLETED"
    HANDLER_ERROR = "HANDLER_ERROR"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    TIMED_OUT = "TIMED_OUT"
    EXECUTION_TIMED_OUT = "EXECUTION_TIMED_OUT"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    EXECUTION_CANCELLED = "EXECUTION_CANCELLED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    NON_RETRYABLE_ERROR = "NON_RETRYABLE_ERROR"
    # The reasons of WAITING.
    RETRY_BACKOFF = "RETRY_BACKOFF"
    DEPENDENCIES = "DEPENDENCIES"
    SCHEDULED = "SCHEDULED"


WAITING_REASONS = frozenset({ReasonCode.RETRY_BACKOFF, ReasonCode.DEPENDENCIES, ReasonCode.SCHEDULED})

# Which reasons each terminal state may carry: a record with any other pairing is refused.
TERMINAL_REASONS: dict[State, frozenset[ReasonCode]] = {
    State.SUCCESS: frozenset({ReasonCode.COMPLETED}),
    State.FAILED: frozenset(
        {
            ReasonCode.HANDLER_ERROR,
            ReasonCode.RETRIES_EXHAUSTED,
            ReasonCode.TIMED_OUT,
            ReasonCode.EXECUTION_TIMED_OUT,
            ReasonCode.LEASE_EXPIRED,
            ReasonCode.NON_RETRYABLE_ERROR,
        }
    ),
    State.CANCELLED: frozenset(
        {
            ReasonCode.CANCEL_REQUESTED,
            ReasonCode.EXECUTION_CANCELLED,
            ReasonCode.EXECUTION_TIMED_OUT,
            ReasonCode.UPSTREAM_FAILED,
        }
    ),
}
