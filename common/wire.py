"""Where taskwire's shared values meet protobuf messages, and errors meet gRPC status codes.

The client reads records with it, the worker agent reads and writes its payloads
and errors with it, and the server (`taskwire.server.wire`) builds on it for what
only a server sends. Reading is forward compatible: an enum number this version
does not know becomes a pseudo-member (see `taskwire.common._states`) named as the
wire's descriptor names it, or `UNKNOWN(<number>)`; it never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb

from ._errors import (
    AdmissionTimeout,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    QueueFull,
    ShuttingDown,
    TaskwireError,
    Unauthenticated,
    Unimplemented,
    ValidationError,
    WatcherFellBehind,
)
from ._filters import ExecutionFilter
from ._models import (
    DEFAULT_INFRASTRUCTURE_RETRIES,
    DEFAULT_PRIORITY,
    Attempt,
    Closing,
    ErrorInfo,
    Execution,
    Progress,
    Reason,
    RetryPolicy,
    TaskRun,
)
from ._payload import JSON_CONTENT_TYPE, Payload
from ._specs import ExecutionSpec, TaskSpec
from ._states import AttemptOutcome, LogLevel, OpenEnum, ReasonCode, State

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

# ---- Scalars ------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(message: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Exact to the microsecond, and several times cheaper than Timestamp.FromDatetime."""
    since = value - _EPOCH
    message.seconds = since.days * 86_400 + since.seconds
    message.nanos = since.microseconds * 1000


def timestamp_to_proto(value: datetime | None, where: str = "time") -> timestamp_pb2.Timestamp | None:
    """None stays unset; anything but a timezone-aware datetime is a TypeError naming `where`."""
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    try:
        set_timestamp(message, value)
    except TypeError:
        got = "a naive datetime" if isinstance(value, datetime) else f"{type(value).__name__} {value!r}"
        raise TypeError(f"{where} must be a timezone-aware datetime, got {got}") from None
    return message


# The ranges protobuf defines for its well-known types (google/protobuf/duration.proto, timestamp.proto).
_MAX_DURATION_S = 315_576_000_000
_MIN_TIMESTAMP_S = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP_S = 253_402_300_799  # 9999-12-31T23:59:59Z


def timestamp_from_proto(message: timestamp_pb2.Timestamp, where: str = "timestamp") -> datetime:
    """A Timestamp as an aware datetime; a ValidationError naming `where` when it is out of protobuf's range."""
    seconds, nanos = message.seconds, message.nanos
    if not _MIN_TIMESTAMP_S <= seconds <= _MAX_TIMESTAMP_S or not 0 <= nanos <= 999_999_999:
        raise ValidationError(
            where, f"not a valid timestamp (seconds={seconds}, nanos={nanos}): years 1 to 9999, nanos 0 to 999999999"
        )
    # The same instant as `message.ToDatetime(tzinfo=UTC)` (nanoseconds truncated to microseconds), at a
    # third of its cost: an SDK's answer to a submit carries about ten timestamps.
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def optional_timestamp(parent: Any, field: str, where: str = "") -> datetime | None:
    if not parent.HasField(field):
        return None
    return timestamp_from_proto(getattr(parent, field), where or field)


