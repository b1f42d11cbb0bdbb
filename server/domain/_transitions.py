"""The pure transition functions and the tables they read.

`transition_task_run(task_run, event, now)` and `transition_execution(execution,
event, now)` return a `Transition`: the new record, the effects the engine must
carry out, and whether anything happened at all. They read an explicit table of
allowed (state, event) rows; any other pair raises `InvalidTransition` (or its
subclass `TerminalStateError` for a terminal record).

Two kinds of event change nothing and emit no effect:
- replays: an event whose result already holds (a second cancel, a second
  DependenciesMet on a PENDING run, an attempt report for an attempt that ended);
- stale attempt reports: a message about an attempt older than the current one.
That is the fencing of at-least-once delivery, and it lives here, in one place.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from ._budget import attempts_used, infrastructure_failure, infrastructure_failures, is_refusal
from ._effects import (
    ArmAttemptTimeout,
    AttemptEnded,
    CancelOnWorker,
    Effect,
    Enqueue,
    ExecutionFinished,
    ScheduleRetry,
    TaskRunFinished,
)
from ._errors import InvalidTransition, TerminalStateError
from ._events import (
    ATTEMPT_EVENTS,
    CancelAcknowledged,
    CancelGraceExpired,
    CancellationRequested,
    CancelRequested,
    DependenciesFailed,
    DependenciesMet,
    ExecutionEvent,
    ExecutionFailed,
    ExecutionSettled,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimeoutFired,
    LeaseExpired,
    RetryDue,
    ScheduleDue,
    StartTimedOut,
    TaskDispatched,
    TaskFailed,
    TaskProgressed,
    TaskRunEvent,
    TaskSucceeded,
    TaskTimedOut,
    event_name,
)
from ._models import (
    Attempt,
    Closing,
    ErrorInfo,
    Execution,
    Progress,
    Reason,
    TaskRun,
)
from ._states import AttemptOutcome, ReasonCode, State

RecordT = TypeVar("RecordT", TaskRun, Execution)


@dataclass(frozen=True, slots=True)
class Transition(Generic[RecordT]):
    """The outcome of applying one event: the record after it and what to do next."""

    record: RecordT
    effects: tuple[Effect, ...] = ()
    # False for replays and stale reports: nothing changed, nothing is to be stored.
    applied: bool = True


def _noop(record: RecordT) -> Transition[RecordT]:
    return Transition(record=record, effects=(), applied=False)


def _touch(previous: datetime, now: datetime) -> datetime:
    """updated_at never goes backwards, even if the caller's clock does."""
    return max(previous, now)


# ---- Task runs ----------------------------------------------------------------------------------

P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED

TaskRunRule = Callable[[TaskRun, TaskRunEvent, datetime], Transition[TaskRun]]


@dataclass(frozen=True, slots=True)
class Row(Generic[RecordT]):
    """One allowed (state, event) pair: the states it may lead to, and how."""

    targets: frozenset[State]
    apply: Callable[[RecordT, object, datetime], Transition[RecordT]]


def _ended(task_run: TaskRun, state: State, reason: Reason, now: datetime, **changes: object) -> TaskRun:
    at = _touch(task_run.updated_at, now)
    return dataclasses.replace(
        task_run,
        state=state,
        reason=reason,
        ended_at=at,
        updated_at=at,
        not_before=None,
        pending_cancel=None,
        **changes,  # type: ignore[arg-type]
    )


def _end_attempt(
    task_run: TaskRun,
    outcome: AttemptOutcome,
    now: datetime,
    *,
    output: object = None,
    error: ErrorInfo | None = None,
) -> tuple[Attempt, ...]:
    current = task_run.current_attempt
    assert current is not None
    assert current.is_running
    ended = dataclasses.replace(
        current,
        outcome=outcome,
        ended_at=max(current.started_at, now),
        output=output,  # type: ignore[arg-type]
        error=error,
    )
    return (*task_run.attempts[:-1], ended)


