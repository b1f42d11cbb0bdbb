"""Every (task run state × event type) pair: allowed pairs reach a documented target, others are refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from itertools import product

import pytest

from taskwire.server.domain import (
    TASK_RUN_TRANSITIONS,
    AttemptEnded,
    CancelAcknowledged,
    CancelGraceExpired,
    CancelOnWorker,
    CancelRequested,
    DependenciesFailed,
    DependenciesMet,
    Enqueue,
    InvalidTransition,
    KeyFull,
    KeyPlaceFree,
    LeaseExpired,
    RateLimitEmpty,
    RateTokenGranted,
    ReasonCode,
    RetryDue,
    ScheduleDue,
    ScheduleRetry,
    StartTimedOut,
    State,
    TaskDispatched,
    TaskFailed,
    TaskProgressed,
    TaskRun,
    TaskRunFinished,
    TaskSucceeded,
    TaskTimedOut,
    transition_task_run,
)
from tests.unit.domain.factories import CANCEL_REASON, TASK_RUN_EVENT_TYPES, at, make_task_run, make_task_run_event
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

# One record per state, and per WAITING reason; RUNNING with and without a cancellation pending.
VARIANTS: dict[str, Callable[[], TaskRun]] = {
    "PENDING": lambda: make_task_run(P, schedule_to_start_timeout=timedelta(seconds=30)),
    "WAITING(RETRY_BACKOFF)": lambda: make_task_run(W, waiting_for=ReasonCode.RETRY_BACKOFF),
    "WAITING(DEPENDENCIES)": lambda: make_task_run(W, waiting_for=ReasonCode.DEPENDENCIES),
    "WAITING(SCHEDULED)": lambda: make_task_run(W, waiting_for=ReasonCode.SCHEDULED),
    "WAITING(CONCURRENCY_LIMIT)": lambda: make_task_run(W, waiting_for=ReasonCode.CONCURRENCY_LIMIT),
    "WAITING(RATE_LIMITED)": lambda: make_task_run(W, waiting_for=ReasonCode.RATE_LIMITED),
    "RUNNING": lambda: make_task_run(R),
    "RUNNING+cancel": lambda: make_task_run(R, pending_cancel=CANCEL_REASON),
    "SUCCESS": lambda: make_task_run(S),
    "FAILED": lambda: make_task_run(F),
    "CANCELLED": lambda: make_task_run(C),
}

FINISHED = (AttemptEnded, TaskRunFinished)

# What each allowed pair does to the records above (default retry policy: one attempt, no timeout).
# Written independently of TASK_RUN_TRANSITIONS; test_expectations_match_the_table keeps them in step.
EXPECTED: dict[tuple[str, type], Outcome | Guarded] = {
    ("PENDING", TaskDispatched): Outcome(R),
    ("PENDING", CancelRequested): Outcome(C, effects=(TaskRunFinished,)),
    ("PENDING", RetryDue): Outcome(P, applied=False),
    ("PENDING", ScheduleDue): Outcome(P, applied=False),
    ("PENDING", DependenciesMet): Outcome(P, applied=False),
    ("PENDING", StartTimedOut): Outcome(F, effects=(TaskRunFinished,)),
    # Armed for a wait in the queue: once the task run left it, the timer no longer applies.
    ("WAITING(RETRY_BACKOFF)", StartTimedOut): Outcome(W, applied=False),
    ("WAITING(DEPENDENCIES)", StartTimedOut): Outcome(W, applied=False),
    ("WAITING(SCHEDULED)", StartTimedOut): Outcome(W, applied=False),
    ("RUNNING", StartTimedOut): Outcome(R, applied=False),
    ("WAITING(CONCURRENCY_LIMIT)", StartTimedOut): Outcome(W, applied=False),
    # A task run queued while its concurrency key is full waits for a place, and queues again when it gets one.
    ("PENDING", KeyFull): Outcome(W),
    ("PENDING", KeyPlaceFree): Outcome(P, applied=False),
    ("WAITING(CONCURRENCY_LIMIT)", KeyFull): Outcome(W, applied=False),
    ("WAITING(CONCURRENCY_LIMIT)", KeyPlaceFree): Outcome(P, effects=(Enqueue,)),
    ("WAITING(CONCURRENCY_LIMIT)", CancelRequested): Outcome(C, effects=(TaskRunFinished,)),
    ("WAITING(CONCURRENCY_LIMIT)", RetryDue): GUARDED,
    ("WAITING(CONCURRENCY_LIMIT)", ScheduleDue): GUARDED,
    ("WAITING(CONCURRENCY_LIMIT)", DependenciesMet): GUARDED,
    ("WAITING(CONCURRENCY_LIMIT)", DependenciesFailed): GUARDED,
    ("WAITING(RETRY_BACKOFF)", KeyFull): GUARDED,
    ("WAITING(RETRY_BACKOFF)", KeyPlaceFree): GUARDED,
    ("WAITING(DEPENDENCIES)", KeyFull): GUARDED,
    ("WAITING(DEPENDENCIES)", KeyPlaceFree): GUARDED,
    ("WAITING(SCHEDULED)", KeyFull): GUARDED,
    ("WAITING(SCHEDULED)", KeyPlaceFree): GUARDED,
    ("WAITING(RATE_LIMITED)", KeyFull): GUARDED,
    ("WAITING(RATE_LIMITED)", KeyPlaceFree): GUARDED,
    # A task run about to be dispatched without a token of its rate limit waits for one, and queues with it.
    ("PENDING", RateLimitEmpty): Outcome(W),
    ("PENDING", RateTokenGranted): Outcome(P, applied=False),
    ("WAITING(RATE_LIMITED)", RateLimitEmpty): Outcome(W, applied=False),
    ("WAITING(RATE_LIMITED)", RateTokenGranted): Outcome(P, effects=(Enqueue,)),
    ("WAITING(RATE_LIMITED)", CancelRequested): Outcome(C, effects=(TaskRunFinished,)),
    ("WAITING(RATE_LIMITED)", StartTimedOut): Outcome(W, applied=False),
    ("WAITING(RATE_LIMITED)", RetryDue): GUARDED,
    ("WAITING(RATE_LIMITED)", ScheduleDue): GUARDED,
    ("WAITING(RATE_LIMITED)", DependenciesMet): GUARDED,
    ("WAITING(RATE_LIMITED)", DependenciesFailed): GUARDED,
    ("WAITING(RETRY_BACKOFF)", RateLimitEmpty): GUARDED,
    ("WAITING(RETRY_BACKOFF)", RateTokenGranted): GUARDED,
    ("WAITING(DEPENDENCIES)", RateLimitEmpty): GUARDED,
    ("WAITING(DEPENDENCIES)", RateTokenGranted): GUARDED,
    ("WAITING(SCHEDULED)", RateLimitEmpty): GUARDED,
    ("WAITING(SCHEDULED)", RateTokenGranted): GUARDED,
    ("WAITING(CONCURRENCY_LIMIT)", RateLimitEmpty): GUARDED,
    ("WAITING(CONCURRENCY_LIMIT)", RateTokenGranted): GUARDED,
    ("RUNNING+cancel", StartTimedOut): Outcome(R, applied=False),
    ("WAITING(RETRY_BACKOFF)", RetryDue): Outcome(P, effects=(Enqueue,)),
    ("WAITING(RETRY_BACKOFF)", ScheduleDue): GUARDED,
    ("WAITING(RETRY_BACKOFF)", DependenciesMet): GUARDED,
    ("WAITING(RETRY_BACKOFF)", DependenciesFailed): GUARDED,
    ("WAITING(RETRY_BACKOFF)", CancelRequested): Outcome(C, effects=(TaskRunFinished,)),
    ("WAITING(DEPENDENCIES)", RetryDue): GUARDED,
    ("WAITING(DEPENDENCIES)", ScheduleDue): GUARDED,
    ("WAITING(DEPENDENCIES)", DependenciesMet): Outcome(P, effects=(Enqueue,)),
    ("WAITING(DEPENDENCIES)", DependenciesFailed): Outcome(C, effects=(TaskRunFinished,)),
    ("WAITING(DEPENDENCIES)", CancelRequested): Outcome(C, effects=(TaskRunFinished,)),
    ("WAITING(SCHEDULED)", RetryDue): GUARDED,
    ("WAITING(SCHEDULED)", ScheduleDue): Outcome(P, effects=(Enqueue,)),
    ("WAITING(SCHEDULED)", DependenciesMet): GUARDED,
    ("WAITING(SCHEDULED)", DependenciesFailed): GUARDED,
    ("WAITING(SCHEDULED)", CancelRequested): Outcome(C, effects=(TaskRunFinished,)),
    ("RUNNING", TaskSucceeded): Outcome(S, effects=FINISHED),
    ("RUNNING", TaskFailed): Outcome(F, effects=FINISHED),
    ("RUNNING", TaskTimedOut): Outcome(F, effects=(AttemptEnded, CancelOnWorker, TaskRunFinished)),
    # A lost attempt is not the handler's fault: retried even with the default single attempt.
    ("RUNNING", LeaseExpired): Outcome(W, effects=(AttemptEnded, ScheduleRetry)),
    ("RUNNING", CancelRequested): Outcome(R, effects=(CancelOnWorker,)),
    ("RUNNING", CancelAcknowledged): GUARDED,
    ("RUNNING", CancelGraceExpired): GUARDED,
    ("RUNNING", TaskProgressed): Outcome(R),
    # A handler that completes before it sees the cancel has succeeded; any other end is the cancel's.
    ("RUNNING+cancel", TaskSucceeded): Outcome(S, effects=FINISHED),
    ("RUNNING+cancel", TaskFailed): Outcome(C, effects=FINISHED),
    ("RUNNING+cancel", TaskTimedOut): Outcome(C, effects=(AttemptEnded, CancelOnWorker, TaskRunFinished)),
    ("RUNNING+cancel", LeaseExpired): Outcome(C, effects=FINISHED),
    ("RUNNING+cancel", CancelRequested): Outcome(R, applied=False),
    ("RUNNING+cancel", CancelAcknowledged): Outcome(C, effects=FINISHED),
    ("RUNNING+cancel", CancelGraceExpired): Outcome(C, effects=FINISHED),
    ("RUNNING+cancel", TaskProgressed): Outcome(R),
    ("CANCELLED", CancelRequested): Outcome(C, applied=False),
    ("CANCELLED", DependenciesFailed): Outcome(C, applied=False),
}

MATRIX = list(product(VARIANTS, TASK_RUN_EVENT_TYPES))


def test_the_matrix_is_complete() -> None:
    assert len(TASK_RUN_EVENT_TYPES) == 18
    assert {VARIANTS[label]().state for label in VARIANTS} == set(State)
    assert len(MATRIX) == len(VARIANTS) * 18


def test_expectations_match_the_table() -> None:
    """A row added to (or removed from) the table without a test here fails this test."""
    check_expectations_match(EXPECTED, VARIANTS, TASK_RUN_TRANSITIONS)


@pytest.mark.parametrize(("label", "event_type"), MATRIX, ids=[f"{v}-{e.__name__}" for v, e in MATRIX])
def test_task_run_matrix(label: str, event_type: type) -> None:
    record = VARIANTS[label]()
    event = make_task_run_event(event_type, record)
    row = TASK_RUN_TRANSITIONS.get((record.state, event_type))
    expected = EXPECTED.get((label, event_type))

    if row is None or isinstance(expected, Guarded):
        assert (row is None) == (expected is None), f"EXPECTED and the table disagree on {label}"
        with pytest.raises(InvalidTransition) as raised:
            transition_task_run(record, event, at(10))
        check_refusal(raised.value, entity="task run", record=record, event=event_type.__name__)
        return

    assert isinstance(expected, Outcome), (
        f"the table allows ({record.state}, {event_type.__name__}); add it to EXPECTED"
    )
    result = transition_task_run(record, event, at(10))
    check_outcome(result, row.targets, expected)
    if not result.applied:
        assert result.record is record
    else:
        assert result.record != record
        assert result.record.updated_at == at(10)
    # What a task run is never changes.
    for name in ("id", "execution_id", "task_id", "handler", "input", "depends_on", "timeout", "retry_policy"):
        assert getattr(result.record, name) == getattr(record, name)
    assert all(getattr(effect, "task_run_id", record.id) == record.id for effect in result.effects)


@pytest.mark.parametrize(
    ("label", "event_type", "waits_for"),
    [
        ("WAITING(DEPENDENCIES)", RetryDue, "DEPENDENCIES"),
        ("WAITING(SCHEDULED)", DependenciesMet, "SCHEDULED"),
        ("WAITING(RETRY_BACKOFF)", ScheduleDue, "RETRY_BACKOFF"),
        ("WAITING(SCHEDULED)", DependenciesFailed, "SCHEDULED"),
    ],
)
def test_waiting_for_the_wrong_thing_is_refused_with_the_reason(label: str, event_type: type, waits_for: str) -> None:
    record = VARIANTS[label]()
    with pytest.raises(InvalidTransition) as raised:
        transition_task_run(record, make_task_run_event(event_type, record), at(10))
    assert raised.value.state == "WAITING"
    assert waits_for in str(raised.value)


def test_cancel_settled_without_a_pending_cancel_is_refused() -> None:
    record = VARIANTS["RUNNING"]()
    with pytest.raises(InvalidTransition, match="no cancellation is pending"):
        transition_task_run(record, CancelAcknowledged(attempt=1), at(10))
