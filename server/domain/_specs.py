"""The records a validated spec creates: the server's side of a submit.

The specs themselves and their validation live in `taskwire.common` (a client
may validate too); only the server makes records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from taskwire.common import Execution, ExecutionSpec, Reason, ReasonCode, State, TaskRun


def create_execution(
    spec: ExecutionSpec, *, execution_id: str, task_run_ids: Sequence[str], now: datetime
) -> tuple[Execution, tuple[TaskRun, ...]]:
    """The records of a new execution from a validated spec, all stamped `now`.

    A spec with a future not_before makes the execution and its root tasks
    WAITING(SCHEDULED); tasks with dependencies start WAITING(DEPENDENCIES);
    the rest are PENDING.
    """
    assert len(task_run_ids) == len(spec.tasks)
    not_before = spec.not_before if spec.not_before is not None and spec.not_before > now else None
    scheduled = not_before is not None
    schedule_reason = Reason(ReasonCode.SCHEDULED, f"scheduled for {not_before.isoformat()}") if not_before else None
    execution = Execution(
        id=execution_id,
        name=spec.name,
        state=State.WAITING if scheduled else State.PENDING,
        reason=schedule_reason,
        created_at=now,
        updated_at=now,
        metadata=dict(spec.metadata),
        deadline=now + spec.timeout if spec.timeout is not None else None,
        not_before=spec.not_before if scheduled else None,
        idempotency_key=spec.idempotency_key,
        trace_context=dict(spec.trace_context),
    )
    task_runs = []
    for task_run_id, task in zip(task_run_ids, spec.tasks, strict=True):
        state, reason, not_before = State.PENDING, None, None
        if task.depends_on:
            waiting_for = ", ".join(repr(d) for d in task.depends_on)
            state, reason = State.WAITING, Reason(ReasonCode.DEPENDENCIES, f"waiting for {waiting_for}")
        elif scheduled:
            state, reason, not_before = State.WAITING, schedule_reason, spec.not_before
        task_runs.append(
            TaskRun(
                id=task_run_id,
                execution_id=execution_id,
                task_id=task.task_id,
                handler=task.handler,
                input=task.input,
                depends_on=task.depends_on,
                timeout=task.timeout,
                retry_policy=task.retry_policy,
                schedule_to_start_timeout=task.schedule_to_start_timeout,
                state=state,
                reason=reason,
                created_at=now,
                updated_at=now,
                not_before=not_before,
            )
        )
    return execution, tuple(task_runs)
