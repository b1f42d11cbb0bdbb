"""The records a validated spec creates: the server's side of a submit.

The specs themselves and their validation live in `taskwire.common` (a client
may validate too); only the server makes records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from taskwire.common import (
    RERUN_OF,
    Attempt,
    AttemptOutcome,
    Execution,
    ExecutionSpec,
    Payload,
    Reason,
    ReasonCode,
    State,
    TaskRun,
    TaskSpec,
)


@dataclass(frozen=True, slots=True)
class Reused:
    """A task's result taken over by a re-run: its output, and the execution it came from."""

    output: Payload | None
    execution_id: str


def create_execution(
    spec: ExecutionSpec,
    *,
    execution_id: str,
    task_run_ids: Sequence[str],
    now: datetime,
    submitted_by: str = "",
    reused: Mapping[str, Reused] | None = None,
) -> tuple[Execution, tuple[TaskRun, ...]]:
    """The records of a new execution from a validated spec, all stamped `now`.

    A spec with a future not_before makes the execution and its root tasks
    WAITING(SCHEDULED); tasks with dependencies start WAITING(DEPENDENCIES)
    unless every one of them is reused; the rest are PENDING. A task in
    `reused` (a re-run's) starts SUCCESS with the output of the execution it
    was taken from, as one attempt that ran nowhere.
    """
    reused = reused or {}
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
        submitted_by=submitted_by,
        trace_context=dict(spec.trace_context),
    )
    task_runs = []
    for task_run_id, task in zip(task_run_ids, spec.tasks, strict=True):
        state, reason, not_before = State.PENDING, None, None
        if task.task_id in reused:
            task_runs.append(_reused(task, reused[task.task_id], execution_id, task_run_id, now))
            continue
        if task.depends_on and not all(upstream in reused for upstream in task.depends_on):
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
                priority=task.priority,
                concurrency_key=task.concurrency_key,
                concurrency_limit=task.concurrency_limit,
                fairness_key=task.fairness_key,
                rate_limit=task.rate_limit,
                rate_limit_key=task.rate_limit_key,
                state=state,
                reason=reason,
                created_at=now,
                updated_at=now,
                not_before=not_before,
            )
        )
    return execution, tuple(task_runs)


def _reused(task: TaskSpec, reused: Reused, execution_id: str, task_run_id: str, now: datetime) -> TaskRun:
    attempt = Attempt(
        task_run_id=task_run_id,
        number=1,
        worker_id=f"(reused from {reused.execution_id})",
        started_at=now,
        ended_at=now,
        outcome=AttemptOutcome.SUCCEEDED,
        output=reused.output,
    )
    return TaskRun(
        id=task_run_id,
        execution_id=execution_id,
        task_id=task.task_id,
        handler=task.handler,
        input=task.input,
        depends_on=task.depends_on,
        timeout=task.timeout,
        retry_policy=task.retry_policy,
        schedule_to_start_timeout=task.schedule_to_start_timeout,
        priority=task.priority,
        concurrency_key=task.concurrency_key,
        concurrency_limit=task.concurrency_limit,
        fairness_key=task.fairness_key,
        rate_limit=task.rate_limit,
        rate_limit_key=task.rate_limit_key,
        state=State.SUCCESS,
        reason=Reason(ReasonCode.COMPLETED, f"output reused from execution {reused.execution_id}"),
        created_at=now,
        updated_at=now,
        started_at=now,
        ended_at=now,
        attempts=(attempt,),
    )


def rerun_spec(execution: Execution, task_runs: Sequence[TaskRun]) -> ExecutionSpec:
    """The spec of a new execution that runs `execution` again: its tasks, inputs and policies, its name,
    labels (with RERUN_OF naming it) and trace context; its timeout as long as the original's."""
    tasks = tuple(
        TaskSpec(
            handler=run.handler,
            task_id=run.task_id,
            input=run.input,
            depends_on=run.depends_on,
            timeout=run.timeout,
            retry_policy=run.retry_policy,
            schedule_to_start_timeout=run.schedule_to_start_timeout,
            priority=run.priority,
            concurrency_key=run.concurrency_key,
            concurrency_limit=run.concurrency_limit,
            fairness_key=run.fairness_key,
            rate_limit=run.rate_limit,
            rate_limit_key=run.rate_limit_key,
        )
        for run in task_runs
    )
    return ExecutionSpec(
        tasks=tasks,
        name=execution.name,
        metadata={**execution.metadata, RERUN_OF: execution.id},
        timeout=execution.deadline - execution.created_at if execution.deadline is not None else None,
        trace_context=dict(execution.trace_context),
    )
