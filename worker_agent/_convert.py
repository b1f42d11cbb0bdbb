"""The one place that maps the worker's plain types to and from the wire messages."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

from google.protobuf import duration_pb2, struct_pb2

from taskwire.v1 import types_pb2
from taskwire.v1 import worker_service_pb2 as wpb

from ._abort import AbortReason
from ._context import AttemptInfo, LogLine, ProgressUpdate
from ._executor import AttemptKey, AttemptSpec
from ._outcome import Cancelled, Completed, ErrorDetails, Failed, Outcome
from ._payload import JSON_CONTENT_TYPE, Payload

_CANCEL_REASONS: Mapping[int, AbortReason] = {
    wpb.CANCEL_REASON_UNSPECIFIED: AbortReason.CANCELLED,
    wpb.CANCEL_REASON_REQUESTED: AbortReason.CANCELLED,
    wpb.CANCEL_REASON_TIMED_OUT: AbortReason.TIMED_OUT,
    wpb.CANCEL_REASON_EXECUTION_TIMED_OUT: AbortReason.EXECUTION_TIMED_OUT,
    wpb.CANCEL_REASON_UPSTREAM_FAILED: AbortReason.UPSTREAM_FAILED,
    wpb.CANCEL_REASON_LEASE_LOST: AbortReason.LEASE_LOST,
}


def abort_reason(reason: int) -> AbortReason:
    """The abort reason a handler sees for a Cancel; values this worker does not know mean CANCELLED."""
    return _CANCEL_REASONS.get(reason, AbortReason.CANCELLED)


def log_level(levelno: int) -> types_pb2.LogLevel.ValueType:
    """A :mod:`logging` level number as a wire LogLevel (CRITICAL is ERROR, anything below INFO is DEBUG)."""
    if levelno >= logging.ERROR:
        return types_pb2.LOG_LEVEL_ERROR
    if levelno >= logging.WARNING:
        return types_pb2.LOG_LEVEL_WARNING
    if levelno >= logging.INFO:
        return types_pb2.LOG_LEVEL_INFO
    return types_pb2.LOG_LEVEL_DEBUG


def seconds(duration: duration_pb2.Duration) -> float:
    return max(0.0, duration.ToTimedelta().total_seconds())


def key(ref: wpb.AttemptRef) -> AttemptKey:
    return AttemptKey(ref.task_run_id, ref.attempt)


def ref(attempt: AttemptKey) -> wpb.AttemptRef:
    return wpb.AttemptRef(task_run_id=attempt.task_run_id, attempt=attempt.attempt)


def refs(attempts: Iterable[AttemptKey]) -> list[wpb.AttemptRef]:
    return [ref(a) for a in sorted(attempts)]


def spec(invocation: wpb.Invocation, *, received_at: float) -> AttemptSpec:
    """The attempt an Invocation asks for; its timeout counts from ``received_at`` (``loop.time()``)."""
    info = AttemptInfo(
        task_run_id=invocation.ref.task_run_id,
        attempt=invocation.ref.attempt,
        handler=invocation.handler,
        input=Payload(data=invocation.input.data, content_type=invocation.input.content_type or JSON_CONTENT_TYPE),
        execution_id=invocation.execution_id,
        task_id=invocation.task_id,
    )
    timeout_s = seconds(invocation.timeout) if invocation.HasField("timeout") else None
    return AttemptSpec(info=info, timeout_s=timeout_s, received_at=received_at)


def started(attempt: AttemptKey) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(started=wpb.AttemptStarted(ref=ref(attempt)))


def progress(attempt: AttemptKey, update: ProgressUpdate) -> wpb.WorkerMessage:
    message = wpb.AttemptProgress(ref=ref(attempt), fraction=update.fraction, message=update.message)
    if update.details is not None:
        details = struct_pb2.Struct()
        # ctx.progress() already made the details JSON-compatible, which is what a Struct holds.
        details.update(cast("dict[str, Any]", update.details))
        message.details.CopyFrom(details)
    return wpb.WorkerMessage(progress=message)


def log(attempt: AttemptKey, line: LogLine) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(log=wpb.AttemptLog(ref=ref(attempt), level=log_level(line.level), text=line.text))


def error_info(error: ErrorDetails) -> types_pb2.ErrorInfo:
    return types_pb2.ErrorInfo(
        type=error.type, message=error.message, retryable=error.retryable, traceback=error.traceback
    )


def outcome(attempt: AttemptKey, result: Outcome) -> wpb.WorkerMessage | None:
    """The report for an ended attempt; None when nothing is to be sent (its lease was lost)."""
    if isinstance(result, Completed):
        output = types_pb2.Payload(data=result.output.data, content_type=result.output.content_type)
        return wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=ref(attempt), output=output))
    if isinstance(result, Failed):
        return wpb.WorkerMessage(
            failed=wpb.AttemptFailed(ref=ref(attempt), error=error_info(result.error), timed_out=result.timed_out)
        )
    assert isinstance(result, Cancelled)
    if result.reason is AbortReason.LEASE_LOST:
        return None
    return wpb.WorkerMessage(cancel_acknowledged=wpb.CancelAcknowledged(ref=ref(attempt)))
