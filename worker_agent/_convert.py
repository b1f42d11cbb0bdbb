"""The one place that maps the worker's plain types to and from the wire messages.

Payloads, errors, durations and structs convert through the shared `taskwire.common.wire`; what is here
is the worker protocol's own: attempt references, invocations, reports and cancel reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

from google.protobuf import duration_pb2

from taskwire.common import wire
from taskwire.v1 import types_pb2
from taskwire.v1 import worker_service_pb2 as wpb

from ._abort import AbortReason
from ._context import AttemptInfo, LogLine, ProgressUpdate
from ._executor import AttemptKey, AttemptSpec
from ._outcome import Cancelled, Completed, Failed, Outcome

_log = logging.getLogger("taskwire.worker")

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
    known = _CANCEL_REASONS.get(reason)
    if known is not None:
        return known
    _log.info("a cancel reason this worker does not know (%s) is taken as CANCELLED", _cancel_reason_name(reason))
    return AbortReason.CANCELLED


def _cancel_reason_name(reason: int) -> str:
    try:
        return wpb.CancelReason.Name(reason)  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN({reason})"


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
    return max(0.0, wire.duration_from_proto(duration).total_seconds())


def key(ref: wpb.AttemptRef) -> AttemptKey:
    return AttemptKey(ref.task_run_id, ref.attempt)


def ref(attempt: AttemptKey) -> wpb.AttemptRef:
    return wpb.AttemptRef(task_run_id=attempt.task_run_id, attempt=attempt.attempt)


def refs(attempts: Iterable[AttemptKey]) -> list[wpb.AttemptRef]:
    return [ref(a) for a in sorted(attempts)]


def spec(invocation: wpb.Invocation, *, received_at: float, session_id: str = "") -> AttemptSpec:
    """The attempt an Invocation asks for; its timeout counts from ``received_at`` (``loop.time()``)."""
    info = AttemptInfo(
        dispatch_id=f"{session_id}/{invocation.dispatch}" if invocation.dispatch else "",
        task_run_id=invocation.ref.task_run_id,
        attempt=invocation.ref.attempt,
        handler=invocation.handler,
        input=wire.payload_from_proto(invocation.input),
        execution_id=invocation.execution_id,
        task_id=invocation.task_id,
        trace_context=dict(invocation.trace_context),
        queued_at=wire.timestamp_from_proto(invocation.queued_at) if invocation.HasField("queued_at") else None,
        upstream={task_id: wire.payload_from_proto(output) for task_id, output in invocation.upstream_outputs.items()},
    )
    timeout_s = seconds(invocation.timeout) if invocation.HasField("timeout") else None
    return AttemptSpec(info=info, timeout_s=timeout_s, received_at=received_at)


def started(attempt: AttemptKey) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(started=wpb.AttemptStarted(ref=ref(attempt)))


def progress(attempt: AttemptKey, update: ProgressUpdate) -> wpb.WorkerMessage:
    message = wpb.AttemptProgress(ref=ref(attempt), fraction=update.fraction, message=update.message)
    # ctx.progress() already made the details JSON-compatible, which is what a Struct holds.
    details = wire.struct_to_proto(cast("dict[str, Any] | None", update.details))
    if details is not None:
        message.details.CopyFrom(details)
    return wpb.WorkerMessage(progress=message)


def log(attempt: AttemptKey, line: LogLine) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(log=wpb.AttemptLog(ref=ref(attempt), level=log_level(line.level), text=line.text))


def outcome(attempt: AttemptKey, result: Outcome) -> wpb.WorkerMessage | None:
    """The report for an ended attempt; None when nothing is to be sent (its lease was lost)."""
    if isinstance(result, Completed):
        output = wire.payload_to_proto(result.output)
        return wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=ref(attempt), output=output))
    if isinstance(result, Failed):
        return wpb.WorkerMessage(
            failed=wpb.AttemptFailed(
                ref=ref(attempt), error=wire.error_to_proto(result.error), timed_out=result.timed_out
            )
        )
    assert isinstance(result, Cancelled)
    if result.reason is AbortReason.LEASE_LOST:
        return None
    return wpb.WorkerMessage(cancel_acknowledged=wpb.CancelAcknowledged(ref=ref(attempt)))