def _finish(task_run: TaskRun, *extra: Effect) -> Transition[TaskRun]:
    return Transition(
        record=task_run,
        effects=(*extra, TaskRunFinished(task_run.id, task_run.execution_id, task_run.state)),
    )


def _on_dispatched(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, TaskDispatched)
    at = _touch(task_run.updated_at, now)
    attempt = Attempt(
        task_run_id=task_run.id,
        number=event.attempt,
        worker_id=event.worker_id,
        started_at=at,
        worker_identity=event.worker_identity,
    )
    record = dataclasses.replace(
        task_run,
        state=State.RUNNING,
        reason=None,
        started_at=task_run.started_at or at,
        updated_at=at,
        attempts=(*task_run.attempts, attempt),
        not_before=None,
        progress=None,
    )
    effects: tuple[Effect, ...] = ()
    if task_run.timeout is not None:
        effects = (ArmAttemptTimeout(task_run.id, event.attempt, at + task_run.timeout),)
    return Transition(record=record, effects=effects)


def _on_succeeded(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, TaskSucceeded)
    attempts = _end_attempt(task_run, AttemptOutcome.SUCCEEDED, now, output=event.output)
    message = f"completed on attempt {event.attempt}"
    record = _ended(task_run, State.SUCCESS, Reason(ReasonCode.COMPLETED, message), now, attempts=attempts)
    return _finish(record, AttemptEnded(task_run.id, event.attempt))


def _retry_or_fail(
    task_run: TaskRun,
    attempts: tuple[Attempt, ...],
    now: datetime,
    *,
    failed_attempt: int,
    retryable: bool,
    exhausted_code: ReasonCode,
    what: str,
    extra: tuple[Effect, ...] = (),
) -> Transition[TaskRun]:
    """After an attempt ended without success: cancel wins, then the retry policy decides."""
    ended = AttemptEnded(task_run.id, failed_attempt)
    if task_run.pending_cancel is not None:
        record = _ended(task_run, State.CANCELLED, task_run.pending_cancel, now, attempts=attempts)
        return _finish(record, ended, *extra)
    policy = task_run.retry_policy
    refused = is_refusal(attempts[-1])
    infrastructure = infrastructure_failure(attempts[-1])
    used = attempts_used(attempts)
    if infrastructure is not None:
        # Not the handler's fault: its own budget, apart from max_attempts (see `_budget`).
        lost, allowed = infrastructure_failures(attempts), policy.max_infrastructure_retries
        if lost > allowed:
            reason = Reason(infrastructure, f"{what}; {allowed} of {allowed} infrastructure retries used")
            return _finish(_ended(task_run, State.FAILED, reason, now, attempts=attempts), ended, *extra)
        delay_after, what = lost, f"{what} (not the handler's fault: infrastructure retry {lost} of {allowed})"
    elif not retryable and not refused:
        reason = Reason(ReasonCode.NON_RETRYABLE_ERROR, f"{what}; the error is not retryable")
        return _finish(_ended(task_run, State.FAILED, reason, now, attempts=attempts), ended, *extra)
    elif used >= policy.max_attempts:
        code = exhausted_code
        if policy.max_attempts > 1 and exhausted_code is ReasonCode.HANDLER_ERROR:
            code = ReasonCode.RETRIES_EXHAUSTED
        reason = Reason(code, f"{what}; {policy.max_attempts} of {policy.max_attempts} attempts used")
        return _finish(_ended(task_run, State.FAILED, reason, now, attempts=attempts), ended, *extra)
    else:
        delay_after = max(used, 1)
        what = f"{what} (refused: not counted)" if refused else what
    at = _touch(task_run.updated_at, now)
    retry_at = at + policy.delay_after(delay_after)
    reason = Reason(
        ReasonCode.RETRY_BACKOFF,
        f"{what}; attempt {used + 1} of {policy.max_attempts} at {retry_at.isoformat()}",
    )
    record = dataclasses.replace(
        task_run, state=State.WAITING, reason=reason, updated_at=at, attempts=attempts, not_before=retry_at
    )
    return Transition(record=record, effects=(ended, *extra, ScheduleRetry(task_run.id, retry_at)))


