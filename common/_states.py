"""States, attempt outcomes, reason codes and log levels: the vocabulary of taskwire.

Each is an *open* enum: a newer server may send a value this version does not
know. Such a value becomes a pseudo-member (`State.unrecognized("PAUSED")`), named
as the wire names it, or `UNKNOWN(42)` when even the wire's descriptor does not
know the number. It compares, prints and serialises like a member, `is_known` is
False, and it is never one of the members a `match` or a table lists, so code
that decides something from a state treats it as "none of the above". Parsing
text (`State("PAUSED")`) stays strict: only the converter makes pseudo-members.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self


class OpenEnum(StrEnum):
    """A StrEnum that can carry a value from a newer version of taskwire."""

    @classmethod
    def unrecognized(cls, name: str) -> Self:
        """The member called `name`, or a pseudo-member for a value this version does not know.

        Pseudo-members are made once per name, so `is` compares them like members.
        """
        known = cls._member_map_.get(name)
        if known is not None:
            return known  # type: ignore[return-value]
        made = _UNRECOGNIZED.get((cls, name))
        if made is None:
            member = str.__new__(cls, name)
            member._name_ = name
            member._value_ = name
            made = _UNRECOGNIZED.setdefault((cls, name), member)
        return made  # type: ignore[return-value]

    @property
    def is_known(self) -> bool:
        """False for a value from a newer version (a pseudo-member)."""
        return not _UNRECOGNIZED or self._name_ in type(self)._member_map_

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[str]]:
        # Pickle a pseudo-member through `unrecognized`: `cls(value)` would refuse it.
        return type(self).unrecognized, (self._name_,)


_UNRECOGNIZED: dict[tuple[type[OpenEnum], str], OpenEnum] = {}


class State(OpenEnum):
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
        """One of the terminal states this version knows (see `Execution.is_terminal` for a newer state)."""
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Not terminal: the record may still change."""
        return self not in TERMINAL_STATES


# Executions and task runs share one set of states; the aliases keep signatures readable.
ExecutionState = State
TaskRunState = State

TERMINAL_STATES = frozenset({State.SUCCESS, State.FAILED, State.CANCELLED})


class AttemptOutcome(OpenEnum):
    """How one dispatch of a task run to a worker ended."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    LOST = "LOST"  # the lease expired: the worker stopped heartbeating


class ReasonCode(OpenEnum):
    """Why a record is in its state. One list; see the README's table."""

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
    # Failures that are not the handler's fault, once their own retry budget is spent.
    WORKER_LOST = "WORKER_LOST"
    WORKER_SHUTDOWN = "WORKER_SHUTDOWN"
    # No worker started the task run within its schedule-to-start timeout.
    SCHEDULE_TO_START_TIMEOUT = "SCHEDULE_TO_START_TIMEOUT"
    # The reasons of WAITING.
    RETRY_BACKOFF = "RETRY_BACKOFF"
    DEPENDENCIES = "DEPENDENCIES"
    SCHEDULED = "SCHEDULED"
    # Its concurrency key has as many attempts running or queued as its limit allows.
    CONCURRENCY_LIMIT = "CONCURRENCY_LIMIT"
    # Its rate limit had no token when a worker was free for it.
    RATE_LIMITED = "RATE_LIMITED"


class LogLevel(OpenEnum):
    """The level of a line a handler logged."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


WAITING_REASONS = frozenset(
    {
        ReasonCode.RETRY_BACKOFF,
        ReasonCode.DEPENDENCIES,
        ReasonCode.SCHEDULED,
        ReasonCode.CONCURRENCY_LIMIT,
        ReasonCode.RATE_LIMITED,
    }
)

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
            ReasonCode.WORKER_LOST,
            ReasonCode.WORKER_SHUTDOWN,
            ReasonCode.SCHEDULE_TO_START_TIMEOUT,
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
