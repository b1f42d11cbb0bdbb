"""Every (execution state × event type) pair: allowed pairs reach a documented target, others are refused."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import pytest

from taskwire.server.domain import (
    EXECUTION_TRANSITIONS,
    CancellationRequested,
    Closing,
    Execution,
    ExecutionFailed,
    ExecutionFinished,
    ExecutionSettled,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimeoutFired,
    InvalidTransition,
    Reason,
    ReasonCode,
    ScheduleDue,
    State,
    propagated_reason,
    transition_execution,
)
from tests.unit.domain.factories import (
    CLOSING_CANCELLED,
    EXECUTION_EVENT_TYPES,
    at,
    make_execution,
    make_execution_event,
)
from tests.unit.domain.matrix import (
    GUARDED,
    Guarded,
    Outcome,
    check_expectations_match,
    check_outcome,
    check_refusal,
)

P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED

VARIANTS: dict[str, Callable[[], Execution]] = {
    "PENDING": lambda: make_execution(P),
    "PENDING+closing": lambda: make_execution(P, closing=CLOSING_CANCELLED),
    "WAITING(SCHEDULED)": lambda: make_execution(W),
    "WAITING+closing": lambda: make_execution(W, closing=CLOSING_CANCELLED),
    "RUNNING": lambda: make_execution(R),
    "RUNNING+closing": lambda: make_execution(R, closing=CLOSING_CANCELLED),
    "SUCCESS": lambda: make_execution(S),
    "FAILED": lambda: make_execution(F),
    "CANCELLED": lambda: make_execution(C),
}


# Closing: the outcome is remembered; the planner's follow-ups stop the active task runs.
_CLOSING_EVENTS = (CancellationRequested, ExecutionTimeoutFired, ExecutionFailed)


def _closes(state: State) -> Outcome:
    return Outcome(state)


def _noop(state: State) -> Outcome:
    return Outcome(state, applied=False)


FINISHED = (ExecutionFinished,)

# Written independently of EXECUTION_TRANSITIONS; test_expectations_match_the_table keeps them in step.
EXPECTED: dict[tuple[str, type], Outcome | Guarded] = {
    ("PENDING", ExecutionStarted): Outcome(R),
    ("PENDING", ScheduleDue): _noop(P),
    ("PENDING", CancellationRequested): _closes(P),
    ("PENDING", ExecutionTimeoutFired): _closes(P),
    ("PENDING", ExecutionFailed): _closes(P),
    ("PENDING", ExecutionSettled): GUARDED,
    ("PENDING+closing", ExecutionStarted): Outcome(R),
    ("PENDING+closing", ScheduleDue): _noop(P),
    ("PENDING+closing", CancellationRequested): _noop(P),
    ("PENDING+closing", ExecutionTimeoutFired): _noop(P),
    ("PENDING+closing", ExecutionFailed): _noop(P),
    ("PENDING+closing", ExecutionSettled): Outcome(C, effects=FINISHED),
    ("WAITING(SCHEDULED)", ScheduleDue): Outcome(P),
    ("WAITING(SCHEDULED)", CancellationRequested): _closes(W),
    ("WAITING(SCHEDULED)", ExecutionTimeoutFired): _closes(W),
    ("WAITING(SCHEDULED)", ExecutionFailed): _closes(W),
    ("WAITING(SCHEDULED)", ExecutionSettled): GUARDED,
    ("WAITING+closing", ScheduleDue): Outcome(P),
    ("WAITING+closing", CancellationRequested): _noop(W),
    ("WAITING+closing", ExecutionTimeoutFired): _noop(W),
    ("WAITING+closing", ExecutionFailed): _noop(W),
    ("WAITING+closing", ExecutionSettled): Outcome(C, effects=FINISHED),
    ("RUNNING", ExecutionStarted): _noop(R),
    ("RUNNING", ExecutionSucceeded): Outcome(S, effects=FINISHED),
    ("RUNNING", CancellationRequested): _closes(R),
    ("RUNNING", ExecutionTimeoutFired): _closes(R),
    ("RUNNING", ExecutionFailed): _closes(R),
    ("RUNNING", ExecutionSettled): GUARDED,
    ("RUNNING+closing", ExecutionStarted): _noop(R),
    ("RUNNING+closing", ExecutionSucceeded): Outcome(S, effects=FINISHED),
    ("RUNNING+closing", CancellationRequested): _noop(R),
    ("RUNNING+closing", ExecutionTimeoutFired): _noop(R),
    ("RUNNING+closing", ExecutionFailed): _noop(R),
    ("RUNNING+closing", ExecutionSettled): Outcome(C, effects=FINISHED),
    # Cancelling a finished execution is an accepted no-op; a replayed outcome too.
    ("SUCCESS", ExecutionSucceeded): _noop(S),
    ("SUCCESS", CancellationRequested): _noop(S),
    ("FAILED", CancellationRequested): _noop(F),
    ("FAILED", ExecutionSettled): _noop(F),
    ("CANCELLED", CancellationRequested): _noop(C),
    ("CANCELLED", ExecutionSettled): _noop(C),
}

MATRIX = list(product(VARIANTS, EXECUTION_EVENT_TYPES))


def test_the_matrix_is_complete() -> None:
    assert len(EXECUTION_EVENT_TYPES) == 7
    assert {VARIANTS[label]().state for label in VARIANTS} == set(State)


def test_expectations_match_the_table() -> None:
    check_expectations_match(EXPECTED, VARIANTS, EXECUTION_TRANSITIONS)


@pytest.mark.parametrize(("label", "event_type"), MATRIX, ids=[f"{v}-{e.__name__}" for v, e in MATRIX])
def test_execution_matrix(label: str, event_type: type) -> None:
    record = VARIANTS[label]()
    event = make_execution_event(event_type)
    row = EXECUTION_TRANSITIONS.get((record.state, event_type))
    expected = EXPECTED.get((label, event_type))

    if row is None or isinstance(expected, Guarded):
        assert (row is None) == (expected is None), f"EXPECTED and the table disagree on {label}"
        with pytest.raises(InvalidTransition) as raised:
            transition_execution(record, event, at(10))
        check_refusal(raised.value, entity="execution", record=record, event=event_type.__name__)
        return

    assert isinstance(expected, Outcome), f"the table allows ({record.state}, {event_type.__name__}); add it"
    result = transition_execution(record, event, at(10))
    check_outcome(result, row.targets, expected)
    if not result.applied:
        assert result.record is record
        return
    assert result.record.updated_at == at(10)
    for name in ("id", "name", "metadata", "deadline", "idempotency_key", "created_at"):
        assert getattr(result.record, name) == getattr(record, name)
    if result.record.state.is_terminal:
        assert result.record.closing is None
        assert result.record.ended_at == at(10)
        assert all(effect == ExecutionFinished(record.id, result.record.state) for effect in result.effects)
    if event_type in _CLOSING_EVENTS:
        assert result.record.closing is not None
        assert record.closing is None


CLOSING_EVENTS = [
    (
        CancellationRequested(message="stop please"),
        Closing(State.CANCELLED, Reason(ReasonCode.CANCEL_REQUESTED, "stop please")),
        ReasonCode.EXECUTION_CANCELLED,
    ),
    (
        ExecutionTimeoutFired(),
        Closing(State.FAILED, Reason(ReasonCode.EXECUTION_TIMED_OUT, "the execution deadline passed")),
        ReasonCode.EXECUTION_TIMED_OUT,
    ),
    (
        ExecutionFailed(task_id="a", code=ReasonCode.RETRIES_EXHAUSTED, message="boom"),
        Closing(State.FAILED, Reason(ReasonCode.RETRIES_EXHAUSTED, "task 'a' failed: boom")),
        ReasonCode.UPSTREAM_FAILED,
    ),
]


@pytest.mark.parametrize(("event", "closing", "propagated"), CLOSING_EVENTS, ids=lambda v: type(v).__name__)
def test_closing_events_remember_the_outcome_and_propagate(
    event: CancellationRequested | ExecutionTimeoutFired | ExecutionFailed, closing: Closing, propagated: ReasonCode
) -> None:
    result = transition_execution(make_execution(R), event, at(10))
    assert result.record.state is R
    assert result.record.closing == closing
    assert result.effects == ()
    assert propagated_reason(closing) == Reason(propagated, closing.reason.message)
    settled = transition_execution(result.record, ExecutionSettled(), at(11))
    assert settled.record.state is closing.state
    assert settled.record.reason == closing.reason


def test_an_empty_cancel_message_gets_a_default() -> None:
    result = transition_execution(make_execution(R), CancellationRequested(message=""), at(10))
    assert result.record.closing is not None
    assert result.record.closing.reason.message == "cancellation requested"


def test_settled_without_closing_is_refused_with_a_reason() -> None:
    with pytest.raises(InvalidTransition, match="not closing"):
        transition_execution(make_execution(R), ExecutionSettled(), at(10))
