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
