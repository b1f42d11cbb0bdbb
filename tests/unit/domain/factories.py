"""Builders shared by the domain tests: records in every state, events of every type, and an engine loop.

Records are built directly (not by replaying transitions) so that the matrix
tests do not depend on the code they test; their constructors still check every
invariant, so a builder cannot produce an impossible record.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings

from taskwire.server.domain import (
    Attempt,
    AttemptOutcome,
    CancelAcknowledged,
    CancelGraceExpired,
    CancellationRequested,
    CancelRequested,
    Closing,
    DependenciesFailed,
    DependenciesMet,
    Effect,
    ErrorInfo,
    Execution,
    ExecutionEvent,
    ExecutionFailed,
    ExecutionFollowUp,
    ExecutionSettled,
    ExecutionSpec,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimeoutFired,
    KeyFull,
    KeyPlaceFree,
    LeaseExpired,
    Limits,
    Payload,
    RateLimitEmpty,
    RateTokenGranted,
    Reason,
    ReasonCode,
    RetryDue,
    RetryPolicy,
    ScheduleDue,
    StartTimedOut,
    State,
    TaskDispatched,
    TaskFailed,
    TaskProgressed,
    TaskRun,
    TaskRunEvent,
    TaskSucceeded,
    TaskTimedOut,
    Transition,
    create_execution,
    plan_follow_ups,
    transition_execution,
    transition_task_run,
    validate_execution_spec,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


# Deterministic and bounded: the same examples on every run and every machine.
PROPERTY_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)

# Read from the unions, so that a new event type joins the matrices by itself.
TASK_RUN_EVENT_TYPES: tuple[type, ...] = typing.get_args(TaskRunEvent)
EXECUTION_EVENT_TYPES: tuple[type, ...] = typing.get_args(ExecutionEvent)

STATE_ORDER = list(State)

# A valid reason for each state that needs one.
DEFAULT_REASONS: dict[State, ReasonCode] = {
    State.SUCCESS: ReasonCode.COMPLETED,
    State.FAILED: ReasonCode.HANDLER_ERROR,
    State.CANCELLED: ReasonCode.EXECUTION_CANCELLED,
}

CANCEL_REASON = Reason(ReasonCode.EXECUTION_CANCELLED, "the execution was cancelled")
ERROR = ErrorInfo(type="ValueError", message="boom")
OUTPUT = Payload(b'{"ok": true}')


def reason(code: ReasonCode) -> Reason:
    return Reason(code, f"because {code.value.lower()}")


# ---- Records --------------------------------------------------------------------------------------------


def make_attempt(number: int, outcome: AttemptOutcome, *, started: float, task_run_id: str = "tr-1") -> Attempt:
    ended = None if outcome is AttemptOutcome.RUNNING else at(started + 1)
    return Attempt(
        task_run_id=task_run_id,
        number=number,
        worker_id="w-1",
        started_at=at(started),
        outcome=outcome,
        ended_at=ended,
        output=OUTPUT if outcome is AttemptOutcome.SUCCEEDED else None,
        error=ERROR if outcome is AttemptOutcome.FAILED else None,
    )


def make_task_run(
    state: State = State.PENDING,
    *,
    waiting_for: ReasonCode = ReasonCode.DEPENDENCIES,
    pending_cancel: Reason | None = None,
    retry_policy: RetryPolicy | None = None,
    timeout: timedelta | None = None,
    task_run_id: str = "tr-1",
    terminal_reason: ReasonCode | None = None,
    schedule_to_start_timeout: timedelta | None = None,
) -> TaskRun:
    """A task run in `state`, as the state machine would leave it (attempts, timestamps, reason)."""
    fields: dict[str, typing.Any] = {
        "state": state,
        "reason": None,
        "created_at": T0,
        "updated_at": T0,
        "depends_on": (),
    }
    if state is State.WAITING:
        fields["reason"] = reason(waiting_for)
        if waiting_for is ReasonCode.RETRY_BACKOFF:
            fields.update(
                attempts=(make_attempt(1, AttemptOutcome.FAILED, started=1, task_run_id=task_run_id),),
                started_at=at(1),
                updated_at=at(2),
                not_before=at(3),
            )
        elif waiting_for is ReasonCode.SCHEDULED:
            fields["not_before"] = at(60)
        elif waiting_for in (ReasonCode.CONCURRENCY_LIMIT, ReasonCode.RATE_LIMITED):
            pass
        else:
            fields["depends_on"] = ("upstream",)
    elif state is State.RUNNING:
        fields.update(
            attempts=(make_attempt(1, AttemptOutcome.RUNNING, started=1, task_run_id=task_run_id),),
            started_at=at(1),
            updated_at=at(1),
            pending_cancel=pending_cancel,
        )
    elif state.is_terminal:
        outcome = {
            State.SUCCESS: AttemptOutcome.SUCCEEDED,
            State.FAILED: AttemptOutcome.FAILED,
            State.CANCELLED: None,  # cancelled before it was dispatched
        }[state]
        if outcome is not None:
            fields.update(
                attempts=(make_attempt(1, outcome, started=1, task_run_id=task_run_id),),
                started_at=at(1),
            )
        fields.update(
            reason=reason(terminal_reason or DEFAULT_REASONS[state]),
            ended_at=at(2),
            updated_at=at(2),
        )
    return TaskRun(
        id=task_run_id,
        execution_id="ex-1",
        task_id="main",
        handler="tests.handler",
        input=Payload(b'{"n": 1}'),
        timeout=timeout,
        retry_policy=retry_policy or RetryPolicy(),
        schedule_to_start_timeout=schedule_to_start_timeout,
        **fields,
    )


def make_execution(
    state: State = State.PENDING,
    *,
    closing: Closing | None = None,
    terminal_reason: ReasonCode | None = None,
    execution_id: str = "ex-1",
) -> Execution:
    """An execution in `state`, optionally closing."""
    fields: dict[str, typing.Any] = {"reason": None, "updated_at": T0}
    if state is State.WAITING:
        fields.update(reason=reason(ReasonCode.SCHEDULED), not_before=at(60))
    elif state is State.RUNNING:
        fields.update(started_at=at(1), updated_at=at(1))
    elif state.is_terminal:
        code = terminal_reason or {State.CANCELLED: ReasonCode.CANCEL_REQUESTED}.get(state, DEFAULT_REASONS[state])
        fields.update(reason=reason(code), started_at=at(1), ended_at=at(2), updated_at=at(2))
    return Execution(
        id=execution_id,
        name="tests.handler",
        state=state,
        created_at=T0,
        metadata={"team": "tests"},
        closing=closing,
        **fields,
    )


CLOSING_CANCELLED = Closing(State.CANCELLED, Reason(ReasonCode.CANCEL_REQUESTED, "cancellation requested"))


# ---- Events ---------------------------------------------------------------------------------------------


def natural_attempt(event_type: type, record: TaskRun) -> int:
    """The attempt an event of `event_type` would name: the next for a dispatch, else the running one (or next)."""
    current = record.current_attempt
    if event_type is not TaskDispatched and current is not None and current.is_running:
        return current.number
    return record.attempt_count + 1


def make_task_run_event(event_type: type, record: TaskRun, *, attempt: int | None = None) -> TaskRunEvent:
    """An event of `event_type` addressed to `record`.

    Without `attempt`, TaskDispatched names the next attempt, and a report names
    the running attempt, or the next one when none runs (a report about an
    attempt that already ended is a no-op: see the fencing tests).
    """
    number = natural_attempt(event_type, record) if attempt is None else attempt
    builders: dict[type, Callable[[], TaskRunEvent]] = {
        TaskDispatched: lambda: TaskDispatched(attempt=number, worker_id="w-1"),
        TaskSucceeded: lambda: TaskSucceeded(attempt=number, output=OUTPUT),
        TaskFailed: lambda: TaskFailed(attempt=number, error=ERROR),
        TaskTimedOut: lambda: TaskTimedOut(attempt=number),
        LeaseExpired: lambda: LeaseExpired(attempt=number),
        CancelAcknowledged: lambda: CancelAcknowledged(attempt=number),
        CancelGraceExpired: lambda: CancelGraceExpired(attempt=number),
        TaskProgressed: lambda: TaskProgressed(attempt=number, fraction=0.5, message="half way"),
        RetryDue: RetryDue,
        ScheduleDue: ScheduleDue,
        DependenciesMet: DependenciesMet,
        DependenciesFailed: lambda: DependenciesFailed(task_id="upstream"),
        CancelRequested: lambda: CancelRequested(reason=CANCEL_REASON),
        StartTimedOut: lambda: StartTimedOut(attempts=record.attempt_count),
        KeyFull: lambda: KeyFull("concurrency key 'k' is full: 2 of 2 running or queued"),
        KeyPlaceFree: KeyPlaceFree,
        RateLimitEmpty: lambda: RateLimitEmpty("rate limit 'remote-api' is empty"),
        RateTokenGranted: RateTokenGranted,
    }
    return builders[event_type]()


def make_execution_event(event_type: type) -> ExecutionEvent:
    builders: dict[type, Callable[[], ExecutionEvent]] = {
        ExecutionStarted: ExecutionStarted,
        ExecutionSucceeded: ExecutionSucceeded,
        ExecutionFailed: lambda: ExecutionFailed(task_id="a", code=ReasonCode.HANDLER_ERROR, message="boom"),
        CancellationRequested: lambda: CancellationRequested(message="stop please"),
        ExecutionTimeoutFired: ExecutionTimeoutFired,
        ExecutionSettled: ExecutionSettled,
        ScheduleDue: ScheduleDue,
    }
    return builders[event_type]()


# ---- The engine's loop ----------------------------------------------------------------------------------


class FollowUpLoopError(AssertionError):
    """plan_follow_ups kept asking for events: the engine would never settle."""


@dataclass
class Sim:
    """What the engine does with the pure core: apply an event, then follow-ups until none.

    Every effect of every transition is kept in `effects`, in order.
    """

    execution: Execution
    task_runs: dict[str, TaskRun]  # by task_id, in spec order
    now: datetime
    effects: list[Effect] = field(default_factory=list)
    follow_ups_applied: int = 0

    @classmethod
    def start(
        cls, spec: ExecutionSpec, *, now: datetime = T0, execution_id: str = "ex-1", task_run_prefix: str = "tr-"
    ) -> Sim:
        validated = validate_execution_spec(spec, Limits())
        ids = [f"{task_run_prefix}{task.task_id}" for task in validated.tasks]
        execution, task_runs = create_execution(validated, execution_id=execution_id, task_run_ids=ids, now=now)
        sim = cls(execution=execution, task_runs={t.task_id: t for t in task_runs}, now=now)
        sim.settle()
        return sim

    def __getitem__(self, task_id: str) -> TaskRun:
        return self.task_runs[task_id]

    def by_id(self, task_run_id: str) -> TaskRun:
        return next(t for t in self.task_runs.values() if t.id == task_run_id)

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)

    def effects_of(self, kind: type) -> list[Effect]:
        return [effect for effect in self.effects if isinstance(effect, kind)]

    def task(self, task_id: str, event: TaskRunEvent, *, settle: bool = True) -> Transition[TaskRun]:
        result = transition_task_run(self.task_runs[task_id], event, self.now)
        self.task_runs[task_id] = result.record
        self.effects.extend(result.effects)
        if settle:
            self.settle()
        return result

    def exec(self, event: ExecutionEvent, *, settle: bool = True) -> Transition[Execution]:
        result = transition_execution(self.execution, event, self.now)
        self.execution = result.record
        self.effects.extend(result.effects)
        if settle:
            self.settle()
        return result

    def settle(self, limit: int = 200) -> None:
        """Apply follow-ups until none is left. Each follow-up must change something, or the loop never ends."""
        for _ in range(limit):
            follow_ups = plan_follow_ups(self.execution, list(self.task_runs.values()))
            if not follow_ups:
                return
            for follow_up in follow_ups:
                applied: bool
                if isinstance(follow_up, ExecutionFollowUp):
                    applied = self.exec(follow_up.event, settle=False).applied
                else:
                    task_id = self.by_id(follow_up.task_run_id).task_id
                    applied = self.task(task_id, follow_up.event, settle=False).applied
                if not applied:
                    raise FollowUpLoopError(f"follow-up {follow_up} changed nothing")
                self.follow_ups_applied += 1
        raise FollowUpLoopError(f"no fixed point after {limit} rounds of follow-ups")

    # Conveniences for what workers report.

    def dispatch(self, task_id: str, worker_id: str = "w-1") -> Transition[TaskRun]:
        return self.task(task_id, TaskDispatched(attempt=self[task_id].attempt_count + 1, worker_id=worker_id))

    def current(self, task_id: str) -> int:
        attempt = self[task_id].current_attempt
        assert attempt is not None, f"{task_id} has no attempt"
        return attempt.number

    def succeed(self, task_id: str) -> Transition[TaskRun]:
        return self.task(task_id, TaskSucceeded(attempt=self.current(task_id), output=OUTPUT))

    def fail(self, task_id: str, error: ErrorInfo = ERROR) -> Transition[TaskRun]:
        return self.task(task_id, TaskFailed(attempt=self.current(task_id), error=error))

    def states(self) -> dict[str, State]:
        return {task_id: task_run.state for task_id, task_run in self.task_runs.items()}
