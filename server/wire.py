"""What only a server sends and reads on the wire, over the shared converter `taskwire.common.wire`.

Records and history entries become protobuf messages here, specs and request
fields are read strictly (a bad value is a ValidationError naming its field), and
errors become statuses. The shared conversions are re-exported, so the server has
one module to import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from taskwire.common.wire import (
    duration_to_proto,
    error_class_for,
    error_from_proto,
    error_from_status,
    error_from_status_name,
    error_to_proto,
    execution_from_proto,
    execution_state_from_proto,
    execution_state_to_proto,
    optional_duration,
    optional_payload,
    optional_reason,
    optional_timestamp,
    outcome_from_proto,
    outcome_to_proto,
    payload_from_proto,
    payload_to_proto,
    reason_code_from_proto,
    reason_code_to_proto,
    reason_from_proto,
    retry_policy_from_proto,
    retry_policy_to_proto,
    set_payload,
    set_timestamp,
    status_for,
    struct_from_proto,
    struct_to_proto,
    task_run_from_proto,
    task_run_state_from_proto,
    task_run_state_to_proto,
    timestamp_from_proto,
    timestamp_to_proto,
)
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb

from . import domain as d

__all__ = [
    "PAGE_BUDGET_BYTES",
    "attempt_to_proto",
    "cancel_reason_to_proto",
    "duration_to_proto",
    "error_class_for",
    "error_from_proto",
    "error_from_status",
    "error_from_status_name",
    "error_to_proto",
    "execution_from_proto",
    "execution_spec_from_proto",
    "execution_state_from_proto",
    "execution_state_to_proto",
    "execution_to_proto",
    "fill_attempt",
    "fill_execution",
    "fill_execution_created",
    "fill_execution_transition",
    "fill_task_run",
    "fill_task_run_transition",
    "fitting",
    "optional_duration",
    "optional_payload",
    "optional_reason",
    "optional_timestamp",
    "outcome_from_proto",
    "outcome_to_proto",
    "page_size",
    "payload_from_proto",
    "payload_to_proto",
    "reason_code_from_proto",
    "reason_code_to_proto",
    "reason_from_proto",
    "reason_to_proto",
    "retry_policy_from_proto",
    "retry_policy_to_proto",
    "set_payload",
    "set_timestamp",
    "states_from_proto",
    "status_for",
    "struct_from_proto",
    "struct_to_proto",
    "submit_result_error",
    "task_run_from_proto",
    "task_run_state_from_proto",
    "task_run_state_to_proto",
    "task_run_to_proto",
    "task_spec_from_proto",
    "timestamp_from_proto",
    "timestamp_to_proto",
]

_CANCEL_REASON = {
    d.ReasonCode.CANCEL_REQUESTED: wpb.CANCEL_REASON_REQUESTED,
    d.ReasonCode.EXECUTION_CANCELLED: wpb.CANCEL_REASON_REQUESTED,
    d.ReasonCode.TIMED_OUT: wpb.CANCEL_REASON_TIMED_OUT,
    d.ReasonCode.EXECUTION_TIMED_OUT: wpb.CANCEL_REASON_EXECUTION_TIMED_OUT,
    d.ReasonCode.UPSTREAM_FAILED: wpb.CANCEL_REASON_UPSTREAM_FAILED,
    # The server does not hold the attempt for this worker: stop it and report nothing.
    d.ReasonCode.LEASE_EXPIRED: wpb.CANCEL_REASON_LEASE_LOST,
}


def cancel_reason_to_proto(code: d.ReasonCode) -> wpb.CancelReason.ValueType:
    return _CANCEL_REASON.get(code, wpb.CANCEL_REASON_REQUESTED)


def reason_to_proto(reason: d.Reason | None) -> pb.Reason | None:
    return pb.Reason(code=reason_code_to_proto(reason.code), message=reason.message) if reason else None


# ---- Requests (client → server) -----------------------------------------------------------------


def task_spec_from_proto(message: tpb.TaskSpec, where: str = "task") -> d.TaskSpec:
    """A task spec; an out-of-range Duration is a ValidationError naming its path under `where`."""
    return d.TaskSpec(
        task_id=message.task_id,
        handler=message.handler,
        input=optional_payload(message, "input") or d.Payload(),
        depends_on=tuple(message.depends_on),
        timeout=optional_duration(message, "timeout", f"{where}.timeout"),
        retry_policy=retry_policy_from_proto(message.retry_policy, f"{where}.retry_policy")
        if message.HasField("retry_policy")
        else d.RetryPolicy(),
        schedule_to_start_timeout=optional_duration(
            message, "schedule_to_start_timeout", f"{where}.schedule_to_start_timeout"
        ),
        priority=message.priority or d.DEFAULT_PRIORITY,
        concurrency_key=message.concurrency_key,
        concurrency_limit=message.concurrency_limit,
        fairness_key=message.fairness_key,
        rate_limit=message.rate_limit,
        rate_limit_key=message.rate_limit_key,
    )


def execution_spec_from_proto(message: tpb.ExecutionSpec, where: str = "execution") -> d.ExecutionSpec:
    """An execution spec; an out-of-range Duration or Timestamp is a ValidationError naming its path."""
    return d.ExecutionSpec(
        tasks=tuple(task_spec_from_proto(task, f"{where}.tasks[{index}]") for index, task in enumerate(message.tasks)),
        name=message.name,
        metadata=dict(message.metadata),
        timeout=optional_duration(message, "timeout", f"{where}.timeout"),
        not_before=optional_timestamp(message, "not_before", f"{where}.not_before"),
        idempotency_key=message.idempotency_key,
        trace_context=dict(message.trace_context),
    )


def execution_filter_from_proto(message: tpb.ExecutionFilter, where: str = "filter") -> d.ExecutionFilter:
    """A bulk action's filter; ValidationError naming the field when empty or out of range."""
    selection = d.ExecutionFilter(
        states=tuple(states_from_proto(message.states, f"{where}.states")),
        handler=message.handler,
        labels=dict(message.labels),
        created_after=optional_timestamp(message, "created_after", f"{where}.created_after"),
        created_before=optional_timestamp(message, "created_before", f"{where}.created_before"),
    )
    selection.check(where)
    return selection