def _on_failed(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, TaskFailed)
    attempts = _end_attempt(task_run, AttemptOutcome.FAILED, now, error=event.error)
    return _retry_or_fail(
        task_run,
        attempts,
        now,
        failed_attempt=event.attempt,
        retryable=task_run.retry_policy.allows_retry_of(event.error),
        exhausted_code=ReasonCode.HANDLER_ERROR,
        what=f"attempt {event.attempt} failed: {event.error.type}: {event.error.message}",
    )


def _on_timed_out(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, TaskTimedOut)
    current = task_run.current_attempt
    assert current is not None
    timeout_s = task_run.timeout.total_seconds() if task_run.timeout else 0.0
    error = ErrorInfo(type="TimeoutError", message=f"attempt exceeded its timeout of {timeout_s:g}s")
    attempts = _end_attempt(task_run, AttemptOutcome.TIMED_OUT, now, error=error)
    # The handler may still be running on its worker: tell it to stop.
    stop = CancelOnWorker(task_run.id, event.attempt, current.worker_id, Reason(ReasonCode.TIMED_OUT, error.message))
    return _retry_or_fail(
        task_run,
        attempts,
        now,
        failed_attempt=event.attempt,
        retryable=True,
        exhausted_code=ReasonCode.TIMED_OUT,
        what=f"attempt {event.attempt} timed out after {timeout_s:g}s",
        extra=(stop,),
    )


def _on_lease_expired(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, LeaseExpired)
    current = task_run.current_attempt
    assert current is not None
    error = ErrorInfo(type="LeaseExpired", message=f"worker {current.worker_id} stopped heartbeating")
    attempts = _end_attempt(task_run, AttemptOutcome.LOST, now, error=error)
    return _retry_or_fail(
        task_run,
        attempts,
        now,
        failed_attempt=event.attempt,
        retryable=True,
        exhausted_code=ReasonCode.WORKER_LOST,
        what=f"attempt {event.attempt} lost: {error.message}",
    )


