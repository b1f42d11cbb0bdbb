"""Invariants under random event sequences: duplicates, reorderings, stale attempts, a clock that goes back."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import datetime, timedelta
from typing import cast

from hypothesis import event as hypothesis_event
from hypothesis import given
from hypothesis import strategies as st

from taskwire.server.domain import (
    ATTEMPT_EVENTS,
    EXECUTION_TRANSITIONS,
    TASK_RUN_TRANSITIONS,
    WAITING_REASONS,
    ArmAttemptTimeout,
    AttemptEnded,
    AttemptOutcome,
    CancelAcknowledged,
    CancelGraceExpired,
    CancellationRequested,
    CancelOnWorker,
    CancelRequested,
    DependenciesFailed,
    Enqueue,
    ErrorInfo,
    Execution,
    ExecutionEvent,
    ExecutionFailed,
    ExecutionFinished,
    ExecutionSpec,
    ExecutionTimeoutFired,
    InvalidTransition,
    LeaseExpired,
    Reason,
    ReasonCode,
    RetryDue,
    RetryPolicy,
    ScheduleDue,
    ScheduleRetry,
    State,
    TaskDispatched,
    TaskFailed,
    TaskProgressed,
    TaskRun,
    TaskRunEvent,
    TaskRunFinished,
    TaskSpec,
    TaskSucceeded,
    TaskTimedOut,
    TerminalStateError,
    attempts_used,
    execution_view,
    infrastructure_failures,
    transition_execution,
    transition_task_run,
)
from tests.unit.domain.factories import (
    EXECUTION_EVENT_TYPES,
    OUTPUT,
    PROPERTY_SETTINGS,
    T0,
    TASK_RUN_EVENT_TYPES,
    Sim,
    at,
    make_execution,
    make_task_run,
    make_task_run_event,
    natural_attempt,
)

P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED

ERRORS = [
    ErrorInfo(type="ValueError", message="boom"),
    ErrorInfo(type="ValueError", message="bad input", retryable=False),
    ErrorInfo(type="KeyError", message="listed as non-retryable"),
]
CANCEL_REASONS = [
    Reason(ReasonCode.EXECUTION_CANCELLED, "cancelled"),
    Reason(ReasonCode.EXECUTION_TIMED_OUT, "deadline"),
    Reason(ReasonCode.UPSTREAM_FAILED, "upstream failed"),
]
CANCELLED_TASK_REASONS = {reason.code for reason in CANCEL_REASONS}
# Mostly the attempt the event would naturally name; sometimes an older or a future one.
ATTEMPT_OFFSETS = st.sampled_from([-2, -1, 0, 0, 0, 0, 1, 2])
# Seconds between events; negative: the caller's clock went back.
CLOCK_STEPS = st.integers(-20, 40)


# ---- Checks --------------------------------------------------------------------------------------------


def check_task_run(record: TaskRun) -> None:
    """What must hold of every task run, however it was reached."""
    attempts = record.attempts
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    assert attempts_used(attempts) <= max(record.retry_policy.max_attempts, 1)
    assert infrastructure_failures(attempts) <= record.retry_policy.max_infrastructure_retries + 1
    assert (record.started_at is not None) == bool(attempts)
    if attempts:
        assert record.started_at == attempts[0].started_at
    for earlier, later in itertools.pairwise(attempts):
        assert earlier.ended_at is not None
        assert earlier.ended_at <= later.started_at
    for attempt in attempts:
        assert record.created_at <= attempt.started_at
        assert attempt.ended_at is None or attempt.ended_at <= record.updated_at
    if record.state is W:
        assert record.reason is not None
        assert record.reason.code in WAITING_REASONS
        if record.reason.code is ReasonCode.RETRY_BACKOFF:
            assert record.not_before is not None
            assert attempts
            assert not attempts[-1].is_running
    if record.state is R:
        assert attempts
        assert attempts[-1].is_running
    stamps = [t for t in (record.created_at, record.started_at, record.ended_at) if t is not None]
    assert stamps == sorted(stamps)
    assert record.updated_at >= stamps[-1]
    if record.state.is_terminal:
        assert record.ended_at == record.updated_at
        assert record.not_before is None
    if record.state is S:
        assert attempts[-1].outcome is AttemptOutcome.SUCCEEDED
    if record.state is C:
        assert record.reason is not None
        assert record.reason.code in CANCELLED_TASK_REASONS


def check_task_run_step(before: TaskRun, event: TaskRunEvent, now: datetime, after: TaskRun) -> None:
    """What must hold of one applied change."""
    assert after.state in TASK_RUN_TRANSITIONS[(before.state, type(event))].targets
    assert not before.state.is_terminal, "a terminal task run never changes"
    assert after != before
    assert after.created_at == before.created_at
    assert after.updated_at == max(before.updated_at, now), "updated on every change, never backwards"
    if before.started_at is not None:
        assert after.started_at == before.started_at, "started_at is set once"
    elif after.started_at is not None:
        assert after.started_at == after.updated_at, "started_at is the first dispatch"
    if after.state.is_terminal:
        assert after.ended_at == after.updated_at
    # Attempts are append-only; only the running one may end.
    assert after.attempts[: before.attempt_count - 1] == before.attempts[: before.attempt_count - 1]
    assert after.attempt_count in (before.attempt_count, before.attempt_count + 1)
    assert (after.attempt_count > before.attempt_count) == isinstance(event, TaskDispatched)


def check_task_run_effects(before: TaskRun, after: TaskRun, effects: tuple[object, ...]) -> None:
    kinds = [type(effect) for effect in effects]
    assert all(getattr(effect, "task_run_id", after.id) == after.id for effect in effects)
    became_terminal = after.state.is_terminal and not before.state.is_terminal
    assert (TaskRunFinished in kinds) == became_terminal
    if became_terminal:
        assert effects[-1] == TaskRunFinished(after.id, after.execution_id, after.state)
    assert (Enqueue in kinds) == (after.state is P and before.state is not P)
    retrying = before.state is R and after.state is W
    assert (ScheduleRetry in kinds) == retrying
    if retrying:
        assert ScheduleRetry(after.id, after.not_before) in effects  # type: ignore[arg-type]
    old = before.current_attempt
    ended = old is not None and old.is_running and not after.attempts[old.number - 1].is_running
    assert (AttemptEnded in kinds) == ended
    if ended:
        assert old is not None
        assert AttemptEnded(after.id, old.number) in effects
    dispatched = after.attempt_count > before.attempt_count
    assert (ArmAttemptTimeout in kinds) == (dispatched and after.timeout is not None)
    for effect in effects:
        if isinstance(effect, ArmAttemptTimeout):
            assert after.timeout is not None
            assert effect.at == after.attempts[-1].started_at + after.timeout
        if isinstance(effect, CancelOnWorker):
            assert old is not None
            assert (effect.attempt, effect.worker_id) == (old.number, old.worker_id)


def check_refused(error: InvalidTransition, record: TaskRun | Execution) -> None:
    assert error.entity_id == record.id
    assert error.state == record.state
    assert isinstance(error, TerminalStateError) == record.state.is_terminal


# ---- One task run ----------------------------------------------------------------------------------------


# One draw per event (a tuple), which keeps long walks fast: source, choice, attempt offset, detail.
EVENT_CHOICES = st.tuples(
    st.sampled_from(["allowed", "allowed", "allowed", "any", "replay"]),
    st.integers(0, 59),
    ATTEMPT_OFFSETS,
    st.integers(0, 2),
    st.floats() | st.sampled_from([0.0, 0.5, 1.0]),
)


def draw_task_run_event(data: st.DataObject, record: TaskRun, history: list[TaskRunEvent]) -> TaskRunEvent:
    source, choice, offset, detail, fraction = data.draw(EVENT_CHOICES, label="event")
    if source == "replay" and history:
        return history[choice % len(history)]
    # Events that move the record on are more likely than those that stop it or change nothing.
    allowed = [
        event_type
        for (state, event_type), row in TASK_RUN_TRANSITIONS.items()
        if state is record.state
        for _ in range(1 if event_type in (CancelRequested, DependenciesFailed) or row.targets == {state} else 4)
    ]
    choices = allowed if source == "allowed" and allowed else list(TASK_RUN_EVENT_TYPES)
    event_type = choices[choice % len(choices)]
    attempt = max(1, natural_attempt(event_type, record) + offset)
    if event_type is TaskFailed:
        return TaskFailed(attempt=attempt, error=ERRORS[detail])
    if event_type is TaskProgressed:
        return TaskProgressed(attempt=attempt, fraction=fraction, message=["", "half", "done"][detail])
    if event_type is CancelRequested:
        return CancelRequested(CANCEL_REASONS[detail])
    if event_type is DependenciesFailed:
        return DependenciesFailed(task_id="upstream")
    return make_task_run_event(event_type, record, attempt=attempt)


@PROPERTY_SETTINGS
@given(
    data=st.data(),
    start=st.sampled_from([(P, ReasonCode.DEPENDENCIES), (W, ReasonCode.DEPENDENCIES), (W, ReasonCode.SCHEDULED)]),
    max_attempts=st.integers(1, 4),
    timeout=st.sampled_from([None, timedelta(seconds=30)]),
    steps=st.integers(1, 40),
)
def test_random_events_on_a_task_run(
    data: st.DataObject,
    start: tuple[State, ReasonCode],
    max_attempts: int,
    timeout: timedelta | None,
    steps: int,
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, non_retryable_error_types=("KeyError",))
    record = make_task_run(start[0], waiting_for=start[1], retry_policy=policy, timeout=timeout)
    now = T0
    history: list[TaskRunEvent] = []
    for _ in range(steps):
        now += timedelta(seconds=data.draw(CLOCK_STEPS, label="clock step"))
        event = draw_task_run_event(data, record, history)
        try:
            result = transition_task_run(record, event, now)
        except InvalidTransition as error:
            # Nothing to undo: a task run is immutable all the way down (test_task_runs_are_deeply_immutable).
            check_refused(error, record)
            continue
        history.append(event)
        if not result.applied:
            assert result.record is record
            assert result.effects == ()
            continue
        check_task_run_step(record, event, now, result.record)
        check_task_run_effects(record, result.record, result.effects)
        check_task_run(result.record)
        # Replayed at once, or later, an event that applied is a no-op.
        for replay_at in (now, now + timedelta(hours=1), now - timedelta(hours=1)):
            again = transition_task_run(result.record, event, replay_at)
            assert not again.applied
            assert again.effects == ()
            assert again.record is result.record
        record = result.record
    hypothesis_event(f"ends {record.state} after {record.attempt_count} attempts")


def test_task_runs_are_deeply_immutable() -> None:
    """Every part of a task run is frozen or a tuple, so the record hashes: no transition can alter it in place."""
    record = make_task_run(R, pending_cancel=CANCEL_REASONS[0], timeout=timedelta(seconds=30))
    record = transition_task_run(record, TaskProgressed(attempt=1, fraction=0.3, message="m"), at(5)).record
    assert isinstance(hash(record), int)


# ---- One execution on its own ----------------------------------------------------------------------------


FAILURE_CODES = [ReasonCode.HANDLER_ERROR, ReasonCode.TIMED_OUT, ReasonCode.LEASE_EXPIRED]
EXECUTION_STEPS = st.tuples(CLOCK_STEPS, st.sampled_from(EXECUTION_EVENT_TYPES), st.integers(0, 2))


def execution_event(event_type: type, detail: int) -> ExecutionEvent:
    if event_type is ExecutionFailed:
        return ExecutionFailed(task_id="a", code=FAILURE_CODES[detail], message="boom")
    if event_type is CancellationRequested:
        return CancellationRequested(message=["", "stop", "stop now"][detail])
    event: ExecutionEvent = event_type()
    return event


@PROPERTY_SETTINGS
@given(data=st.data(), start=st.sampled_from([P, W, R]), steps=st.integers(1, 25))
def test_random_events_on_an_execution(data: st.DataObject, start: State, steps: int) -> None:
    record = make_execution(start)
    now = T0
    for _ in range(steps):
        clock, event_type, detail = data.draw(EXECUTION_STEPS, label="step")
        now += timedelta(seconds=clock)
        event = execution_event(event_type, detail)
        snapshot = copy.deepcopy(record)
        try:
            result = transition_execution(record, event, now)
        except InvalidTransition as error:
            check_refused(error, record)
            assert record == snapshot
            continue
        after = result.record
        if not result.applied:
            assert after is record
            assert result.effects == ()
            continue
        assert not record.state.is_terminal, "a terminal execution never changes"
        assert after.state in EXECUTION_TRANSITIONS[(record.state, type(event))].targets
        assert after.updated_at == max(record.updated_at, now)
        assert after.created_at == record.created_at
        if record.started_at is not None:
            assert after.started_at == record.started_at
        if record.closing is not None and not after.state.is_terminal:
            assert after.closing == record.closing, "the first cause wins"
        became_terminal = after.state.is_terminal
        assert (ExecutionFinished(after.id, after.state) in result.effects) == became_terminal
        if became_terminal:
            assert after.ended_at == after.updated_at
            assert after.closing is None
            if record.closing is not None and after.state is not S:
                assert (after.state, after.reason) == (record.closing.state, record.closing.reason)
        if record.closing is None and after.closing is not None:
            assert result.effects == (), "the planner stops the active task runs, not an effect"
        again = transition_execution(after, event, now)
        assert not again.applied
        assert again.effects == ()
        record = after
    hypothesis_event(f"ends {record.state}")


# ---- Whole executions through the engine's loop ----------------------------------------------------------


@st.composite
def execution_specs(draw: st.DrawFn) -> ExecutionSpec:
    count = draw(st.integers(1, 5), label="tasks")
    tasks: list[TaskSpec] = []
    for i in range(count):
        earlier = [f"t{j}" for j in range(i)]
        depends_on = sorted(draw(st.sets(st.sampled_from(earlier), max_size=2))) if earlier else []
        tasks.append(
            TaskSpec(
                handler="tests.handler",
                task_id=f"t{i}",
                depends_on=tuple(depends_on),
                timeout=draw(st.sampled_from([None, timedelta(seconds=30)])),
                retry_policy=RetryPolicy(max_attempts=draw(st.integers(1, 3)), non_retryable_error_types=("KeyError",)),
            )
        )
    return ExecutionSpec(
        tasks=tuple(tasks),
        not_before=draw(st.sampled_from([None, at(30)]), label="not_before"),
        timeout=draw(st.sampled_from([None, timedelta(minutes=10)]), label="timeout"),
    )


def check_execution(sim: Sim) -> None:
    execution = sim.execution
    task_runs = list(sim.task_runs.values())
    for task_run in task_runs:
        check_task_run(task_run)
        if task_run.attempts or task_run.state in (P, R, S):
            assert all(sim[d].state is S for d in task_run.depends_on), "dependencies come first"
    stamps = [t for t in (execution.created_at, execution.started_at, execution.ended_at) if t is not None]
    assert stamps == sorted(stamps)
    assert execution.updated_at >= stamps[-1]
    assert (execution.started_at is not None) == any(t.attempts for t in task_runs)
    if execution.state is W:
        assert all(t.state in (W, C) and not t.attempts for t in task_runs)
    if all(t.state.is_terminal for t in task_runs):
        assert execution.state.is_terminal, "nothing is active: the execution has its outcome"
    if any(t.state in (F, C) for t in task_runs):
        assert execution.closing is not None or execution.state in (F, C)
    if execution.state.is_terminal:
        assert not any(t.state.is_active for t in task_runs)
        assert execution.reason is not None
        if execution.state is S:
            assert all(t.state is S for t in task_runs)
        elif execution.state is C:
            assert execution.reason.code is ReasonCode.CANCEL_REQUESTED
        else:
            failed = {t.reason.code for t in task_runs if t.state is F and t.reason is not None}
            assert execution.reason.code in failed | {ReasonCode.EXECUTION_TIMED_OUT}


def check_view(sim: Sim) -> None:
    """Whatever happened, the JSON view is strict JSON (no NaN) and survives a round trip."""
    view = execution_view(sim.execution, list(sim.task_runs.values()))
    assert json.loads(json.dumps(view, allow_nan=False)) == view


ACTIONS = [*["dispatch"] * 3, *["report"] * 4, "retry", "retry", "schedule", "cancel", "deadline", "junk", "junk"]
REPORTS = [
    TaskSucceeded,
    TaskFailed,
    TaskTimedOut,
    LeaseExpired,
    TaskProgressed,
    CancelAcknowledged,
    CancelGraceExpired,
]
# One step of the world in one draw: clock step, replay?, action, which task, which event, offset, error.
WORLD_STEPS = st.tuples(
    CLOCK_STEPS,
    st.integers(0, 3),
    st.sampled_from(ACTIONS),
    st.integers(0, 59),
    st.integers(0, 59),
    ATTEMPT_OFFSETS,
    st.sampled_from(ERRORS),
)


def external_event(
    sim: Sim, action: str, pick: int, detail: int, offset: int, error: ErrorInfo
) -> tuple[str | None, TaskRunEvent | ExecutionEvent] | None:
    """What the world might send next: (task_id, event), or (None, event) for the execution."""
    runs = sim.task_runs
    in_state = {state: [task_id for task_id, t in runs.items() if t.state is state] for state in State}
    if action == "dispatch" and in_state[P]:
        task_id = in_state[P][pick % len(in_state[P])]
        return task_id, TaskDispatched(attempt=runs[task_id].attempt_count + 1, worker_id=f"w-{detail % 2}")
    if action == "report" and in_state[R]:
        task_id = in_state[R][pick % len(in_state[R])]
        event_type = REPORTS[detail % len(REPORTS)]
        if event_type is TaskFailed:
            return task_id, TaskFailed(attempt=sim.current(task_id), error=error)
        return task_id, make_task_run_event(event_type, runs[task_id], attempt=sim.current(task_id))
    if action == "retry":
        backoff = [i for i in in_state[W] if (r := runs[i].reason) and r.code is ReasonCode.RETRY_BACKOFF]
        if backoff:
            return backoff[pick % len(backoff)], RetryDue()
    if action == "schedule" and sim.execution.state is W:
        return None, ScheduleDue()
    if action == "cancel":
        return None, CancellationRequested(message="stop")
    if action == "deadline" and sim.execution.deadline is not None:
        return None, ExecutionTimeoutFired()
    if action == "junk":
        # A late, early or misaddressed worker report or timer. CancelRequested, DependenciesMet/Failed and a
        # task run's ScheduleDue are not sent from outside: only plan_follow_ups asks for them.
        task_ids = sorted(runs)
        task_id = task_ids[pick % len(task_ids)]
        junk_types = [*ATTEMPT_EVENTS, RetryDue]
        event_type = junk_types[detail % len(junk_types)]
        attempt = max(1, natural_attempt(event_type, runs[task_id]) + offset)
        return task_id, make_task_run_event(event_type, runs[task_id], attempt=attempt)
    return None


def apply(sim: Sim, target: str | None, event: TaskRunEvent | ExecutionEvent) -> bool:
    """Apply one event from outside, then the follow-ups. False when it was refused (and nothing changed)."""
    before = (sim.execution, dict(sim.task_runs), len(sim.effects))
    refused: InvalidTransition | None = None
    try:
        if target is None:
            execution_event = cast(ExecutionEvent, event)
            result_e = sim.exec(execution_event, settle=False)
            replay_e = transition_execution(result_e.record, execution_event, sim.now)
            assert not replay_e.applied, "an event replayed at once is a no-op"
        else:
            task_run_event = cast(TaskRunEvent, event)
            result_t = sim.task(target, task_run_event, settle=False)
            replay_t = transition_task_run(result_t.record, task_run_event, sim.now)
            assert not replay_t.applied, "an event replayed at once is a no-op"
    except InvalidTransition as error:
        refused = error
    if refused is not None:
        assert (sim.execution, sim.task_runs, len(sim.effects)) == before
        assert refused.entity_id in {sim.execution.id, *(t.id for t in sim.task_runs.values())}
        return False
    sim.settle()
    return True


def drain(sim: Sim) -> None:
    """Let every worker answer and every timer fire, until the execution has its outcome."""
    for _ in range(100):
        if sim.execution.state.is_terminal:
            return
        if sim.execution.state is W:
            apply(sim, None, ScheduleDue())
            continue
        for task_id, task_run in sim.task_runs.items():
            if task_run.state is W and task_run.reason and task_run.reason.code is ReasonCode.RETRY_BACKOFF:
                assert apply(sim, task_id, RetryDue())
                break
            if task_run.state is P:
                assert apply(sim, task_id, TaskDispatched(attempt=task_run.attempt_count + 1, worker_id="w-1"))
                break
            if task_run.state is R:
                attempt = sim.current(task_id)
                done = CancelAcknowledged(attempt) if task_run.pending_cancel else TaskSucceeded(attempt, OUTPUT)
                assert apply(sim, task_id, done)
                break
        else:
            raise AssertionError(f"stuck: {sim.execution.state}, {sim.states()}")
        check_execution(sim)
    raise AssertionError("the execution did not finish")


@PROPERTY_SETTINGS
@given(data=st.data(), spec=execution_specs(), steps=st.integers(0, 30))
def test_random_executions_through_the_engine_loop(data: st.DataObject, spec: ExecutionSpec, steps: int) -> None:
    sim = Sim.start(spec)
    check_execution(sim)
    finished: dict[str, TaskRun] = {}
    ended: Execution | None = None
    history: list[tuple[str | None, TaskRunEvent | ExecutionEvent]] = []
    for _ in range(steps):
        clock, replay, action, pick, detail, offset, error = data.draw(WORLD_STEPS, label="step")
        sim.tick(clock)
        if history and replay == 0:
            target, event = history[pick % len(history)]
        else:
            drawn = external_event(sim, action, pick, detail, offset, error)
            if drawn is None:
                continue
            target, event = drawn
        if apply(sim, target, event):
            history.append((target, event))
        check_execution(sim)
        for task_id, task_run in sim.task_runs.items():
            if task_id in finished:
                assert task_run == finished[task_id], "a terminal task run never changes"
            elif task_run.state.is_terminal:
                finished[task_id] = task_run
        if ended is not None:
            assert sim.execution == ended, "a terminal execution never changes"
        elif sim.execution.state.is_terminal:
            ended = sim.execution
    check_view(sim)
    hypothesis_event(f"before draining: {sim.execution.state}")
    drain(sim)
    check_execution(sim)
    check_view(sim)
    hypothesis_event(
        f"after draining: {sim.execution.state}, reason {sim.execution.reason and sim.execution.reason.code}"
    )
