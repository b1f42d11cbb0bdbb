"""Typed watch events from the history entries the server streams."""

from __future__ import annotations

from google.protobuf import struct_pb2

from taskwire import common as d
from taskwire.client import ExecutionTransition, LogLevel, TaskLog, TaskRunTransition, UnknownEvent
from taskwire.client._events import event_from_proto
from taskwire.v1 import types_pb2 as pb
from tests.unit.client.records import at, event, task_progress


def test_execution_transition() -> None:
    message = event(
        9,
        execution_transition=pb.ExecutionTransition(
            from_state=pb.EXECUTION_STATE_RUNNING,
            to_state=pb.EXECUTION_STATE_SUCCESS,
            reason_code=pb.REASON_CODE_COMPLETED,
            reason_message="every task succeeded",
        ),
    )
    converted = event_from_proto(message)
    assert converted == ExecutionTransition(
        execution_id="ex-1",
        sequence=9,
        time=at(9),
        from_state=d.State.RUNNING,
        to_state=d.State.SUCCESS,
        reason=d.Reason(d.ReasonCode.COMPLETED, "every task succeeded"),
    )
    assert isinstance(converted, ExecutionTransition)
    assert converted.is_terminal
    assert converted.proto is message


def test_first_transition_has_no_from_state_and_no_reason() -> None:
    converted = event_from_proto(
        event(1, execution_transition=pb.ExecutionTransition(to_state=pb.EXECUTION_STATE_PENDING))
    )
    assert isinstance(converted, ExecutionTransition)
    assert converted.from_state is None
    assert converted.reason is None
    assert not converted.is_terminal


def test_task_run_transition_that_ends_an_attempt_with_an_error() -> None:
    converted = event_from_proto(
        event(
            5,
            task_run_transition=pb.TaskRunTransition(
                task_run_id="tr-1",
                task_id="main",
                from_state=pb.TASK_RUN_STATE_RUNNING,
                to_state=pb.TASK_RUN_STATE_FAILED,
                reason_code=pb.REASON_CODE_NON_RETRYABLE_ERROR,
                reason_message="not retryable",
                attempt=2,
                worker_id="w1",
                attempt_outcome=pb.ATTEMPT_OUTCOME_FAILED,
                error=pb.ErrorInfo(type="ValueError", message="boom", retryable=False),
            ),
        )
    )
    assert isinstance(converted, TaskRunTransition)
    assert (converted.task_run_id, converted.task_id, converted.attempt, converted.worker_id) == (
        "tr-1",
        "main",
        2,
        "w1",
    )
    assert (converted.from_state, converted.to_state) == (d.State.RUNNING, d.State.FAILED)
    assert converted.reason == d.Reason(d.ReasonCode.NON_RETRYABLE_ERROR, "not retryable")
    assert converted.attempt_outcome is d.AttemptOutcome.FAILED
    assert converted.error == d.ErrorInfo(type="ValueError", message="boom", retryable=False)


def test_task_run_transition_without_an_ended_attempt() -> None:
    converted = event_from_proto(
        event(
            2,
            task_run_transition=pb.TaskRunTransition(
                task_id="main", from_state=pb.TASK_RUN_STATE_PENDING, to_state=pb.TASK_RUN_STATE_RUNNING, attempt=1
            ),
        )
    )
    assert isinstance(converted, TaskRunTransition)
    assert converted.attempt_outcome is None
    assert converted.error is None
    assert converted.reason is None


def test_progress_with_details() -> None:
    details = struct_pb2.Struct()
    details.update({"done": 3, "of": 10})
    converted = event_from_proto(
        event(
            3,
            progress=pb.TaskProgress(
                task_run_id="tr-1", task_id="main", attempt=1, fraction=0.3, message="3/10", details=details
            ),
        )
    )
    assert converted == task_progress(3, fraction=0.3, message="3/10", details={"done": 3, "of": 10})


def test_log_levels() -> None:
    for level, expected in [
        (pb.LOG_LEVEL_UNSPECIFIED, LogLevel.INFO),
        (pb.LOG_LEVEL_DEBUG, LogLevel.DEBUG),
        (pb.LOG_LEVEL_WARNING, LogLevel.WARNING),
        (pb.LOG_LEVEL_ERROR, LogLevel.ERROR),
    ]:
        converted = event_from_proto(event(4, log=pb.TaskLog(task_id="main", attempt=1, level=level, text="hi")))
        assert isinstance(converted, TaskLog)
        assert converted.level is expected
        assert converted.text == "hi"


def test_an_event_without_a_known_body_is_kept_as_an_unknown_event() -> None:
    message = event(7)
    converted = event_from_proto(message)
    assert converted == UnknownEvent(execution_id="ex-1", sequence=7, time=at(7), kind="")
    assert converted.proto is message


def test_a_state_from_a_newer_server_is_kept() -> None:
    unknown_state = event(8, execution_transition=pb.ExecutionTransition(to_state=99))  # type: ignore[arg-type]
    converted = event_from_proto(unknown_state)
    assert isinstance(converted, ExecutionTransition)
    assert converted.to_state.value == "UNKNOWN(99)"
    assert not converted.to_state.is_known
    assert not converted.is_terminal