def page_size(requested: int, where: str = "page_size") -> int:
    if requested < 0 or requested > 1000:
        raise d.ValidationError(where, f"must be between 0 and 1000, got {requested}")
    return requested or 50


def states_from_proto(values: Sequence[int], where: str = "states") -> list[d.State]:
    """The states of a list filter; a number this server does not know is refused."""
    states = [execution_state_from_proto(value) for value in values]
    for value, state in zip(values, states, strict=True):
        if not state.is_known:
            raise d.ValidationError(where, f"unknown execution state {value}")
    return states


# ---- Records (server → client) ------------------------------------------------------------------


# Records become messages with only the fields that hold something set: a message constructor pays for
# every keyword it is given, an empty string, list or zero as much as a value (a None submessage costs
# little). Timestamps are written into their fields in place, with no message of their own to copy.


# Records to messages: each is filled in place, into a new message or straight into the field of its parent
# that carries it (a message given to a constructor, or to CopyFrom, is copied whole; an answer carries an
# execution, its task runs and their attempts).


def attempt_to_proto(attempt: d.Attempt) -> pb.Attempt:
    message = pb.Attempt()
    fill_attempt(message, attempt)
    return message


def fill_attempt(message: pb.Attempt, attempt: d.Attempt) -> None:
    message.task_run_id = attempt.task_run_id
    message.number = attempt.number
    message.worker_id = attempt.worker_id
    message.outcome = outcome_to_proto(attempt.outcome)
    if attempt.output is not None:
        set_payload(message.output, attempt.output)
    if (error := error_to_proto(attempt.error)) is not None:
        message.error.CopyFrom(error)
    set_timestamp(message.started_at, attempt.started_at)
    if attempt.ended_at is not None:
        set_timestamp(message.ended_at, attempt.ended_at)


# Most task runs share a few policies (the default above all): each one's message is built once, and copied
# into every TaskRun message that carries it.
_policy_message = lru_cache(maxsize=64)(retry_policy_to_proto)


def _set_times_and_reason(message: pb.TaskRun | pb.Execution, record: d.TaskRun | d.Execution) -> None:
    """What a task run and an execution share: their times, and the reason for their state (set only when there)."""
    set_timestamp(message.created_at, record.created_at)
    set_timestamp(message.updated_at, record.updated_at)
    reason = record.reason
    if reason is not None:
        message.reason_code = reason_code_to_proto(reason.code)
        message.reason_message = reason.message
    if record.started_at is not None:
        set_timestamp(message.started_at, record.started_at)
    if record.ended_at is not None:
        set_timestamp(message.ended_at, record.ended_at)
    if record.not_before is not None:
        set_timestamp(message.not_before, record.not_before)


def task_run_to_proto(task_run: d.TaskRun) -> pb.TaskRun:
    message = pb.TaskRun()
    fill_task_run(message, task_run)
    return message


