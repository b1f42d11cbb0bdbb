"""An execution's transitions: its table of allowed (state, event) rows and the rules that close it.
`transition_execution(execution, event, now)` applies one event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from taskwire.common import evolve

from ._effects import (
    ExecutionFinished,
)
from ._errors import InvalidTransition
from ._events import (
    CancellationRequested,
    ExecutionEvent,
    ExecutionFailed,
    ExecutionSettled,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimeoutFired,
    ScheduleDue,
)
from ._models import (
    Closing,
    Execution,
    Reason,
)
from ._states import ReasonCode, State
from ._transitions import (
    C,
    F,
    P,
    R,
    Row,
    S,
    Transition,
    W,
    _noop,
    _refuse,
    _rows,
    _touch,
)

# What a closing execution asks of its still-active task runs.
_PROPAGATED_REASON = {
    ReasonCode.CANCEL_REQUESTED: ReasonCode.EXECUTION_CANCELLED,
    ReasonCode.EXECUTION_TIMED_OUT: ReasonCode.EXECUTION_TIMED_OUT,
}


def propagated_reason(closing: Closing) -> Reason:
    """The reason a task run is cancelled with when its execution closes."""
    code = _PROPAGATED_REASON.get(closing.reason.code, ReasonCode.UPSTREAM_FAILED)
    return Reason(code, closing.reason.message)


def _on_execution_started(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
    if execution.state is State.RUNNING:
        return _noop(execution)
    at = _touch(execution.updated_at, now)
    return Transition(
        record=evolve(execution, state=State.RUNNING, started_at=execution.started_at or at, updated_at=at)
    )


def _on_execution_schedule_due(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
    if execution.state is State.PENDING:
        return _noop(execution)
    record = evolve(execution, state=State.PENDING, reason=None, updated_at=_touch(execution.updated_at, now))
    return Transition(record=record)


def _close(
    state: State, reason_of: Callable[[object], Reason]
) -> Callable[[Execution, object, datetime], Transition[Execution]]:
    """Cancellation, deadline, task failure: remember the outcome (the planner stops the active task runs)."""

    def apply(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
        if execution.closing is not None or execution.state.is_terminal:
            return _noop(execution)
        closing = Closing(state=state, reason=reason_of(event))
        return Transition(record=evolve(execution, closing=closing, updated_at=_touch(execution.updated_at, now)))

    return apply


def _cancel_reason(event: object) -> Reason:
    assert isinstance(event, CancellationRequested)
    return Reason(ReasonCode.CANCEL_REQUESTED, event.message or "cancellation requested")


def _failure_reason(event: object) -> Reason:
    assert isinstance(event, ExecutionFailed)
    return Reason(event.code, f"task {event.task_id!r} failed: {event.message}")


def _timeout_reason(event: object) -> Reason:
    return Reason(ReasonCode.EXECUTION_TIMED_OUT, "the execution deadline passed")


def _end_execution(execution: Execution, state: State, reason: Reason, now: datetime) -> Transition[Execution]:
    at = _touch(execution.updated_at, now)
    record = evolve(execution, state=state, reason=reason, ended_at=at, updated_at=at, closing=None)
    return Transition(record=record, effects=(ExecutionFinished(execution.id, state),))


def _on_execution_succeeded(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
    if execution.state is State.SUCCESS:
        return _noop(execution)
    return _end_execution(execution, State.SUCCESS, Reason(ReasonCode.COMPLETED, "every task succeeded"), now)


def _on_execution_settled(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
    if execution.state.is_terminal:
        return _noop(execution)
    if execution.closing is None:
        raise InvalidTransition(
            entity="execution",
            entity_id=execution.id,
            state=execution.state,
            event="ExecutionSettled",
            reason="the execution is not closing",
        )
    return _end_execution(execution, execution.closing.state, execution.closing.reason, now)


def _ignore_on_terminal(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
    """Cancelling a terminal execution is an OK no-op: cancellation is idempotent."""
    return _noop(execution)


_cancel = _close(State.CANCELLED, _cancel_reason)
_fail = _close(State.FAILED, _failure_reason)
_time_out = _close(State.FAILED, _timeout_reason)
_ACTIVE_EXECUTION = (P, W, R)

EXECUTION_TRANSITIONS: dict[tuple[State, type], Row[Execution]] = _rows(
    {
        (P, ExecutionStarted): (frozenset({R}), _on_execution_started),
        (R, ExecutionStarted): (frozenset({R}), _on_execution_started),
        (W, ScheduleDue): (frozenset({P}), _on_execution_schedule_due),
        (P, ScheduleDue): (frozenset({P}), _on_execution_schedule_due),
        (R, ExecutionSucceeded): (frozenset({S}), _on_execution_succeeded),
        (S, ExecutionSucceeded): (frozenset({S}), _on_execution_succeeded),
        **{(s, CancellationRequested): (frozenset({s}), _cancel) for s in _ACTIVE_EXECUTION},
        **{(s, ExecutionTimeoutFired): (frozenset({s}), _time_out) for s in _ACTIVE_EXECUTION},
        **{(s, ExecutionFailed): (frozenset({s}), _fail) for s in _ACTIVE_EXECUTION},
        **{(s, ExecutionSettled): (frozenset({F, C}), _on_execution_settled) for s in _ACTIVE_EXECUTION},
        **{(s, ExecutionSettled): (frozenset({s}), _on_execution_settled) for s in (F, C)},
        **{(s, CancellationRequested): (frozenset({s}), _ignore_on_terminal) for s in (S, F, C)},
    }
)


def transition_execution(execution: Execution, event: ExecutionEvent, now: datetime) -> Transition[Execution]:
    """Apply one event to an execution at time `now`."""
    row = EXECUTION_TRANSITIONS.get((execution.state, type(event)))
    if row is None:
        raise _refuse("execution", execution, event)
    result = row.apply(execution, event, now)
    assert result.record.state in row.targets, (execution.state, event, result.record.state)
    return result
