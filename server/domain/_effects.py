"""Effects: what the engine must carry out after a transition.

The pure transition functions only describe them; the engine performs them
(queue, timers, worker streams, follow-up transitions). Every effect is carried
out; two things that look like effects are not, because another part owns them:
a task run cancelled while PENDING leaves the ready queue lazily (the dispatcher
drops it when it reaches the front), and the active task runs of a closing
execution are cancelled by the planner's follow-ups (`plan_follow_ups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._models import Reason
from ._states import State


@dataclass(frozen=True, slots=True)
class Enqueue:
    """The task run became PENDING: put it at the back of the queue."""

    task_run_id: str


@dataclass(frozen=True, slots=True)
class ScheduleRetry:
    """Apply RetryDue to the task run at `at`."""

    task_run_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ArmAttemptTimeout:
    """Apply TaskTimedOut(attempt) to the task run at `at` unless the attempt ended first."""

    task_run_id: str
    attempt: int
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    """The attempt is over as far as the server is concerned: disarm its timers."""

    task_run_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelOnWorker:
    """Send a cancel for the attempt down its worker's stream; give up waiting after a grace period."""

    task_run_id: str
    attempt: int
    worker_id: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class TaskRunFinished:
    """The task run reached a terminal state: release its dependents and settle its execution."""

    task_run_id: str
    execution_id: str
    state: State


@dataclass(frozen=True, slots=True)
class ExecutionFinished:
    """The execution reached a terminal state: disarm its deadline, end its watchers."""

    execution_id: str
    state: State


Effect = (
    Enqueue | ScheduleRetry | ArmAttemptTimeout | AttemptEnded | CancelOnWorker | TaskRunFinished | ExecutionFinished
)
