"""Messages filled in place (the invocation, the history entries) are the messages built whole.

Each is written field by field into its parent's submessage, rather than built with a constructor and copied
into the parent; these tests build the same message the whole way, from the records, and compare: a history
entry's bytes (the store keeps them), an invocation as a message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from taskwire.server import wire
from taskwire.server._history_wire import ProtoHistoryCodec
from taskwire.server._worker_wire import StreamLink
from taskwire.server.domain import Attempt, Execution, Payload, TaskRun
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb
from tests.unit.server.test_wire import _wire_safe
from tests.unit.store.records import executions, task_runs

T = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _execution_event(execution_id: str, sequence: int, before: Execution | None, after: Execution) -> bytes:
    if before is None:
        reason = after.reason
        body = pb.ExecutionTransition(
            from_state=pb.EXECUTION_STATE_UNSPECIFIED,
            to_state=wire.execution_state_to_proto(after.state),
            reason_code=wire.reason_code_to_proto(reason.code if reason else None),
            reason_message=reason.message if reason else "accepted",
        )
    else:
        reason = after.reason or (after.closing.reason if after.closing else None)
        body = pb.ExecutionTransition(
            from_state=wire.execution_state_to_proto(before.state),
            to_state=wire.execution_state_to_proto(after.state),
            reason_code=wire.reason_code_to_proto(reason.code if reason else None),
            reason_message=reason.message if reason else "",
        )
    event = pb.ExecutionEvent(
        execution_id=execution_id, sequence=sequence, time=wire.timestamp_to_proto(T), execution_transition=body
    )
    return event.SerializeToString()


def _task_run_event(execution_id: str, sequence: int, before: TaskRun, after: TaskRun) -> bytes:
    attempt = after.current_attempt
    body = pb.TaskRunTransition(
        task_run_id=after.id,
        task_id=after.task_id,
        from_state=wire.task_run_state_to_proto(before.state),
        to_state=wire.task_run_state_to_proto(after.state),
    )
    reason = after.reason or after.pending_cancel
    if reason is not None:
        body.reason_code = wire.reason_code_to_proto(reason.code)
        body.reason_message = reason.message
    if attempt is not None:
        body.attempt = attempt.number
        body.worker_id = attempt.worker_id
        if not attempt.is_running and (before.current_attempt or attempt).is_running:
            body.attempt_outcome = wire.outcome_to_proto(attempt.outcome)
            error = wire.error_to_proto(attempt.error)
            if error is not None:
                body.error.CopyFrom(error)
    event = pb.ExecutionEvent(
        execution_id=execution_id, sequence=sequence, time=wire.timestamp_to_proto(T), task_run_transition=body
    )
    return event.SerializeToString()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.none() | executions(), executions(), st.integers(1, 2**62))
def test_an_execution_transition_is_the_message_built_whole(
    before: Execution | None, after: Execution, sequence: int
) -> None:
    codec = ProtoHistoryCodec()
    written = codec.execution_transition(after.id, sequence, T, before, after)
    assert written == _execution_event(after.id, sequence, before, after)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(task_runs(), task_runs(), st.integers(1, 2**62))
def test_a_task_run_transition_is_the_message_built_whole(before: TaskRun, after: TaskRun, sequence: int) -> None:
    before, after = _wire_safe(before), _wire_safe(after)
    written = ProtoHistoryCodec().task_run_transition(after.execution_id, sequence, T, before, after)
    assert written == _task_run_event(after.execution_id, sequence, before, after)


def _invocation(
    task_run: TaskRun,
    attempt: Attempt,
    dispatch: int,
    queued_at: datetime,
    trace_context: dict[str, str],
    upstream: dict[str, Payload],
) -> wpb.ServerMessage:
    timeout = task_run.timeout
    return wpb.ServerMessage(
        invocation=wpb.Invocation(
            ref=wpb.AttemptRef(task_run_id=task_run.id, attempt=attempt.number),
            execution_id=task_run.execution_id,
            task_id=task_run.task_id,
            handler=task_run.handler,
            input=wire.payload_to_proto(task_run.input),
            timeout=wire.duration_to_proto(timeout),
            deadline=wire.timestamp_to_proto(attempt.started_at + timeout if timeout else None),
            dispatch=dispatch,
            trace_context=trace_context,
            queued_at=wire.timestamp_to_proto(queued_at),
            upstream_outputs={
                task_id: pb.Payload(data=output.data, content_type=output.content_type)
                for task_id, output in upstream.items()
            },
        )
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    task_runs(),
    st.sampled_from([None, timedelta(0), timedelta(seconds=30), timedelta(days=2, microseconds=7)]),
    st.integers(1, 2**31 - 1),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
    st.dictionaries(st.text(max_size=8), st.builds(Payload, st.binary(max_size=16), st.text(max_size=8)), max_size=2),
)
async def test_an_invocation_is_the_message_built_whole(
    task_run: TaskRun,
    task_timeout: timedelta | None,
    dispatch: int,
    trace_context: dict[str, str],
    upstream: dict[str, Payload],
) -> None:
    task_run = _wire_safe(task_run)
    task_run = TaskRun(**{**{f: getattr(task_run, f) for f in TaskRun.__slots__}, "timeout": task_timeout})
    attempt = Attempt(task_run.id, 3, "worker-1", T)
    link = StreamLink()
    link.invoke(task_run, attempt, dispatch, queued_at=T, trace_context=trace_context, upstream=upstream)
    frame = await anext(link.frames())
    expected = _invocation(task_run, attempt, dispatch, T, trace_context, upstream)
    assert frame == wpb.ConnectResponse(messages=[expected])  # equal as messages: a map's entries have no order


def _attempt_whole(attempt: Attempt) -> pb.Attempt:
    return pb.Attempt(
        task_run_id=attempt.task_run_id,
        number=attempt.number,
        worker_id=attempt.worker_id,
        outcome=wire.outcome_to_proto(attempt.outcome),
        output=wire.payload_to_proto(attempt.output),
        error=wire.error_to_proto(attempt.error),
        started_at=wire.timestamp_to_proto(attempt.started_at),
        ended_at=wire.timestamp_to_proto(attempt.ended_at),
    )


def _task_run_whole(task_run: TaskRun) -> pb.TaskRun:
    reason, progress = task_run.reason, task_run.progress
    return pb.TaskRun(
        id=task_run.id,
        execution_id=task_run.execution_id,
        task_id=task_run.task_id,
        handler=task_run.handler,
        input=wire.payload_to_proto(task_run.input),
        retry_policy=wire.retry_policy_to_proto(task_run.retry_policy),
        state=wire.task_run_state_to_proto(task_run.state),
        priority=task_run.priority,
        timeout=wire.duration_to_proto(task_run.timeout),
        cancel_requested=wire.reason_to_proto(task_run.pending_cancel),
        schedule_to_start_timeout=wire.duration_to_proto(task_run.schedule_to_start_timeout),
        created_at=wire.timestamp_to_proto(task_run.created_at),
        updated_at=wire.timestamp_to_proto(task_run.updated_at),
        started_at=wire.timestamp_to_proto(task_run.started_at),
        ended_at=wire.timestamp_to_proto(task_run.ended_at),
        not_before=wire.timestamp_to_proto(task_run.not_before),
        reason_code=wire.reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "",
        depends_on=task_run.depends_on,
        attempts=[_attempt_whole(attempt) for attempt in task_run.attempts],
        progress=pb.Progress(fraction=progress.fraction, message=progress.message) if progress else None,
        concurrency_key=task_run.concurrency_key,
        concurrency_limit=task_run.concurrency_limit,
        fairness_key=task_run.fairness_key,
        rate_limit=task_run.rate_limit,
        rate_limit_key=task_run.rate_limit_key,
    )


def _execution_whole(execution: Execution, task_runs: list[TaskRun]) -> pb.Execution:
    reason, closing = execution.reason, execution.closing
    return pb.Execution(
        id=execution.id,
        name=execution.name,
        state=wire.execution_state_to_proto(execution.state),
        task_runs=[_task_run_whole(task_run) for task_run in task_runs],
        closing=pb.Closing(
            state=wire.execution_state_to_proto(closing.state), reason=wire.reason_to_proto(closing.reason)
        )
        if closing
        else None,
        created_at=wire.timestamp_to_proto(execution.created_at),
        updated_at=wire.timestamp_to_proto(execution.updated_at),
        started_at=wire.timestamp_to_proto(execution.started_at),
        ended_at=wire.timestamp_to_proto(execution.ended_at),
        not_before=wire.timestamp_to_proto(execution.not_before),
        deadline=wire.timestamp_to_proto(execution.deadline),
        reason_code=wire.reason_code_to_proto(reason.code if reason else None),
        reason_message=reason.message if reason else "",
        metadata=execution.metadata,
        idempotency_key=execution.idempotency_key,
        trace_context=execution.trace_context,
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(executions(), st.lists(task_runs(), max_size=3))
def test_an_execution_is_the_message_built_whole(execution: Execution, runs: list[TaskRun]) -> None:
    runs = [_wire_safe(task_run) for task_run in runs]
    assert wire.execution_to_proto(execution, runs) == _execution_whole(execution, runs)
    response = tpb.SubmitExecutionResponse()
    wire.fill_execution(response.execution, execution, runs)  # straight into the field of its parent
    assert response == tpb.SubmitExecutionResponse(execution=_execution_whole(execution, runs))