def fill_task_run(message: pb.TaskRun, task_run: d.TaskRun) -> None:
    message.id = task_run.id
    message.execution_id = task_run.execution_id
    message.task_id = task_run.task_id
    message.handler = task_run.handler
    set_payload(message.input, task_run.input)
    message.retry_policy.CopyFrom(_policy_message(task_run.retry_policy))
    message.state = task_run_state_to_proto(task_run.state)
    message.priority = task_run.priority
    if task_run.timeout is not None:
        message.timeout.FromTimedelta(task_run.timeout)
    if (cancel := task_run.pending_cancel) is not None:
        message.cancel_requested.code = reason_code_to_proto(cancel.code)
        message.cancel_requested.message = cancel.message
    if task_run.schedule_to_start_timeout is not None:
        message.schedule_to_start_timeout.FromTimedelta(task_run.schedule_to_start_timeout)
    _set_times_and_reason(message, task_run)
    if task_run.depends_on:
        message.depends_on.extend(task_run.depends_on)
    for attempt in task_run.attempts:
        fill_attempt(message.attempts.add(), attempt)
    progress = task_run.progress
    if progress is not None:
        message.progress.fraction = progress.fraction
        message.progress.message = progress.message
    if task_run.concurrency_key:
        message.concurrency_key = task_run.concurrency_key
    if task_run.concurrency_limit:
        message.concurrency_limit = task_run.concurrency_limit
    if task_run.fairness_key:
        message.fairness_key = task_run.fairness_key
    if task_run.rate_limit:
        message.rate_limit = task_run.rate_limit
    if task_run.rate_limit_key:
        message.rate_limit_key = task_run.rate_limit_key


# A page of executions (ListExecutions, WaitExecutions) stays within what any gRPC client accepts by default
# (4 MiB), less room for everything but the executions; one execution larger than that is still sent, alone.
PAGE_BUDGET_BYTES = 4 * 1024 * 1024 - 64 * 1024


def fitting(executions: Sequence[pb.Execution], budget_bytes: int) -> int:
    """How many of the executions, from the first, fit in a response of `budget_bytes` (at least one)."""
    total = 0
    for index, execution in enumerate(executions):
        total += execution.ByteSize() + 8  # field tag and length prefix
        if total > budget_bytes:
            return max(index, 1)
    return len(executions)


def execution_to_proto(execution: d.Execution, task_runs: Iterable[d.TaskRun]) -> pb.Execution:
    message = pb.Execution()
    fill_execution(message, execution, task_runs)
    return message


def fill_execution(message: pb.Execution, execution: d.Execution, task_runs: Iterable[d.TaskRun]) -> None:
    message.id = execution.id
    message.name = execution.name
    message.state = execution_state_to_proto(execution.state)
    for task_run in task_runs:
        fill_task_run(message.task_runs.add(), task_run)
    if (closing := execution.closing) is not None:
        message.closing.state = execution_state_to_proto(closing.state)
        message.closing.reason.code = reason_code_to_proto(closing.reason.code)
        message.closing.reason.message = closing.reason.message
    _set_times_and_reason(message, execution)
    if execution.metadata:
        message.metadata.update(execution.metadata)
    if execution.deadline is not None:
        set_timestamp(message.deadline, execution.deadline)
    if execution.idempotency_key:
        message.idempotency_key = execution.idempotency_key
    if execution.trace_context:
        message.trace_context.update(execution.trace_context)


# ---- History events -----------------------------------------------------------------------------


# The history entries fill a message in place (the event's own submessage: a submessage given to a
# constructor is copied, and a task makes about five entries).


def fill_execution_transition(message: pb.ExecutionTransition, before: d.Execution, after: d.Execution) -> None:
    """The history entry for a change of an execution (a closing request keeps the state and names its reason)."""
    reason = after.reason or (after.closing.reason if after.closing else None)
    message.from_state = execution_state_to_proto(before.state)
    message.to_state = execution_state_to_proto(after.state)
    message.reason_code = reason_code_to_proto(reason.code if reason else None)
    message.reason_message = reason.message if reason else ""


def fill_execution_created(message: pb.ExecutionTransition, execution: d.Execution) -> None:
    """The first history entry of an execution: accepted, from no state into its first one."""
    reason = execution.reason
    message.from_state = pb.EXECUTION_STATE_UNSPECIFIED
    message.to_state = execution_state_to_proto(execution.state)
    message.reason_code = reason_code_to_proto(reason.code if reason else None)
    message.reason_message = reason.message if reason else "accepted"


def fill_task_run_transition(message: pb.TaskRunTransition, before: d.TaskRun, after: d.TaskRun) -> None:
    """The history entry for a change of a task run, naming the attempt it concerns."""
    attempt = after.current_attempt
    message.task_run_id = after.id
    message.task_id = after.task_id
    message.from_state = task_run_state_to_proto(before.state)
    message.to_state = task_run_state_to_proto(after.state)
    reason = after.reason or after.pending_cancel
    if reason is not None:
        message.reason_code = reason_code_to_proto(reason.code)
        message.reason_message = reason.message
    if attempt is not None:
        message.attempt = attempt.number
        message.worker_id = attempt.worker_id
        if not attempt.is_running and (before.current_attempt or attempt).is_running:  # it ended now
            message.attempt_outcome = outcome_to_proto(attempt.outcome)
            error = error_to_proto(attempt.error)
            if error is not None:
                message.error.CopyFrom(error)


# ---- Errors -------------------------------------------------------------------------------------


def submit_result_error(error: d.TaskwireError) -> tuple[str, str]:
    """(error_code, error_message) of a failed SubmitExecutions item."""
    return status_for(error).name, error.message
