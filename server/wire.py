"""The one place where domain values meet protobuf messages.

Everything that crosses the wire is converted here, in both directions, so the
domain never imports protobuf and the servicers and the client SDK share one
mapping. The error → gRPC status mapping lives here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb

from . import domain as d

# ---- Scalars ------------------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(message: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Exact to the microsecond, and several times cheaper than Timestamp.FromDatetime."""
    since = value - _EPOCH
    message.seconds = since.days * 86_400 + since.seconds
    message.nanos = since.microseconds * 1000


def timestamp_to_proto(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    set_timestamp(message, value)
    return message


def timestamp_from_proto(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def optional_timestamp(parent: Any, field: str) -> datetime | None:
    return timestamp_from_proto(getattr(parent, field)) if parent.HasField(field) else None


def duration_to_proto(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def optional_duration(parent: Any, field: str) -> timedelta | None:
    """A Duration field as a timedelta; None when unset. Negative values pass through for validation."""
    if not parent.HasField(field):
        return None
    message: duration_pb2.Duration = getattr(parent, field)
    return timedelta(seconds=message.seconds, microseconds=message.nanos // 1000)


def payload_to_proto(value: d.Payload | None) -> pb.Payload | None:
    if value is None:
        return None
    return pb.Payload(data=value.data, content_type=value.content_type)


def payload_from_proto(message: pb.Payload) -> d.Payload:
    return d.Payload(data=message.data, content_type=message.content_type or d.JSON_CONTENT_TYPE)


def optional_payload(parent: Any, field: str) -> d.Payload | None:
    return payload_from_proto(getattr(parent, field)) if parent.HasField(field) else None


def json_payload(value: Any) -> d.Payload:
    return d.Payload(data=json.dumps(value, separators=(",", ":")).encode())


def struct_to_proto(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if not value:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_from_proto(message: struct_pb2.Struct) -> dict[str, Any]:
    return MessageToDict(message)


# ---- Enums --------------------------------------------------------------------------------------

_STATE_TO_EXECUTION = {state: pb.ExecutionState.Value(f"EXECUTION_STATE_{state.name}") for state in d.State}
_STATE_TO_TASK_RUN = {state: pb.TaskRunState.Value(f"TASK_RUN_STATE_{state.name}") for state in d.State}
_EXECUTION_TO_STATE: dict[int, d.State] = {value: state for state, value in _STATE_TO_EXECUTION.items()}
_TASK_RUN_TO_STATE: dict[int, d.State] = {value: state for state, value in _STATE_TO_TASK_RUN.items()}
_REASON_TO_PROTO = {code: pb.ReasonCode.Value(f"REASON_CODE_{code.name}") for code in d.ReasonCode}
_PROTO_TO_REASON: dict[int, d.ReasonCode] = {value: code for code, value in _REASON_TO_PROTO.items()}
_OUTCOME_TO_PROTO = {o: pb.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{o.name}") for o in d.AttemptOutcome}
_PROTO_TO_OUTCOME: dict[int, d.AttemptOutcome] = {value: o for o, value in _OUTCOME_TO_PROTO.items()}
_CANCEL_REASON = {
    d.ReasonCode.CANCEL_REQUESTED: wpb.CANCEL_REASON_REQUESTED,
    d.ReasonCode.EXECUTION_CANCELLED: wpb.CANCEL_REASON_REQUESTED,
    d.ReasonCode.TIMED_OUT: wpb.CANCEL_REASON_TIMED_OUT,
    d.ReasonCode.EXECUTION_TIMED_OUT: wpb.CANCEL_REASON_EXECUTION_TIMED_OUT,
    d.ReasonCode.UPSTREAM_FAILED: wpb.CANCEL_REASON_UPSTREAM_FAILED,
}


def execution_state_to_proto(state: d.State) -> pb.ExecutionState.ValueType:
    return _STATE_TO_EXECUTION[state]


def execution_state_from_proto(value: int, where: str = "state") -> d.State:
    try:
        return _EXECUTION_TO_STATE[value]
    except KeyError:
        raise d.ValidationError(where, f"unknown execution state {value}") from None


def task_run_state_to_proto(state: d.State) -> pb.TaskRunState.ValueType:
    return _STATE_TO_TASK_RUN[state]


def task_run_state_from_proto(value: int) -> d.State:
    return _TASK_RUN_TO_STATE[value]


def reason_code_to_proto(code: d.ReasonCode | None) -> pb.ReasonCode.ValueType:
    return _REASON_TO_PROTO[code] if code is not None else pb.REASON_CODE_UNSPECIFIED


def reason_code_from_proto(value: int) -> d.ReasonCode | None:
    return _PROTO_TO_REASON.get(value)


def outcome_to_proto(outcome: d.AttemptOutcome) -> pb.AttemptOutcome.ValueType:
    return _OUTCOME_TO_PROTO[outcome]


def cancel_reason_to_proto(code: d.ReasonCode) -> wpb.CancelReason.ValueType:
    return _CANCEL_REASON.get(code, wpb.CANCEL_REASON_REQUESTED)


def outcome_from_proto(value: int) -> d.AttemptOutcome | None:
    """An attempt outcome; None for ATTEMPT_OUTCOME_UNSPECIFIED (a transition that ended no attempt)."""
    return _PROTO_TO_OUTCOME.get(value)


def reason_from_proto(code: int, message: str) -> d.Reason | None:
    """A reason code with its message; None for REASON_CODE_UNSPECIFIED."""
    reason = reason_code_from_proto(code)
    return d.Reason(reason, message) if reason is not None else None


def reason_to_proto(reason: d.Reason | None) -> pb.Reason | None:
    return pb.Reason(code=reason_code_to_proto(reason.code), message=reason.message) if reason else None


def optional_reason(parent: Any, field: str) -> d.Reason | None:
    if not parent.HasField(field):
        return None
    message: pb.Reason = getattr(parent, field)
    return reason_from_proto(message.code, message.message)


# ---- Specs (client → server) --------------------------------------------------------------------


def retry_policy_from_proto(message: pb.RetryPolicy) -> d.RetryPolicy:
    return d.RetryPolicy(
        max_attempts=message.max_attempts,
        initial_interval=optional_duration(message, "initial_interval") or d.RetryPolicy().initial_interval,
        backoff_coefficient=message.backoff_coefficient,
        maximum_interval=optional_duration(message, "maximum_interval"),
        non_retryable_error_types=tuple(message.non_retryable_error_types),
    )


def retry_policy_to_proto(policy: d.RetryPolicy) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_interval=duration_to_proto(policy.initial_interval),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=duration_to_proto(policy.maximum_interval),
        non_retryable_error_types=list(policy.non_retryable_error_types),
    )


def task_spec_from_proto(message: tpb.TaskSpec) -> d.TaskSpec:
    return d.TaskSpec(
        task_id=message.task_id,
        handler=message.handler,
        input=optional_payload(message, "input") or d.Payload(),
        depends_on=tuple(message.depends_on),
        timeout=optional_duration(message, "timeout"),
        retry_policy=retry_policy_from_proto(message.retry_policy)
        if message.HasField("retry_policy")
        else d.RetryPolicy(),
    )


def execution_spec_from_proto(message: tpb.ExecutionSpec) -> d.ExecutionSpec:
    return d.ExecutionSpec(
        tasks=tuple(task_spec_from_proto(task) for task in message.tasks),
        name=message.name,
        metadata=dict(message.metadata),
        timeout=optional_duration(message, "timeout"),
        not_before=optional_timestamp(message, "not_before"),
        idempotency_key=message.idempotency_key,
    )


def task_spec_to_proto(spec: d.TaskSpec) -> tpb.TaskSpec:
    return tpb.TaskSpec(
        task_id=spec.task_id,
        handler=spec.handler,
        input=payload_to_proto(spec.input),
        depends_on=list(spec.depends_on),
        timeout=duration_to_proto(spec.timeout),
        retry_policy=retry_policy_to_proto(spec.retry_policy),
    )


def execution_spec_to_proto(spec: d.ExecutionSpec) -> tpb.ExecutionSpec:
    return tpb.ExecutionSpec(
        name=spec.name,
        tasks=[task_spec_to_proto(task) for task in spec.tasks],
        metadata=dict(spec.metadata),
        timeout=duration_to_proto(spec.timeout),
        not_before=timestamp_to_proto(spec.not_before),
        idempotency_key=spec.idempotency_key,
    )


# ---- Records (server → client) ------------------------------------------------------------------


def error_to_proto(error: d.ErrorInfo | None) -> pb.ErrorInfo | None:
    if error is None:
        return None
    return pb.ErrorInfo(type=error.type, message=error.message, retryable=error.retryable, traceback=error.traceback)


def error_from_proto(message: pb.ErrorInfo) -> d.ErrorInfo:
    return d.ErrorInfo(
        type=message.type or "Error", message=message.message, retryable=message.retryable, traceback=message.traceback
    )


def attempt_to_proto(attempt: d.Attempt) -> pb.Attempt:
    return pb.Attempt(
        task_run_id=attempt.task_run_id,
        number=attempt.number,
        worker_id=attempt.worker_id,
        started_at=timestamp_to_proto(attempt.started_at),
        ended_at=timestamp_to_proto(attempt.ended_at),
        outcome=outcome_to_proto(attempt.outcome),
        output=payload_to_proto(attempt.output),
        error=error_to_proto(attempt.error),
    )


def attempt_from_proto(message: pb.Attempt) -> d.Attempt:
    return d.Attempt(
        task_run_id=message.task_run_id,
        number=message.number,
        worker_id=message.worker_id,
        started_at=timestamp_from_proto(message.started_at),
        ended_at=optional_timestamp(message, "ended_at"),
        outcome=_PROTO_TO_OUTCOME[message.outcome],
        output=optional_payload(message, "output"),
        error=error_from_proto(message.error) if message.HasField("error") else None,
    )


def task_run_to_proto(task_run: d.TaskRun) -> pb.TaskRun:
    reason, progress = task_run.reason, task_run.progress
    return pb.TaskRun(
        id=task_run.id,
        execution_id=task_run.execution_id,
        task_id=task_run.task_id,
        handler=task_run.handler,
        input=payload_to_proto(task_run.input),
        depends_on=list(task_run.depends_on),
        timeout=duration_to_proto(task_run.timeout),
        retry_policy=retry_policy_to_proto(task_run.retry_policy),
        state=task_run_state_to_proto(task_run.state),
        reason_code=reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "",
        created_at=timestamp_to_proto(task_run.created_at),
        started_at=timestamp_to_proto(task_run.started_at),
        ended_at=timestamp_to_proto(task_run.ended_at),
        updated_at=timestamp_to_proto(task_run.updated_at),
        attempts=[attempt_to_proto(attempt) for attempt in task_run.attempts],
        not_before=timestamp_to_proto(task_run.not_before),
        progress=pb.Progress(fraction=progress.fraction, message=progress.message) if progress else None,
        cancel_requested=reason_to_proto(task_run.pending_cancel),
    )


def task_run_from_proto(message: pb.TaskRun) -> d.TaskRun:
    return d.TaskRun(
        id=message.id,
        execution_id=message.execution_id,
        task_id=message.task_id,
        handler=message.handler,
        input=optional_payload(message, "input") or d.Payload(),
        depends_on=tuple(message.depends_on),
        timeout=optional_duration(message, "timeout"),
        retry_policy=retry_policy_from_proto(message.retry_policy),
        state=task_run_state_from_proto(message.state),
        reason=reason_from_proto(message.reason_code, message.reason_message),
        created_at=timestamp_from_proto(message.created_at),
        updated_at=timestamp_from_proto(message.updated_at),
        started_at=optional_timestamp(message, "started_at"),
        ended_at=optional_timestamp(message, "ended_at"),
        attempts=tuple(attempt_from_proto(attempt) for attempt in message.attempts),
        not_before=optional_timestamp(message, "not_before"),
        pending_cancel=optional_reason(message, "cancel_requested"),
        progress=(
            d.Progress(message.progress.fraction, message.progress.message) if message.HasField("progress") else None
        ),
    )


def execution_to_proto(execution: d.Execution, task_runs: Iterable[d.TaskRun]) -> pb.Execution:
    reason = execution.reason
    return pb.Execution(
        id=execution.id,
        name=execution.name,
        state=execution_state_to_proto(execution.state),
        reason_code=reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "",
        metadata=dict(execution.metadata),
        deadline=timestamp_to_proto(execution.deadline),
        idempotency_key=execution.idempotency_key,
        created_at=timestamp_to_proto(execution.created_at),
        started_at=timestamp_to_proto(execution.started_at),
        ended_at=timestamp_to_proto(execution.ended_at),
        updated_at=timestamp_to_proto(execution.updated_at),
        task_runs=[task_run_to_proto(task_run) for task_run in task_runs],
        not_before=timestamp_to_proto(execution.not_before),
        closing=_closing_to_proto(execution.closing),
    )


def _closing_to_proto(closing: d.Closing | None) -> pb.Closing | None:
    if closing is None:
        return None
    return pb.Closing(state=execution_state_to_proto(closing.state), reason=reason_to_proto(closing.reason))


def _closing_from_proto(message: pb.Execution) -> d.Closing | None:
    reason = optional_reason(message.closing, "reason") if message.HasField("closing") else None
    if reason is None:
        return None
    return d.Closing(state=execution_state_from_proto(message.closing.state), reason=reason)


def execution_from_proto(message: pb.Execution) -> tuple[d.Execution, tuple[d.TaskRun, ...]]:
    execution = d.Execution(
        id=message.id,
        name=message.name,
        state=execution_state_from_proto(message.state),
        reason=reason_from_proto(message.reason_code, message.reason_message),
        created_at=timestamp_from_proto(message.created_at),
        updated_at=timestamp_from_proto(message.updated_at),
        metadata=dict(message.metadata),
        deadline=optional_timestamp(message, "deadline"),
        not_before=optional_timestamp(message, "not_before"),
        idempotency_key=message.idempotency_key,
        started_at=optional_timestamp(message, "started_at"),
        ended_at=optional_timestamp(message, "ended_at"),
        closing=_closing_from_proto(message),
    )
    return execution, tuple(task_run_from_proto(task_run) for task_run in message.task_runs)


# ---- History events -----------------------------------------------------------------------------


def execution_transition_event(before: d.Execution, after: d.Execution) -> pb.ExecutionTransition:
    """The history entry for a change of an execution (a closing request keeps the state and names its reason)."""
    reason = after.reason or (after.closing.reason if after.closing else None)
    return pb.ExecutionTransition(
        from_state=execution_state_to_proto(before.state),
        to_state=execution_state_to_proto(after.state),
        reason_code=reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "",
    )


def execution_created_event(execution: d.Execution) -> pb.ExecutionTransition:
    """The first history entry of an execution: accepted, from no state into its first one."""
    reason = execution.reason
    return pb.ExecutionTransition(
        from_state=pb.EXECUTION_STATE_UNSPECIFIED,
        to_state=execution_state_to_proto(execution.state),
        reason_code=reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "accepted",
    )


def task_run_transition_event(before: d.TaskRun, after: d.TaskRun) -> pb.TaskRunTransition:
    """The history entry for a change of a task run, naming the attempt it concerns."""
    attempt = after.current_attempt
    ended_now = attempt is not None and not attempt.is_running and (before.current_attempt or attempt).is_running
    reason = after.reason or after.pending_cancel
    return pb.TaskRunTransition(
        task_run_id=after.id,
        task_id=after.task_id,
        from_state=task_run_state_to_proto(before.state),
        to_state=task_run_state_to_proto(after.state),
        reason_code=reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "",
        attempt=attempt.number if attempt else 0,
        worker_id=attempt.worker_id if attempt else "",
        attempt_outcome=outcome_to_proto(attempt.outcome) if attempt and ended_now else pb.ATTEMPT_OUTCOME_UNSPECIFIED,
        error=error_to_proto(attempt.error) if attempt and ended_now else None,
    )


_LOG_LEVELS: dict[int, str] = {
    pb.LOG_LEVEL_UNSPECIFIED: "INFO",
    pb.LOG_LEVEL_DEBUG: "DEBUG",
    pb.LOG_LEVEL_INFO: "INFO",
    pb.LOG_LEVEL_WARNING: "WARNING",
    pb.LOG_LEVEL_ERROR: "ERROR",
}


def log_level_name(level: int) -> str:
    return _LOG_LEVELS.get(level, "INFO")


def event_kind(event: pb.ExecutionEvent) -> str:
    return event.WhichOneof("body") or ""


def event_to_dict(event: pb.ExecutionEvent) -> dict[str, Any]:
    """The proto3 JSON form of a history event (what `taskwire watch --json` prints)."""
    return MessageToDict(event, preserving_proto_field_name=True)


def dict_to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    return ParseDict(dict(value), struct_pb2.Struct())


# ---- Errors -------------------------------------------------------------------------------------

_STATUS_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}
_ERROR_BY_STATUS: dict[grpc.StatusCode, type[d.TaskwireError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: d.ValidationError,
    grpc.StatusCode.FAILED_PRECONDITION: d.InvalidTransition,
    grpc.StatusCode.NOT_FOUND: d.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: d.IdempotencyConflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: d.QueueFull,
    grpc.StatusCode.DEADLINE_EXCEEDED: d.AdmissionTimeout,
    grpc.StatusCode.UNAVAILABLE: d.ShuttingDown,
}


def status_for(error: d.TaskwireError) -> grpc.StatusCode:
    """The gRPC status code a taskwire error is reported with."""
    return _STATUS_BY_NAME.get(error.status_name, grpc.StatusCode.INTERNAL)


def error_class_for(code: grpc.StatusCode) -> type[d.TaskwireError]:
    """The taskwire error class a client raises for a status code (TaskwireError when none fits)."""
    return _ERROR_BY_STATUS.get(code, d.TaskwireError)


def error_from_status(code: grpc.StatusCode, details: str) -> d.TaskwireError:
    """The error a client raises for a failed call: the class `error_class_for(code)`, the server's message.

    Only `message` (and, for a ValidationError, `field` and `problem`) are known on the client side; the
    other attributes of the server-side error do not cross the wire.
    """
    cls = error_class_for(code)
    error = cls.__new__(cls)
    d.TaskwireError.__init__(error, details or f"the server answered {code.name}")
    if isinstance(error, d.ValidationError):
        field, separator, problem = details.partition(": ")
        error.field, error.problem = (field, problem) if separator else ("", details)
    return error


def error_from_status_name(name: str, details: str) -> d.TaskwireError:
    """`error_from_status` for a status code given by name (SubmitResult.error_code)."""
    return error_from_status(_STATUS_BY_NAME.get(name, grpc.StatusCode.UNKNOWN), details)


def submit_result_error(error: d.TaskwireError) -> tuple[str, str]:
    """(error_code, error_message) of a failed SubmitExecutions item."""
    return status_for(error).name, error.message


def page_size(requested: int, where: str = "page_size") -> int:
    if requested < 0 or requested > 1000:
        raise d.ValidationError(where, f"must be between 0 and 1000, got {requested}")
    return requested or 50


def states_from_proto(values: Sequence[int]) -> list[d.State]:
    return [execution_state_from_proto(value, "states") for value in values]