def _on_start_timed_out(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    """FAILED when still PENDING from the wait the timer was armed for; otherwise it no longer applies."""
    assert isinstance(event, StartTimedOut)
    limit = task_run.schedule_to_start_timeout
    if task_run.state is not State.PENDING or task_run.attempt_count != event.attempts or limit is None:
        return _noop(task_run)
    message = (
        f"no worker started it within its schedule-to-start timeout of {limit.total_seconds():g}s"
        f" (handler {task_run.handler!r})"
    )
    return _finish(_ended(task_run, State.FAILED, Reason(ReasonCode.SCHEDULE_TO_START_TIMEOUT, message), now))


def _on_cancel_requested(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, CancelRequested)
    if task_run.state is State.RUNNING:
        if task_run.pending_cancel is not None:
            return _noop(task_run)
        current = task_run.current_attempt
        assert current is not None
        record = dataclasses.replace(task_run, pending_cancel=event.reason, updated_at=_touch(task_run.updated_at, now))
        return Transition(
            record=record,
            effects=(CancelOnWorker(task_run.id, current.number, current.worker_id, event.reason),),
        )
    if task_run.state is State.CANCELLED:
        return _noop(task_run)
    return _finish(_ended(task_run, State.CANCELLED, event.reason, now))


def _on_cancel_settled(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    """CancelAcknowledged or CancelGraceExpired: the cancelled attempt is over either way."""
    assert isinstance(event, CancelAcknowledged | CancelGraceExpired)
    if task_run.pending_cancel is None:
        raise InvalidTransition(
            entity="task run",
            entity_id=task_run.id,
            state=task_run.state,
            event=event_name(event),
            reason="no cancellation is pending for this attempt",
        )
    error = None
    if isinstance(event, CancelGraceExpired):
        error = ErrorInfo(type="CancelNotAcknowledged", message="the worker did not confirm the cancel in time")
    attempts = _end_attempt(task_run, AttemptOutcome.CANCELLED, now, error=error)
    record = _ended(task_run, State.CANCELLED, task_run.pending_cancel, now, attempts=attempts)
    return _finish(record, AttemptEnded(task_run.id, event.attempt))


def _on_progress(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, TaskProgressed)
    # NaN would never compare equal to itself (every replay would apply) and is not JSON: read it as 0.
    fraction = 0.0 if math.isnan(event.fraction) else min(max(event.fraction, 0.0), 1.0)
    progress = Progress(fraction=fraction, message=event.message)
    if task_run.progress == progress:
        return _noop(task_run)
    return Transition(
        record=dataclasses.replace(task_run, progress=progress, updated_at=_touch(task_run.updated_at, now))
    )


def _becomes_eligible(expected: ReasonCode) -> Callable[[TaskRun, object, datetime], Transition[TaskRun]]:
    """RetryDue, ScheduleDue, DependenciesMet: WAITING(expected) → PENDING; a replay on PENDING is a no-op."""

    def apply(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
        if task_run.state is State.PENDING:
            return _noop(task_run)
        assert task_run.reason is not None
        if task_run.reason.code is not expected:
            raise InvalidTransition(
                entity="task run",
                entity_id=task_run.id,
                state=task_run.state,
                event=event_name(event),  # type: ignore[arg-type]
                reason=f"it waits for {task_run.reason.code}; only WAITING({expected}) can become eligible this way",
            )
        record = dataclasses.replace(
            task_run,
            state=State.PENDING,
            reason=None,
            not_before=None,
            updated_at=_touch(task_run.updated_at, now),
        )
        return Transition(record=record, effects=(Enqueue(task_run.id),))

    return apply


def _on_dependencies_failed(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, DependenciesFailed)
    if task_run.state is State.CANCELLED:
        return _noop(task_run)
    assert task_run.reason is not None
    if task_run.reason.code is not ReasonCode.DEPENDENCIES:
        raise InvalidTransition(
            entity="task run",
            entity_id=task_run.id,
            state=task_run.state,
            event="DependenciesFailed",
            reason=f"it waits for {task_run.reason.code}, not for dependencies",
        )
    reason = Reason(ReasonCode.UPSTREAM_FAILED, f"dependency {event.task_id!r} did not succeed")
    return _finish(_ended(task_run, State.CANCELLED, reason, now))


def _rows(
    table: Mapping[tuple[State, type], tuple[frozenset[State], object]],
) -> dict[tuple[State, type], Row]:  # type: ignore[type-arg]
    return {key: Row(targets=targets, apply=apply) for key, (targets, apply) in table.items()}  # type: ignore[arg-type]


_retry_due = _becomes_eligible(ReasonCode.RETRY_BACKOFF)
_schedule_due = _becomes_eligible(ReasonCode.SCHEDULED)
_dependencies_met = _becomes_eligible(ReasonCode.DEPENDENCIES)
_ANY_END = frozenset({W, F, C})

# Every allowed (state, event) pair of a task run and the states it may lead to. A row whose
# only target is its own state either changes the record in place (a pending cancel, progress)
# or, when replayed, is a no-op. Anything missing raises.
TASK_RUN_TRANSITIONS: dict[tuple[State, type], Row[TaskRun]] = _rows(
    {
        (P, TaskDispatched): (frozenset({R}), _on_dispatched),
        (P, CancelRequested): (frozenset({C}), _on_cancel_requested),
        (P, RetryDue): (frozenset({P}), _retry_due),
        (P, ScheduleDue): (frozenset({P}), _schedule_due),
        (P, DependenciesMet): (frozenset({P}), _dependencies_met),
        (P, StartTimedOut): (frozenset({P, F}), _on_start_timed_out),
        (W, StartTimedOut): (frozenset({W}), _on_start_timed_out),
        (R, StartTimedOut): (frozenset({R}), _on_start_timed_out),
        (W, RetryDue): (frozenset({P}), _retry_due),
        (W, ScheduleDue): (frozenset({P}), _schedule_due),
        (W, DependenciesMet): (frozenset({P}), _dependencies_met),
        (W, DependenciesFailed): (frozenset({C}), _on_dependencies_failed),
        (W, CancelRequested): (frozenset({C}), _on_cancel_requested),
        (R, TaskSucceeded): (frozenset({S}), _on_succeeded),
        (R, TaskFailed): (_ANY_END, _on_failed),
        (R, TaskTimedOut): (_ANY_END, _on_timed_out),
        (R, LeaseExpired): (_ANY_END, _on_lease_expired),
        (R, CancelRequested): (frozenset({R}), _on_cancel_requested),
        (R, CancelAcknowledged): (frozenset({C}), _on_cancel_settled),
        (R, CancelGraceExpired): (frozenset({C}), _on_cancel_settled),
        (R, TaskProgressed): (frozenset({R}), _on_progress),
        (C, CancelRequested): (frozenset({C}), _on_cancel_requested),
        (C, DependenciesFailed): (frozenset({C}), _on_dependencies_failed),
    }
)


def _attempt_fence(task_run: TaskRun, event: TaskRunEvent) -> bool:
    """True when an attempt-scoped event is a replay or stale (ignore it); raises when it is from the future."""
    if not isinstance(event, ATTEMPT_EVENTS):
        return False
    count = task_run.attempt_count
    if isinstance(event, TaskDispatched):
        if event.attempt <= count:
            return True
        if event.attempt == count + 1:
            return False
    else:
        current = task_run.current_attempt
        if current is not None and event.attempt <= current.number:
            return event.attempt < current.number or not current.is_running
    error = TerminalStateError if task_run.state.is_terminal else InvalidTransition
    raise error(
        entity="task run",
        entity_id=task_run.id,
        state=task_run.state,
        event=event_name(event),
        reason=f"attempt {event.attempt} does not exist (the task run has {count})",
    )


def _refuse(entity: str, record: TaskRun | Execution, event: TaskRunEvent | ExecutionEvent) -> InvalidTransition:
    error = TerminalStateError if record.state.is_terminal else InvalidTransition
    why = "the record is terminal" if record.state.is_terminal else "not allowed in this state"
    return error(entity=entity, entity_id=record.id, state=record.state, event=event_name(event), reason=why)


def transition_task_run(task_run: TaskRun, event: TaskRunEvent, now: datetime) -> Transition[TaskRun]:
    """Apply one event to a task run at time `now`."""
    if _attempt_fence(task_run, event):
        return _noop(task_run)
    row = TASK_RUN_TRANSITIONS.get((task_run.state, type(event)))
    if row is None:
        raise _refuse("task run", task_run, event)
    result = row.apply(task_run, event, now)
    assert result.record.state in row.targets, (task_run.state, event, result.record.state)
    return result


# ---- Executions ---------------------------------------------------------------------------------

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
        record=dataclasses.replace(execution, state=State.RUNNING, started_at=execution.started_at or at, updated_at=at)
    )


def _on_execution_schedule_due(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
    if execution.state is State.PENDING:
        return _noop(execution)
    record = dataclasses.replace(
        execution, state=State.PENDING, reason=None, updated_at=_touch(execution.updated_at, now)
    )
    return Transition(record=record)


def _close(
    state: State, reason_of: Callable[[object], Reason]
) -> Callable[[Execution, object, datetime], Transition[Execution]]:
    """Cancellation, deadline, task failure: remember the outcome (the planner stops the active task runs)."""

    def apply(execution: Execution, event: object, now: datetime) -> Transition[Execution]:
        if execution.closing is not None or execution.state.is_terminal:
            return _noop(execution)
        closing = Closing(state=state, reason=reason_of(event))
        return Transition(
            record=dataclasses.replace(execution, closing=closing, updated_at=_touch(execution.updated_at, now))
        )

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
    record = dataclasses.replace(execution, state=state, reason=reason, ended_at=at, updated_at=at, closing=None)
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
