"""The mapping between the worker's types and the wire messages."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from google.protobuf import duration_pb2, json_format

from taskwire.v1 import types_pb2
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.worker import (
    AbortReason,
    Cancelled,
    Completed,
    ErrorInfo,
    Failed,
    LogLine,
    Payload,
    ProgressUpdate,
    _convert,
)
from taskwire.worker._executor import AttemptKey

KEY = AttemptKey("run-1", 3)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (wpb.CANCEL_REASON_UNSPECIFIED, AbortReason.CANCELLED),
        (wpb.CANCEL_REASON_REQUESTED, AbortReason.CANCELLED),
        (wpb.CANCEL_REASON_TIMED_OUT, AbortReason.TIMED_OUT),
        (wpb.CANCEL_REASON_EXECUTION_TIMED_OUT, AbortReason.EXECUTION_TIMED_OUT),
        (wpb.CANCEL_REASON_UPSTREAM_FAILED, AbortReason.UPSTREAM_FAILED),
        (wpb.CANCEL_REASON_LEASE_LOST, AbortReason.LEASE_LOST),
        (99, AbortReason.CANCELLED),
    ],
)
def test_cancel_reasons(wire: int, reason: AbortReason) -> None:
    assert _convert.abort_reason(wire) is reason


def test_a_cancel_reason_from_a_newer_server_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="taskwire.worker"):
        assert _convert.abort_reason(99) is AbortReason.CANCELLED
    assert "a cancel reason this worker does not know (UNKNOWN(99)) is taken as CANCELLED" in caplog.text


@pytest.mark.parametrize(
    ("levelno", "wire"),
    [
        (logging.DEBUG, types_pb2.LOG_LEVEL_DEBUG),
        (5, types_pb2.LOG_LEVEL_DEBUG),
        (logging.INFO, types_pb2.LOG_LEVEL_INFO),
        (logging.WARNING, types_pb2.LOG_LEVEL_WARNING),
        (logging.ERROR, types_pb2.LOG_LEVEL_ERROR),
        (logging.CRITICAL, types_pb2.LOG_LEVEL_ERROR),
    ],
)
def test_log_levels(levelno: int, wire: int) -> None:
    assert _convert.log_level(levelno) == wire


def test_an_invocation_becomes_an_attempt_spec() -> None:
    invocation = wpb.Invocation(
        ref=wpb.AttemptRef(task_run_id="run-1", attempt=3),
        execution_id="exec-1",
        task_id="resize",
        handler="resize-image",
        input=types_pb2.Payload(data=b"{}", content_type=""),
    )
    invocation.timeout.FromTimedelta(timedelta(seconds=2.5))
    spec = _convert.spec(invocation, received_at=100.0)
    assert spec.key == KEY
    assert spec.timeout_s == 2.5
    assert spec.received_at == 100.0
    assert spec.info.input == Payload(data=b"{}", content_type="application/json")
    assert (spec.info.execution_id, spec.info.task_id, spec.info.handler) == ("exec-1", "resize", "resize-image")


def test_an_unset_timeout_means_no_limit() -> None:
    spec = _convert.spec(wpb.Invocation(handler="x"), received_at=0.0)
    assert spec.timeout_s is None


def test_negative_durations_are_zero() -> None:
    assert _convert.seconds(duration_pb2.Duration(seconds=-3)) == 0.0


def test_outcomes_become_reports() -> None:
    completed = _convert.outcome(KEY, Completed(output=Payload(data=b"1", content_type="application/json")))
    assert completed is not None
    assert completed.completed.output.data == b"1"
    assert completed.completed.ref.attempt == 3

    error = ErrorInfo(type="TimeoutError", message="late", retryable=True, traceback="tb")
    failed = _convert.outcome(KEY, Failed(error=error, timed_out=True))
    assert failed is not None
    assert failed.failed.timed_out
    assert (failed.failed.error.type, failed.failed.error.traceback) == ("TimeoutError", "tb")

    ack = _convert.outcome(KEY, Cancelled(reason=AbortReason.CANCELLED))
    assert ack is not None
    assert ack.WhichOneof("kind") == "cancel_acknowledged"

    assert _convert.outcome(KEY, Cancelled(reason=AbortReason.LEASE_LOST)) is None


def test_progress_details_become_a_struct() -> None:
    message = _convert.progress(KEY, ProgressUpdate(fraction=0.5, message="half", details={"a": [1, "b"]}))
    assert message.progress.fraction == 0.5
    assert json_format.MessageToDict(message.progress.details) == {"a": [1.0, "b"]}
    assert not _convert.progress(KEY, ProgressUpdate(fraction=0.1)).progress.HasField("details")


def test_log_line() -> None:
    message = _convert.log(KEY, LogLine(level=logging.WARNING, text="careful"))
    assert (message.log.level, message.log.text) == (types_pb2.LOG_LEVEL_WARNING, "careful")
