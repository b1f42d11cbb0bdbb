"""Records for the store tests: plain factories for examples, hypothesis strategies for round-trips."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from taskwire.server.domain import (
    TERMINAL_REASONS,
    TERMINAL_STATES,
    WAITING_REASONS,
    Attempt,
    AttemptOutcome,
    Closing,
    ErrorInfo,
    Execution,
    Payload,
    Progress,
    Reason,
    ReasonCode,
    RetryPolicy,
    State,
    TaskRun,
)
from taskwire.server.store import EventRecord, NewExecution, WriteBatch

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
_ids = itertools.count(1)


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):06d}"


# --------------------------------------------------------------------------- factories


def pending_execution(
    *,
    execution_id: str | None = None,
    handlers: Sequence[str] = ("tests:echo",),
    key: str = "",
    at: datetime = T0,
    fingerprint: str = "fingerprint",
) -> NewExecution:
    """A new PENDING execution with one PENDING task run per handler, as Submit makes it."""
    execution_id = execution_id or fresh_id("exe")
    execution = Execution(
        id=execution_id,
        name=f"run {handlers[0]}",
        state=State.PENDING,
        reason=None,
        created_at=at,
        updated_at=at,
        metadata={"team": "store"},
        idempotency_key=key,
    )
    task_runs = [
        TaskRun(
            id=f"{execution_id}-task-{position}",
            execution_id=execution_id,
            task_id=f"t{position}",
            handler=handler,
            input=Payload(b'{"n": %d}' % position),
            depends_on=(),
            timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(max_attempts=3),
            state=State.PENDING,
            reason=None,
            created_at=at,
            updated_at=at,
        )
        for position, handler in enumerate(handlers)
    ]
    return NewExecution(execution, task_runs, fingerprint)


def submit_batch(new: NewExecution) -> WriteBatch:
    """What the engine writes for a Submit: the records and the first event."""
    return WriteBatch(new_executions=[new], events=[event(new.execution.id, 1)])


def event(execution_id: str, sequence: int, *, kind: str = "execution_transition") -> EventRecord:
    return EventRecord(execution_id, sequence, T0 + timedelta(seconds=sequence), kind, b"\x00body-%d" % sequence)


def running(task_run: TaskRun, at: datetime, *, worker_id: str = "worker-1") -> TaskRun:
    attempt = Attempt(task_run.id, task_run.attempt_count + 1, worker_id, at)
    return replace(
        task_run,
        state=State.RUNNING,
        started_at=task_run.started_at or at,
        updated_at=at,
        attempts=(*task_run.attempts, attempt),
    )


def succeeded(task_run: TaskRun, at: datetime) -> TaskRun:
    assert task_run.current_attempt is not None
    attempt = replace(
        task_run.current_attempt, outcome=AttemptOutcome.SUCCEEDED, ended_at=at, output=Payload(b"\xff\x00", "raw")
    )
    return replace(
        task_run,
        state=State.SUCCESS,
        reason=Reason(ReasonCode.COMPLETED, "done"),
        ended_at=at,
        updated_at=at,
        attempts=(*task_run.attempts[:-1], attempt),
        progress=Progress(1.0, "all done"),
    )


def execution_succeeded(execution: Execution, at: datetime) -> Execution:
    return replace(
        execution,
        state=State.SUCCESS,
        reason=Reason(ReasonCode.COMPLETED, "every task succeeded"),
        started_at=execution.started_at or at,
        ended_at=at,
        updated_at=at,
    )


def execution_running(execution: Execution, at: datetime) -> Execution:
    return replace(execution, state=State.RUNNING, started_at=at, updated_at=at)


# --------------------------------------------------------------------------- strategies

texts = st.text(max_size=12)  # any code point but surrogates, NUL included
record_ids = st.text(min_size=1, max_size=12)
utc_datetimes = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
# Every duration that fits the store: 64-bit microseconds, about ±292,000 years.
storable_timedeltas = st.timedeltas(min_value=timedelta(days=-106_000_000), max_value=timedelta(days=106_000_000))
finite_floats = st.floats(allow_nan=False)


_gaps = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))


def reasons(codes: Sequence[ReasonCode] = tuple(ReasonCode)) -> st.SearchStrategy[Reason]:
    return st.builds(Reason, st.sampled_from(sorted(codes)), st.text(min_size=1, max_size=12))


# Built once: strategies made inside a draw are slow to validate.
_reasons_for: dict[State, st.SearchStrategy[Reason | None]] = {
    state: (
        reasons(sorted(WAITING_REASONS))
        if state is State.WAITING
        else reasons(sorted(TERMINAL_REASONS[state]))
        if state.is_terminal
        else st.none() | reasons()
    )
    for state in State
}


def reason_for(state: State) -> st.SearchStrategy[Reason | None]:
    return _reasons_for[state]


payloads = st.builds(Payload, st.binary(max_size=40), texts)
error_infos = st.builds(ErrorInfo, texts, texts, st.booleans(), texts, st.none() | storable_timedeltas)
progresses = st.builds(Progress, finite_floats, texts)
retry_policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(0, 100),
    initial_interval=storable_timedeltas,
    backoff_coefficient=finite_floats,
    maximum_interval=st.none() | storable_timedeltas,
    non_retryable_error_types=st.lists(texts, max_size=3).map(tuple),
)


@st.composite
def closings(draw: st.DrawFn) -> Closing:
    state = draw(st.sampled_from(sorted(TERMINAL_STATES)))
    reason = draw(reason_for(state))
    assert reason is not None
    return Closing(state, reason)


_maybe_payloads = st.none() | payloads
_maybe_error_infos = st.none() | error_infos
_maybe_timedeltas = st.none() | storable_timedeltas
_maybe_datetimes = st.none() | utc_datetimes
_maybe_reasons = st.none() | reasons()
_maybe_progresses = st.none() | progresses
_text_tuples = st.lists(texts, max_size=3).map(tuple)
_metadata = st.dictionaries(texts, texts, max_size=3)
_attempt_counts = st.integers(0, 3)
_states = st.sampled_from(State)
_ended_outcomes = st.sampled_from([o for o in AttemptOutcome if o is not AttemptOutcome.RUNNING])
_closings = closings()


@st.composite
def attempts(
    draw: st.DrawFn, task_run_id: str | None = None, number: int | None = None, *, running: bool = False
) -> Attempt:
    started_at = draw(utc_datetimes)
    if running:
        outcome, ended_at = AttemptOutcome.RUNNING, None
    else:
        outcome = draw(_ended_outcomes)
        ended_at = started_at + draw(_gaps)
    return Attempt(
        task_run_id=task_run_id if task_run_id is not None else draw(record_ids),
        number=number if number is not None else draw(st.integers(1, 1000)),
        worker_id=draw(texts),
        started_at=started_at,
        outcome=outcome,
        ended_at=ended_at,
        output=draw(_maybe_payloads),
        error=draw(_maybe_error_infos),
    )


@st.composite
def _timestamps(draw: st.DrawFn, *, terminal: bool) -> tuple[datetime, datetime | None, datetime | None, datetime]:
    """created_at, started_at, ended_at, updated_at in an order the records accept."""
    created_at = draw(utc_datetimes)
    started_at = None if draw(st.booleans()) else created_at + draw(_gaps)
    ended_at = (started_at or created_at) + draw(_gaps) if terminal else None
    updated_at = (ended_at or started_at or created_at) + draw(_gaps)
    return created_at, started_at, ended_at, updated_at


@st.composite
def task_runs(draw: st.DrawFn, execution_id: str | None = None, task_run_id: str | None = None) -> TaskRun:
    state = draw(_states)
    task_run_id = task_run_id if task_run_id is not None else draw(record_ids)
    created_at, started_at, ended_at, updated_at = draw(_timestamps(terminal=state.is_terminal))
    ended = [draw(attempts(task_run_id, number, running=False)) for number in range(1, draw(_attempt_counts) + 1)]
    if state is State.RUNNING:
        ended.append(draw(attempts(task_run_id, len(ended) + 1, running=True)))
    return TaskRun(
        id=task_run_id,
        execution_id=execution_id if execution_id is not None else draw(record_ids),
        task_id=draw(texts),
        handler=draw(texts),
        input=draw(payloads),
        depends_on=draw(_text_tuples),
        timeout=draw(_maybe_timedeltas),
        retry_policy=draw(retry_policies),
        state=state,
        reason=draw(reason_for(state)),
        created_at=created_at,
        updated_at=updated_at,
        started_at=started_at,
        ended_at=ended_at,
        attempts=tuple(ended),
        not_before=draw(_maybe_datetimes),
        pending_cancel=draw(_maybe_reasons) if state is State.RUNNING else None,
        progress=draw(_maybe_progresses),
    )


@st.composite
def executions(draw: st.DrawFn, execution_id: str | None = None) -> Execution:
    state = draw(_states)
    created_at, started_at, ended_at, updated_at = draw(_timestamps(terminal=state.is_terminal))
    return Execution(
        id=execution_id if execution_id is not None else draw(record_ids),
        name=draw(texts),
        state=state,
        reason=draw(reason_for(state)),
        created_at=created_at,
        updated_at=updated_at,
        metadata=draw(_metadata),
        deadline=draw(_maybe_datetimes),
        not_before=draw(_maybe_datetimes),
        idempotency_key=draw(texts),
        started_at=started_at,
        ended_at=ended_at,
        closing=None if state.is_terminal or draw(st.booleans()) else draw(_closings),
    )


events = st.builds(EventRecord, record_ids, st.integers(1, 2**63 - 1), utc_datetimes, texts, st.binary(max_size=40))
