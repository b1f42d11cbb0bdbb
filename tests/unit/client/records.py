"""Domain records and proto messages for the client tests, built directly (their constructors check invariants)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from taskwire import common as d
from taskwire.client import ExecutionSnapshot, TaskProgress, WorkerInfo
from taskwire.server import wire
from taskwire.v1 import types_pb2 as pb

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def json_payload(value: Any) -> d.Payload:
    return d.Payload(data=json.dumps(value).encode())


def task_run(
    task_id: str = "main",
    *,
    execution_id: str = "ex-1",
    handler: str = "echo",
    state: d.State = d.State.SUCCESS,
    output: Any = None,
    error: d.ErrorInfo | None = None,
    worker_id: str = "worker-1",
) -> d.TaskRun:
    """A task run in `state`, with one attempt when it got as far as a worker."""
    reasons = {
        d.State.SUCCESS: d.Reason(d.ReasonCode.COMPLETED, "completed on attempt 1"),
        d.State.FAILED: d.Reason(d.ReasonCode.HANDLER_ERROR, "attempt 1 failed"),
        d.State.CANCELLED: d.Reason(d.ReasonCode.EXECUTION_CANCELLED, "the execution was cancelled"),
        d.State.WAITING: d.Reason(d.ReasonCode.DEPENDENCIES, "waiting for 'a'"),
    }
    attempts: tuple[d.Attempt, ...] = ()
    if state is d.State.RUNNING:
        attempts = (d.Attempt(task_run_id=f"tr-{task_id}", number=1, worker_id=worker_id, started_at=at(1)),)
    elif state is d.State.SUCCESS:
        attempts = (
            d.Attempt(
                task_run_id=f"tr-{task_id}",
                number=1,
                worker_id=worker_id,
                started_at=at(1),
                outcome=d.AttemptOutcome.SUCCEEDED,
                ended_at=at(2),
                output=json_payload(output),
            ),
        )
    elif state is d.State.FAILED:
        attempts = (
            d.Attempt(
                task_run_id=f"tr-{task_id}",
                number=1,
                worker_id=worker_id,
                started_at=at(1),
                outcome=d.AttemptOutcome.FAILED,
                ended_at=at(2),
                error=error or d.ErrorInfo(type="ValueError", message="boom", retryable=False),
            ),
        )
    started = at(1) if attempts else None
    return d.TaskRun(
        id=f"tr-{task_id}",
        execution_id=execution_id,
        task_id=task_id,
        handler=handler,
        input=json_payload({"n": 1}),
        depends_on=("a",) if state is d.State.WAITING else (),
        timeout=timedelta(seconds=30),
        retry_policy=d.RetryPolicy(),
        state=state,
        reason=reasons.get(state),
        created_at=at(0),
        updated_at=at(2),
        started_at=started,
        ended_at=at(2) if state.is_terminal else None,
        attempts=attempts,
    )


def execution(
    state: d.State = d.State.SUCCESS,
    *,
    execution_id: str = "ex-1",
    name: str = "echo",
    reason: d.Reason | None = None,
    metadata: dict[str, str] | None = None,
) -> d.Execution:
    default_reasons = {
        d.State.SUCCESS: d.Reason(d.ReasonCode.COMPLETED, "every task succeeded"),
        d.State.FAILED: d.Reason(d.ReasonCode.HANDLER_ERROR, "task 'main' failed: ValueError: boom"),
        d.State.CANCELLED: d.Reason(d.ReasonCode.CANCEL_REQUESTED, "stop it"),
    }
    return d.Execution(
        id=execution_id,
        name=name,
        state=state,
        reason=reason or default_reasons.get(state),
        created_at=at(0),
        updated_at=at(2),
        metadata=metadata or {},
        started_at=at(1) if state is not d.State.PENDING else None,
        ended_at=at(2) if state.is_terminal else None,
    )


def snapshot(state: d.State = d.State.SUCCESS, *runs: d.TaskRun, execution_id: str = "ex-1") -> ExecutionSnapshot:
    runs = runs or (task_run(state=state, execution_id=execution_id, output={"ok": True}),)
    return ExecutionSnapshot(execution=execution(state, execution_id=execution_id), task_runs=runs)


def execution_proto(value: ExecutionSnapshot) -> pb.Execution:
    return wire.execution_to_proto(value.execution, value.task_runs)


def event(sequence: int, **body: Any) -> pb.ExecutionEvent:
    """A history entry with one body field set, e.g. `event(3, log=pb.TaskLog(...))`."""
    return pb.ExecutionEvent(execution_id="ex-1", sequence=sequence, time=wire.timestamp_to_proto(at(sequence)), **body)


def worker_info(*, agent_version: str = "taskwire-worker/0.1", draining: bool = False) -> WorkerInfo:
    """Worker `w1` (session s1) serving echo and sleep, one of its four slots busy."""
    return WorkerInfo(
        session_id="s1",
        instance_id="i1",
        name="w1",
        handlers=("echo", "sleep"),
        slots=4,
        in_flight=1,
        labels={"zone": "a"},
        agent_version=agent_version,
        connected_at=at(0),
        last_seen_at=at(5),
        draining=draining,
        lease_timeout=timedelta(seconds=30),
    )


def task_progress(
    sequence: int, *, fraction: float, message: str, details: dict[str, Any] | None = None
) -> TaskProgress:
    """Progress of attempt 1 of task `main` (task run tr-1) of ex-1, recorded at `at(sequence)`."""
    return TaskProgress(
        execution_id="ex-1",
        sequence=sequence,
        time=at(sequence),
        task_run_id="tr-1",
        task_id="main",
        attempt=1,
        fraction=fraction,
        message=message,
        details=details or {},
    )
