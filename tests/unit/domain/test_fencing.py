"""Attempt numbers fence at-least-once delivery: old and replayed reports are no-ops, future ones are errors."""

from __future__ import annotations

import pytest

from taskwire.server.domain import (
    ATTEMPT_EVENTS,
    CancelAcknowledged,
    CancelGraceExpired,
    CancelRequested,
    InvalidTransition,
    RetryDue,
    RetryPolicy,
    State,
    TaskDispatched,
    TaskFailed,
    TaskRun,
    TaskRunEvent,
    TaskSucceeded,
    TaskTimedOut,
    TerminalStateError,
    transition_task_run,
)
from tests.unit.domain.factories import CANCEL_REASON, ERROR, OUTPUT, at, make_task_run, make_task_run_event

REPORTS = [t for t in ATTEMPT_EVENTS if t is not TaskDispatched]


def second_attempt_running() -> TaskRun:
    """Attempt 1 failed, attempt 2 runs on w-2."""
    record = make_task_run(State.RUNNING, retry_policy=RetryPolicy(max_attempts=3))
    record = transition_task_run(record, TaskFailed(attempt=1, error=ERROR), at(2)).record
    record = transition_task_run(record, RetryDue(), at(3)).record
    record = transition_task_run(record, TaskDispatched(attempt=2, worker_id="w-2"), at(4)).record
    assert record.state is State.RUNNING
    assert record.attempt_count == 2
    return record


def assert_noop(record: TaskRun, event: TaskRunEvent) -> None:
    result = transition_task_run(record, event, at(50))
    assert not result.applied
    assert result.effects == ()
    assert result.record is record


@pytest.mark.parametrize("event_type", ATTEMPT_EVENTS, ids=lambda t: t.__name__)
def test_a_report_about_an_older_attempt_is_ignored(event_type: type) -> None:
    record = second_attempt_running()
    if event_type in (CancelAcknowledged, CancelGraceExpired):
        record = transition_task_run(record, CancelRequested(CANCEL_REASON), at(5)).record
    assert_noop(record, make_task_run_event(event_type, record, attempt=1))


@pytest.mark.parametrize("event_type", REPORTS, ids=lambda t: t.__name__)
def test_a_report_about_an_attempt_that_already_ended_is_ignored(event_type: type) -> None:
    waiting = transition_task_run(
        make_task_run(State.RUNNING, retry_policy=RetryPolicy(max_attempts=2)),
        TaskFailed(attempt=1, error=ERROR),
        at(2),
    ).record
    assert waiting.state is State.WAITING
    assert_noop(waiting, make_task_run_event(event_type, waiting, attempt=1))


@pytest.mark.parametrize("state", [State.SUCCESS, State.FAILED])
@pytest.mark.parametrize("event_type", ATTEMPT_EVENTS, ids=lambda t: t.__name__)
def test_late_reports_about_the_last_attempt_of_a_finished_task_run_are_ignored(state: State, event_type: type) -> None:
    record = make_task_run(state)
    assert_noop(record, make_task_run_event(event_type, record, attempt=1))


def test_a_timeout_that_fires_after_success_is_ignored() -> None:
    done = transition_task_run(make_task_run(State.RUNNING), TaskSucceeded(attempt=1, output=OUTPUT), at(2)).record
    assert_noop(done, TaskTimedOut(attempt=1))


def test_a_redelivered_dispatch_is_ignored() -> None:
    record = second_attempt_running()
    assert_noop(record, TaskDispatched(attempt=1, worker_id="w-1"))
    assert_noop(record, TaskDispatched(attempt=2, worker_id="w-9"))


@pytest.mark.parametrize("event_type", REPORTS, ids=lambda t: t.__name__)
def test_a_report_about_a_future_attempt_is_an_error(event_type: type) -> None:
    record = second_attempt_running()
    with pytest.raises(InvalidTransition, match="attempt 3 does not exist") as raised:
        transition_task_run(record, make_task_run_event(event_type, record, attempt=3), at(50))
    assert type(raised.value) is InvalidTransition
    assert raised.value.state == "RUNNING"


def test_a_dispatch_that_skips_an_attempt_is_an_error() -> None:
    pending = transition_task_run(
        transition_task_run(
            make_task_run(State.RUNNING, retry_policy=RetryPolicy(max_attempts=3)),
            TaskFailed(attempt=1, error=ERROR),
            at(2),
        ).record,
        RetryDue(),
        at(3),
    ).record
    with pytest.raises(InvalidTransition, match="attempt 3 does not exist"):
        transition_task_run(pending, TaskDispatched(attempt=3, worker_id="w-1"), at(4))


@pytest.mark.parametrize("state", [State.SUCCESS, State.FAILED, State.CANCELLED])
@pytest.mark.parametrize("event_type", ATTEMPT_EVENTS, ids=lambda t: t.__name__)
def test_a_future_attempt_on_a_finished_task_run_is_a_terminal_state_error(state: State, event_type: type) -> None:
    """Regression: the fence used to raise a plain InvalidTransition here, unlike every other refusal."""
    record = make_task_run(state)
    with pytest.raises(TerminalStateError):
        transition_task_run(record, make_task_run_event(event_type, record, attempt=record.attempt_count + 2), at(9))
