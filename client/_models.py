"""The values the SDK returns: plain frozen dataclasses over the shared records of `taskwire.common`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from taskwire.common import (
    AttemptOutcome,
    Execution,
    Reason,
    State,
    TaskRun,
    TaskwireError,
    decode_payload,
    execution_view,
)


def task_run_output(task_run: TaskRun) -> Any:
    """The decoded output of a task run's successful attempt; None while it has none."""
    for attempt in reversed(task_run.attempts):
        if attempt.outcome is AttemptOutcome.SUCCEEDED:
            return decode_payload(attempt.output)
    return None


@dataclass(frozen=True, slots=True)
class ExecutionSnapshot:
    """An execution and its task runs as the server reported them at one moment."""

    execution: Execution
    task_runs: tuple[TaskRun, ...]
    # True when this came from a submit whose idempotency key matched an existing execution.
    deduplicated: bool = False
    # From a submit: its handlers that no connected worker served then (its tasks for them wait).
    unserved_handlers: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.execution.id

    @property
    def name(self) -> str:
        return self.execution.name

    @property
    def state(self) -> State:
        return self.execution.state

    @property
    def reason(self) -> Reason | None:
        """Why the execution is in its state (set for WAITING and terminal states)."""
        return self.execution.reason

    @property
    def is_terminal(self) -> bool:
        """Ended for good (a terminal state from a newer server included)."""
        return self.execution.is_terminal

    @property
    def outputs(self) -> dict[str, Any]:
        """The decoded output of every task run that succeeded, by task id."""
        return {run.task_id: task_run_output(run) for run in self.task_runs if run.state is State.SUCCESS}

    @property
    def output(self) -> Any:
        """The output of a single-task execution, or the outputs by task id when it has several tasks."""
        if len(self.task_runs) == 1:
            return task_run_output(self.task_runs[0])
        return self.outputs

    def task_run(self, task_id: str) -> TaskRun:
        """The task run of `task_id`; KeyError when the execution has no such task."""
        for run in self.task_runs:
            if run.task_id == task_id:
                return run
        raise KeyError(task_id)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON view (`taskwire.common.execution_view`), as `taskwire get --json` prints it."""
        return execution_view(self.execution, self.task_runs)


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk cancel or delete did (or, in a dry run, would do)."""

    matched: int
    changed: int  # cancelled or deleted
    skipped: int = 0  # a delete's matches that had not ended, left alone


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The result of one item of `submit_many`: an execution id, or the error that refused the item."""

    index: int
    execution_id: str = ""
    deduplicated: bool = False
    error: TaskwireError | None = None
    # Its handlers that no connected worker served at the time of the reply.
    unserved_handlers: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One connected worker session (`taskwire workers`)."""

    session_id: str
    instance_id: str
    name: str
    handlers: tuple[str, ...]
    slots: int
    in_flight: int
    labels: Mapping[str, str] = field(default_factory=dict)
    agent_version: str = ""
    connected_at: datetime | None = None
    last_seen_at: datetime | None = None
    draining: bool = False
    lease_timeout: timedelta | None = None
    replica: str = ""  # the replica its stream is connected to ('' on a single server)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the server takes the caller to be (`GetIdentity`): the name it authenticated (empty when
    anonymous) and the role it grants ("reader", "submitter", "worker" or "admin")."""

    name: str
    role: str


@dataclass(frozen=True, slots=True)
class RpcRetry:
    """How idempotent calls retry UNAVAILABLE: exponential backoff with jitter, bounded by attempts.

    A `watch` or `wait` reconnects across an outage (a server restart) for as long as its timeout allows;
    without a timeout, once it has reached the server, for `resume_s` seconds of outage (None: no limit).
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    resume_s: float | None = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.resume_s is not None and self.resume_s < 0:
            raise ValueError(f"resume_s must not be negative, got {self.resume_s}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff_s <= max_backoff_s")


NO_RETRY = RpcRetry(max_attempts=1)
