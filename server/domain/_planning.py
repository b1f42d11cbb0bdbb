"""What follows from the state of a whole execution.

Executions with several tasks need a view over all their task runs: release
dependents, cancel the rest when one fails or the execution closes, and decide
the execution's own outcome. `plan_follow_ups` computes the events that follow;
the engine applies them and asks again until nothing follows.

The rule when a task fails: the execution fails as soon as any task run fails
terminally; its other active task runs are cancelled with UPSTREAM_FAILED, and
the execution takes its FAILED state once none of them is active. We chose this
over "let independent branches finish" because a failed execution should free
its workers at once and report one clear cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._events import (
    CancelRequested,
    DependenciesFailed,
    DependenciesMet,
    ExecutionEvent,
    ExecutionFailed,
    ExecutionSettled,
    ExecutionStarted,
    ExecutionSucceeded,
    ScheduleDue,
    TaskRunEvent,
)
from ._execution_transitions import propagated_reason
from ._models import Execution, TaskRun
from ._states import ReasonCode, State


@dataclass(frozen=True, slots=True)
class TaskFollowUp:
    task_run_id: str
    event: TaskRunEvent


@dataclass(frozen=True, slots=True)
class ExecutionFollowUp:
    event: ExecutionEvent


FollowUp = TaskFollowUp | ExecutionFollowUp


def _is_waiting_for(task_run: TaskRun, code: ReasonCode) -> bool:
    return task_run.state is State.WAITING and task_run.reason is not None and task_run.reason.code is code


def plan_follow_ups(execution: Execution, task_runs: Sequence[TaskRun]) -> list[FollowUp]:
    """The events that the current state of an execution and its task runs calls for."""
    if execution.state.is_terminal:
        return []
    by_task_id = {task_run.task_id: task_run for task_run in task_runs}
    follow_ups: list[FollowUp] = []
    for task_run in task_runs:
        if not task_run.state.is_active:
            continue
        if execution.closing is not None:
            if task_run.state is not State.RUNNING or task_run.pending_cancel is None:
                follow_ups.append(TaskFollowUp(task_run.id, CancelRequested(propagated_reason(execution.closing))))
        elif _is_waiting_for(task_run, ReasonCode.SCHEDULED) and execution.state is not State.WAITING:
            follow_ups.append(TaskFollowUp(task_run.id, ScheduleDue()))
        elif _is_waiting_for(task_run, ReasonCode.DEPENDENCIES):
            states = [by_task_id[d].state for d in task_run.depends_on]
            failed = [d for d in task_run.depends_on if by_task_id[d].state in (State.FAILED, State.CANCELLED)]
            if failed:
                follow_ups.append(TaskFollowUp(task_run.id, DependenciesFailed(failed[0])))
            elif all(state is State.SUCCESS for state in states):
                follow_ups.append(TaskFollowUp(task_run.id, DependenciesMet()))
    if follow_ups:
        return follow_ups
    event = _next_execution_event(execution, task_runs)
    return [ExecutionFollowUp(event)] if event is not None else []


def _next_execution_event(execution: Execution, task_runs: Sequence[TaskRun]) -> ExecutionEvent | None:
    if all(task_run.state is State.SUCCESS for task_run in task_runs):
        if execution.state is State.PENDING:
            return ExecutionStarted()
        return ExecutionSucceeded()
    active = [task_run for task_run in task_runs if task_run.state.is_active]
    if execution.closing is not None:
        return None if active else ExecutionSettled()
    failed = next((task_run for task_run in task_runs if task_run.state is State.FAILED), None)
    if failed is not None and failed.reason is not None:
        return ExecutionFailed(failed.task_id, failed.reason.code, failed.reason.message)
    if execution.state is State.PENDING and any(task_run.attempts for task_run in task_runs):
        return ExecutionStarted()
    return None
