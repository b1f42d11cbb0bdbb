"""A task run's transitions: the table of allowed (state, event) rows, the rules, and the fencing of
attempt reports (replays and stale reports change nothing). `transition_task_run(task_run, event, now)`
applies one event."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from taskwire.common import evolve

from ._budget import attempts_used, infrastructure_failure, infrastructure_failures, is_refusal
from ._effects import (
    ArmAttemptTimeout,
    AttemptEnded,
    CancelOnWorker,
    Effect,
    Enqueue,
    ScheduleRetry,
    TaskRunFinished,
)
from ._errors import InvalidTransition, TerminalStateError
from ._events import (
    ATTEMPT_EVENTS,
    CancelAcknowledged,
    CancelGraceExpired,
    CancelRequested,
    DependenciesFailed,
    DependenciesMet,
    KeyFull,
    KeyPlaceFree,
    LeaseExpired,
    RateLimitEmpty,
    RateTokenGranted,
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
    ErrorInfo,
    Progress,
    Reason,
    TaskRun,
)
from ._states import AttemptOutcome, ReasonCode, State
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

#: The longest a remote side's "retry after" is waited (the longest duration a spec may give, as `Limits` has it):
#: a longer one, such as a worker's report of thousands of years, would overflow the retry's time.
MAX_RETRY_AFTER = timedelta(days=3660)


def _ended(task_run: TaskRun, state: State, reason: Reason, now: datetime, **changes: object) -> TaskRun:
    at = _touch(task_run.updated_at, now)
    return evolve(
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
    ended = evolve(
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
        worker_instance=event.worker_instance,
    )
    record = evolve(
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
    last_error = attempts[-1].error
    if last_error is not None and last_error.retry_after is not None:
        # The remote side rate limited the handler: wait as long as it asked, and spend no attempt.
        at = _touch(task_run.updated_at, now)
        wait = min(max(last_error.retry_after, timedelta(0)), MAX_RETRY_AFTER)
        retry_at = at + wait
        after = wait.total_seconds()
        reason = Reason(
            ReasonCode.RETRY_BACKOFF,
            f"{what}; rate limited by the remote side: retry after {after:g}s at {retry_at.isoformat()}"
            " (no attempt spent)",
        )
        record = evolve(
            task_run, state=State.WAITING, reason=reason, updated_at=at, attempts=attempts, not_before=retry_at
        )
        return Transition(record=record, effects=(ended, *extra, ScheduleRetry(task_run.id, retry_at)))
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
    record = evolve(task_run, state=State.WAITING, reason=reason, updated_at=at, attempts=attempts, not_before=retry_at)
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
    error = ErrorInfo(type="LeaseExpired", message=f"worker {current.worker_id} {event.why}")
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


def _waits_for(code: ReasonCode, event_type: type) -> Callable[[TaskRun, object, datetime], Transition[TaskRun]]:
    """KeyFull, RateLimitEmpty: PENDING → WAITING(code) with the event's message; a replay on one already waiting
    for it is a no-op."""

    def apply(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
        assert isinstance(event, event_type)
        if task_run.state is State.WAITING:
            if task_run.reason is not None and task_run.reason.code is code:
                return _noop(task_run)
            raise InvalidTransition(
                entity="task run",
                entity_id=task_run.id,
                state=task_run.state,
                event=event_type.__name__,
                reason=f"it waits for {task_run.reason.code if task_run.reason else 'nothing'}, not {code}",
            )
        record = evolve(
            task_run,
            state=State.WAITING,
            reason=Reason(code, event.message),  # type: ignore[attr-defined]
            updated_at=_touch(task_run.updated_at, now),
        )
        return Transition(record=record)

    return apply


def _on_cancel_requested(task_run: TaskRun, event: object, now: datetime) -> Transition[TaskRun]:
    assert isinstance(event, CancelRequested)
    if task_run.state is State.RUNNING:
        if task_run.pending_cancel is not None:
            return _noop(task_run)
        current = task_run.current_attempt
        assert current is not None
        record = evolve(task_run, pending_cancel=event.reason, updated_at=_touch(task_run.updated_at, now))
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
    return Transition(record=evolve(task_run, progress=progress, updated_at=_touch(task_run.updated_at, now)))


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
        record = evolve(
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


_retry_due = _becomes_eligible(ReasonCode.RETRY_BACKOFF)
_schedule_due = _becomes_eligible(ReasonCode.SCHEDULED)
_dependencies_met = _becomes_eligible(ReasonCode.DEPENDENCIES)
_key_place_free = _becomes_eligible(ReasonCode.CONCURRENCY_LIMIT)
_rate_token_granted = _becomes_eligible(ReasonCode.RATE_LIMITED)
_on_key_full = _waits_for(ReasonCode.CONCURRENCY_LIMIT, KeyFull)
_on_rate_limit_empty = _waits_for(ReasonCode.RATE_LIMITED, RateLimitEmpty)
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
        (P, KeyFull): (frozenset({W}), _on_key_full),
        (W, KeyFull): (frozenset({W}), _on_key_full),
        (W, KeyPlaceFree): (frozenset({P}), _key_place_free),
        (P, KeyPlaceFree): (frozenset({P}), _key_place_free),
        (P, RateLimitEmpty): (frozenset({W}), _on_rate_limit_empty),
        (W, RateLimitEmpty): (frozenset({W}), _on_rate_limit_empty),
        (W, RateTokenGranted): (frozenset({P}), _rate_token_granted),
        (P, RateTokenGranted): (frozenset({P}), _rate_token_granted),
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
