"""Typed watch events: what `watch` yields, one dataclass per kind of history entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from taskwire.server import domain as d
from taskwire.server import wire
from taskwire.v1 import types_pb2 as pb


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    execution_id: str
    # Position in the execution's history: 1, 2, 3, ... without gaps.
    sequence: int
    # When the server recorded it (UTC).
    time: datetime
    # The message as received, for tools that want the wire form (`wire.event_to_dict`).
    proto: pb.ExecutionEvent | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionTransition(_Event):
    """The execution changed state; `is_terminal` marks the last event of the history."""

    from_state: d.State | None
    to_state: d.State
    reason: d.Reason | None = None

    @property
    def is_terminal(self) -> bool:
        return self.to_state.is_terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRunTransition(_Event):
    """A task run changed state, or its attempt ended."""

    task_run_id: str
    task_id: str
    from_state: d.State | None
    to_state: d.State
    reason: d.Reason | None = None
    # The attempt concerned; 0 when none (a cancel while PENDING).
    attempt: int = 0
    worker_id: str = ""
    # How the attempt ended, when this transition ended it.
    attempt_outcome: d.AttemptOutcome | None = None
    error: d.ErrorInfo | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskProgress(_Event):
    """A handler reported progress (a fraction in [0, 1])."""

    task_run_id: str
    task_id: str
    attempt: int
    fraction: float
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskLog(_Event):
    """A handler wrote a log line."""

    task_run_id: str
    task_id: str
    attempt: int
    level: LogLevel
    text: str


WatchEvent = ExecutionTransition | TaskRunTransition | TaskProgress | TaskLog


def _state(value: int, convert: Any) -> d.State | None:
    try:
        state: d.State = convert(value)
    except (KeyError, d.ValidationError):
        return None
    return state


def event_from_proto(message: pb.ExecutionEvent) -> WatchEvent | None:
    """The typed event for a history entry; None for a kind this SDK does not know (a newer server)."""
    common: dict[str, Any] = {
        "execution_id": message.execution_id,
        "sequence": message.sequence,
        "time": wire.timestamp_from_proto(message.time),
        "proto": message,
    }
    kind = wire.event_kind(message)
    if kind == "execution_transition":
        body = message.execution_transition
        to_state = _state(body.to_state, wire.execution_state_from_proto)
        if to_state is None:
            return None
        return ExecutionTransition(
            **common,
            from_state=_state(body.from_state, wire.execution_state_from_proto),
            to_state=to_state,
            reason=wire.reason_from_proto(body.reason_code, body.reason_message),
        )
    if kind == "task_run_transition":
        run = message.task_run_transition
        run_to = _state(run.to_state, wire.task_run_state_from_proto)
        if run_to is None:
            return None
        return TaskRunTransition(
            **common,
            task_run_id=run.task_run_id,
            task_id=run.task_id,
            from_state=_state(run.from_state, wire.task_run_state_from_proto),
            to_state=run_to,
            reason=wire.reason_from_proto(run.reason_code, run.reason_message),
            attempt=run.attempt,
            worker_id=run.worker_id,
            attempt_outcome=wire.outcome_from_proto(run.attempt_outcome),
            error=wire.error_from_proto(run.error) if run.HasField("error") else None,
        )
    if kind == "progress":
        progress = message.progress
        return TaskProgress(
            **common,
            task_run_id=progress.task_run_id,
            task_id=progress.task_id,
            attempt=progress.attempt,
            fraction=progress.fraction,
            message=progress.message,
            details=wire.struct_from_proto(progress.details) if progress.HasField("details") else {},
        )
    if kind == "log":
        log = message.log
        return TaskLog(
            **common,
            task_run_id=log.task_run_id,
            task_id=log.task_id,
            attempt=log.attempt,
            level=LogLevel(wire.log_level_name(log.level)),
            text=log.text,
        )
    return None