def duration_to_proto(value: timedelta | None, where: str = "duration") -> duration_pb2.Duration | None:
    """None stays unset; anything but a timedelta is a TypeError naming `where` (a caller's argument)."""
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise TypeError(f"{where} must be a datetime.timedelta, got {type(value).__name__} {value!r}")
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def duration_from_proto(message: duration_pb2.Duration, where: str = "duration") -> timedelta:
    """A Duration as a timedelta, to the microsecond. Negative values pass through for validation; values
    outside protobuf's range (±10,000 years, nanos of the seconds' sign) are a ValidationError naming `where`."""
    seconds, nanos = message.seconds, message.nanos
    if (
        not -_MAX_DURATION_S <= seconds <= _MAX_DURATION_S
        or not -999_999_999 <= nanos <= 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        raise ValidationError(
            where,
            f"not a valid duration (seconds={seconds}, nanos={nanos}): at most {_MAX_DURATION_S} seconds either way, "
            "nanos of the same sign",
        )
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def optional_duration(parent: Any, field: str, where: str = "") -> timedelta | None:
    """A Duration field as a timedelta; None when unset. Errors name `where` (the field by default)."""
    if not parent.HasField(field):
        return None
    return duration_from_proto(getattr(parent, field), where or field)


def payload_to_proto(value: Payload | None) -> pb.Payload | None:
    if value is None:
        return None
    if not isinstance(value, Payload):
        raise TypeError(
            f"input must be a Payload (to_payload(value) makes one), got {type(value).__name__} {value!r:.100}"
        )
    try:
        return pb.Payload(data=value.data, content_type=value.content_type)
    except (TypeError, ValueError) as error:
        fields = {"data": value.data, "content_type": value.content_type}
        raise explained_request(error, pb.Payload, fields, prefix="input.") from None


def set_payload(message: pb.Payload, value: Payload) -> None:
    """Fill `message` in place (a submessage, set without the copy a constructor makes)."""
    message.data = value.data
    message.content_type = value.content_type


def payload_from_proto(message: pb.Payload) -> Payload:
    """An empty content type means JSON on the wire, and is spelled out here."""
    return Payload(data=message.data, content_type=message.content_type or JSON_CONTENT_TYPE)


def optional_payload(parent: Any, field: str) -> Payload | None:
    return payload_from_proto(getattr(parent, field)) if parent.HasField(field) else None


def struct_to_proto(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    """A JSON object as a Struct; None for an empty or missing one."""
    if not value:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_from_proto(message: struct_pb2.Struct) -> dict[str, Any]:
    return MessageToDict(message)


# ---- Enums --------------------------------------------------------------------------------------

E = TypeVar("E", bound=OpenEnum)
V = TypeVar("V", bound=int)
_UNKNOWN_NUMBER = re.compile(r"UNKNOWN\((-?\d+)\)")


class _EnumMapping(Generic[E, V]):
    """An open enum against its proto enum, whose value names are the members' names behind a prefix."""

    def __init__(self, enum: type[E], proto: _EnumTypeWrapper[V], prefix: str) -> None:
        self._enum = enum
        self._proto = proto
        self._prefix = prefix
        self._to_proto: dict[E, V] = {member: proto.Value(prefix + member.name) for member in enum}
        self._from_proto: dict[int, E] = {number: member for member, number in self._to_proto.items()}

    def from_proto(self, number: int) -> E:
        """The member, or a pseudo-member named by the descriptor (or by its number) for a newer value."""
        member = self._from_proto.get(number)
        if member is not None:
            return member
        try:
            name = self._proto.Name(number).removeprefix(self._prefix)  # type: ignore[arg-type]
        except ValueError:
            name = f"UNKNOWN({number})"
        return self._enum.unrecognized(name)

    def to_proto(self, member: E) -> V:
        """The wire number; a pseudo-member goes back as the number it came with."""
        number = self._to_proto.get(member)
        if number is not None:
            return number
        unknown = _UNKNOWN_NUMBER.fullmatch(member.name)
        if unknown is not None:
            return int(unknown[1])  # type: ignore[return-value]
        try:
            return self._proto.Value(self._prefix + member.name)
        except ValueError:
            raise ValueError(f"{type(member).__name__} {member.name} has no wire number") from None


_EXECUTION_STATES = _EnumMapping(State, pb.ExecutionState, "EXECUTION_STATE_")
_TASK_RUN_STATES = _EnumMapping(State, pb.TaskRunState, "TASK_RUN_STATE_")
_REASON_CODES = _EnumMapping(ReasonCode, pb.ReasonCode, "REASON_CODE_")
_OUTCOMES = _EnumMapping(AttemptOutcome, pb.AttemptOutcome, "ATTEMPT_OUTCOME_")
_LOG_LEVELS = _EnumMapping(LogLevel, pb.LogLevel, "LOG_LEVEL_")


def execution_state_to_proto(state: State) -> pb.ExecutionState.ValueType:
    return _EXECUTION_STATES.to_proto(state)


def execution_state_from_proto(value: int) -> State:
    return _EXECUTION_STATES.from_proto(value)


def task_run_state_to_proto(state: State) -> pb.TaskRunState.ValueType:
    return _TASK_RUN_STATES.to_proto(state)


def task_run_state_from_proto(value: int) -> State:
    return _TASK_RUN_STATES.from_proto(value)


def reason_code_to_proto(code: ReasonCode | None) -> pb.ReasonCode.ValueType:
    return _REASON_CODES.to_proto(code) if code is not None else pb.REASON_CODE_UNSPECIFIED


def reason_code_from_proto(value: int) -> ReasonCode | None:
    """A reason code; None for REASON_CODE_UNSPECIFIED (no reason)."""
    return _REASON_CODES.from_proto(value) if value != pb.REASON_CODE_UNSPECIFIED else None


def outcome_to_proto(outcome: AttemptOutcome) -> pb.AttemptOutcome.ValueType:
    return _OUTCOMES.to_proto(outcome)


def outcome_from_proto(value: int) -> AttemptOutcome | None:
    """An attempt outcome; None for ATTEMPT_OUTCOME_UNSPECIFIED (a transition that ended no attempt)."""
    return _OUTCOMES.from_proto(value) if value != pb.ATTEMPT_OUTCOME_UNSPECIFIED else None


def log_level_from_proto(value: int) -> LogLevel:
    """A log level; LOG_LEVEL_UNSPECIFIED is INFO."""
    return _LOG_LEVELS.from_proto(value) if value != pb.LOG_LEVEL_UNSPECIFIED else LogLevel.INFO


def reason_from_proto(code: int, message: str) -> Reason | None:
    """A reason code with its message; None for REASON_CODE_UNSPECIFIED."""
    reason = reason_code_from_proto(code)
    return Reason(reason, message) if reason is not None else None


def optional_reason(parent: Any, field: str) -> Reason | None:
    if not parent.HasField(field):
        return None
    message: pb.Reason = getattr(parent, field)
    return reason_from_proto(message.code, message.message)


# ---- Specs (client → server) --------------------------------------------------------------------


def retry_policy_from_proto(message: pb.RetryPolicy, where: str = "retry_policy") -> RetryPolicy:
    return RetryPolicy(
        max_attempts=message.max_attempts,
        initial_interval=optional_duration(message, "initial_interval", f"{where}.initial_interval")
        or RetryPolicy().initial_interval,
        backoff_coefficient=message.backoff_coefficient,
        maximum_interval=optional_duration(message, "maximum_interval", f"{where}.maximum_interval"),
        non_retryable_error_types=tuple(message.non_retryable_error_types),
        max_infrastructure_retries=message.max_infrastructure_retries
        if message.HasField("max_infrastructure_retries")
        else DEFAULT_INFRASTRUCTURE_RETRIES,
    )


# ---- A caller's values that protobuf refuses ----------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: _INT32,
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def explained_request(
    error: Exception, message_type: type[Message], fields: Mapping[str, object], *, prefix: str = ""
) -> Exception:
    """`_explained` for the fields of a message, read from its descriptor: its whole numbers, flags, bytes and
    text (fields of other kinds are left to `error`), each named `prefix` + its name."""
    by_name = message_type.DESCRIPTOR.fields_by_name
    checked: dict[str, object] = {}
    ints: dict[str, tuple[int, int]] = {}
    for name, value in fields.items():
        field, shown = by_name[name], prefix + name
        kind = field.cpp_type
        if kind == FieldDescriptor.CPPTYPE_BOOL:
            if not isinstance(value, bool):
                return TypeError(f"{shown} must be a bool, got {type(value).__name__} {value!r:.100}")
        elif field.type == FieldDescriptor.TYPE_BYTES:
            if not isinstance(value, bytes | bytearray):
                return TypeError(f"{shown} must be bytes, got {type(value).__name__} {value!r:.100}")
        elif kind in _INT_RANGES:
            checked[shown], ints[shown] = value, _INT_RANGES[kind]
        elif kind == FieldDescriptor.CPPTYPE_STRING:
            checked[shown] = value
    return _explained(error, checked, ints)


def _explained(
    error: Exception, fields: Mapping[str, object], ints: Mapping[str, tuple[int, int]] | None = None
) -> Exception:
    """Why protobuf refused a message built from a caller's values (its own words name no field): the first of
    `fields` of the wrong type, out of its wire type's range (`ints`: the range of each whole-number field; the
    others hold text) or not encodable as text, named. Worked out only once protobuf has refused, so values that
    convert pay nothing for it; `error` when no field explains it."""
    for name, value in fields.items():
        if ints is not None and name in ints:
            low, high = ints[name]
            if isinstance(value, bool) or not isinstance(value, int):
                return TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.100}")
            if not low <= value <= high:
                return ValidationError(name, f"must be between {low} and {high}, got {value}")
            continue
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        if isinstance(value, list | tuple):
            items = [(None, item) for item in value]
        for key, item in items:
            for text in (key, item) if key is not None else (item,):
                if not isinstance(text, str):
                    return TypeError(f"{name} must hold text (str), got {type(text).__name__} {text!r}")
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return ValidationError(name, f"{text[:100]!r} is not valid text (it holds a lone surrogate)")
    return error


def _strings(value: Iterable[str], name: str) -> list[str]:
    """A list of str from a caller's sequence; one str given for the list is a TypeError, not its characters."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of str, not one str ({value!r}): write [{value!r}]")
    return list(value)


def retry_policy_to_proto(policy: RetryPolicy) -> pb.RetryPolicy:
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"retry_policy must be a RetryPolicy, got {type(policy).__name__} {policy!r:.100}")
    types = _strings(policy.non_retryable_error_types, "retry_policy.non_retryable_error_types")
    try:
        return pb.RetryPolicy(
            max_attempts=policy.max_attempts,
            initial_interval=duration_to_proto(policy.initial_interval, "retry_policy.initial_interval"),
            backoff_coefficient=policy.backoff_coefficient,
            maximum_interval=duration_to_proto(policy.maximum_interval, "retry_policy.maximum_interval"),
            non_retryable_error_types=types,
            max_infrastructure_retries=policy.max_infrastructure_retries,
        )
    except (TypeError, ValueError) as error:
        fields = {
            "retry_policy.max_attempts": policy.max_attempts,
            "retry_policy.non_retryable_error_types": types,
        }
        if policy.max_infrastructure_retries is not None:
            fields["retry_policy.max_infrastructure_retries"] = policy.max_infrastructure_retries
        ints = dict.fromkeys(("retry_policy.max_attempts", "retry_policy.max_infrastructure_retries"), _INT32)
        raise _explained(error, fields, ints) from None


def task_spec_to_proto(spec: TaskSpec) -> tpb.TaskSpec:
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"an execution's tasks must be TaskSpec values, got {type(spec).__name__} {spec!r:.100}")
    depends_on = _strings(spec.depends_on, "depends_on")
    retry_policy = retry_policy_to_proto(spec.retry_policy)
    try:
        return tpb.TaskSpec(
            task_id=spec.task_id,
            handler=spec.handler,
            input=payload_to_proto(spec.input),
            depends_on=depends_on,
            timeout=duration_to_proto(spec.timeout, "timeout"),
            retry_policy=retry_policy,
            schedule_to_start_timeout=duration_to_proto(spec.schedule_to_start_timeout, "schedule_to_start_timeout"),
            priority=spec.priority,
            concurrency_key=spec.concurrency_key,
            concurrency_limit=spec.concurrency_limit,
            fairness_key=spec.fairness_key,
            rate_limit=spec.rate_limit,
            rate_limit_key=spec.rate_limit_key,
        )
    except (TypeError, ValueError) as error:
        fields = {
            "task_id": spec.task_id,
            "handler": spec.handler,
            "depends_on": depends_on,
            "priority": spec.priority,
            "concurrency_key": spec.concurrency_key,
            "concurrency_limit": spec.concurrency_limit,
            "fairness_key": spec.fairness_key,
            "rate_limit": spec.rate_limit,
            "rate_limit_key": spec.rate_limit_key,
        }
        raise _explained(error, fields, dict.fromkeys(("priority", "concurrency_limit"), _INT32)) from None


def execution_filter_to_proto(selection: ExecutionFilter) -> tpb.ExecutionFilter:
    for state in selection.states:
        if not isinstance(state, State):
            raise TypeError(f"the filter's states must be State values (State.FAILED), got {state!r}")
    return tpb.ExecutionFilter(
        states=[execution_state_to_proto(state) for state in selection.states],
        handler=selection.handler,
        labels=dict(selection.labels),
        created_after=timestamp_to_proto(selection.created_after, "created_after"),
        created_before=timestamp_to_proto(selection.created_before, "created_before"),
    )


def execution_spec_to_proto(spec: ExecutionSpec) -> tpb.ExecutionSpec:
    tasks = [task_spec_to_proto(task) for task in spec.tasks]
    try:
        return tpb.ExecutionSpec(
            name=spec.name,
            tasks=tasks,
            metadata=dict(spec.metadata),
            timeout=duration_to_proto(spec.timeout, "execution_timeout"),
            not_before=timestamp_to_proto(spec.not_before, "not_before"),
            idempotency_key=spec.idempotency_key,
            trace_context=dict(spec.trace_context),
        )
    except (TypeError, ValueError) as error:
        fields = {"name": spec.name, "metadata": spec.metadata, "key": spec.idempotency_key}
        raise _explained(error, fields) from None


# ---- Records (server → client) ------------------------------------------------------------------


def error_to_proto(error: ErrorInfo | None) -> pb.ErrorInfo | None:
    if error is None:
        return None
    return pb.ErrorInfo(
        type=error.type,
        message=error.message,
        retryable=error.retryable,
        traceback=error.traceback,
        retry_after=duration_to_proto(error.retry_after),
    )


def error_from_proto(message: pb.ErrorInfo) -> ErrorInfo:
    return ErrorInfo(
        type=message.type or "Error",
        message=message.message,
        retryable=message.retryable,
        traceback=message.traceback,
        retry_after=optional_duration(message, "retry_after"),
    )


def attempt_from_proto(message: pb.Attempt) -> Attempt:
    return Attempt(
        task_run_id=message.task_run_id,
        number=message.number,
        worker_id=message.worker_id,
        started_at=timestamp_from_proto(message.started_at),
        ended_at=optional_timestamp(message, "ended_at"),
        outcome=_OUTCOMES.from_proto(message.outcome),
        output=optional_payload(message, "output"),
        error=error_from_proto(message.error) if message.HasField("error") else None,
    )


def task_run_from_proto(message: pb.TaskRun) -> TaskRun:
    return TaskRun(
        id=message.id,
        execution_id=message.execution_id,
        task_id=message.task_id,
        handler=message.handler,
        input=optional_payload(message, "input") or Payload(),
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
            Progress(message.progress.fraction, message.progress.message) if message.HasField("progress") else None
        ),
        schedule_to_start_timeout=optional_duration(message, "schedule_to_start_timeout"),
        priority=message.priority or DEFAULT_PRIORITY,
        concurrency_key=message.concurrency_key,
        concurrency_limit=message.concurrency_limit,
        fairness_key=message.fairness_key,
        rate_limit=message.rate_limit,
        rate_limit_key=message.rate_limit_key,
    )


def _closing_from_proto(message: pb.Execution) -> Closing | None:
    reason = optional_reason(message.closing, "reason") if message.HasField("closing") else None
    if reason is None:
        return None
    return Closing(state=execution_state_from_proto(message.closing.state), reason=reason)


def execution_from_proto(message: pb.Execution) -> tuple[Execution, tuple[TaskRun, ...]]:
    execution = Execution(
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
        trace_context=dict(message.trace_context),
    )
    return execution, tuple(task_run_from_proto(task_run) for task_run in message.task_runs)


# ---- Errors -------------------------------------------------------------------------------------

_STATUS_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}
_ERROR_BY_STATUS: dict[grpc.StatusCode, type[TaskwireError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidTransition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.ALREADY_EXISTS: IdempotencyConflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QueueFull,
    grpc.StatusCode.DEADLINE_EXCEEDED: AdmissionTimeout,
    grpc.StatusCode.UNAVAILABLE: ShuttingDown,
    grpc.StatusCode.ABORTED: WatcherFellBehind,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def status_for(error: TaskwireError) -> grpc.StatusCode:
    """The gRPC status code a taskwire error is reported with."""
    return _STATUS_BY_NAME.get(error.status_name, grpc.StatusCode.INTERNAL)


def error_class_for(code: grpc.StatusCode) -> type[TaskwireError]:
    """The taskwire error class a client raises for a status code (TaskwireError when none fits)."""
    return _ERROR_BY_STATUS.get(code, TaskwireError)


def error_from_status(code: grpc.StatusCode, details: str) -> TaskwireError:
    """The error a client raises for a failed call: the class `error_class_for(code)`, the server's message.

    Only `message` (and, for a ValidationError, `field` and `problem`) are known on the client side; the
    other attributes of the server-side error do not cross the wire.
    """
    cls = error_class_for(code)
    error = cls.__new__(cls)
    TaskwireError.__init__(error, details or f"the server answered {code.name}")
    if isinstance(error, ValidationError):
        field, separator, problem = details.partition(": ")
        error.field, error.problem = (field, problem) if separator else ("", details)
    return error


def error_from_status_name(name: str, details: str) -> TaskwireError:
    """`error_from_status` for a status code given by name (SubmitResult.error_code)."""
    return error_from_status(_STATUS_BY_NAME.get(name, grpc.StatusCode.UNKNOWN), details)
