"""Typed watch events: what `watch` yields, one dataclass per kind of history entry.

A kind of entry this version does not know (a newer server) comes as an
`UnknownEvent`, and states, reasons, outcomes and log levels it does not know as
pseudo-members of their enums: shown, never dropped, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskwire.common import AttemptOutcome, ErrorInfo, LogLevel, Reason, State, wire
from taskwire.v1 import types_pb2 as pb


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    execution_id: str
    # Position in the execution's history: 1, 2, 3, ... without gaps.
    sequence: int
    # When the server recorded it (UTC).
    time: datetime
    # The message as received, for tools that want the wire form (`google.protobuf.json_format.MessageToDict`).
    proto: pb.ExecutionEvent | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionTransition(_Event):
    """The execution changed state; `is_terminal` marks the last event of the history.

    A terminal state from a newer server is not recognised as one here (the history then simply ends, and the
    execution's `is_terminal` reads its `ended_at`).
    """

    from_state: State | None
    to_state: State
    reason: Reason | None = None

    @property
    def is_terminal(self) -> bool:
        return self.to_state.is_terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRunTransition(_Event):
    """A task run changed state, or its attempt ended."""

    task_run_id: str
    task_id: str
    from_state: State | None
    to_state: State
    reason: Reason | None = None
    # The attempt concerned; 0 when none (a cancel while PENDING).
    attempt: int = 0
    worker_id: str = ""
    # How the attempt ended, when this transition ended it.
    attempt_outcome: AttemptOutcome | None = None
    error: ErrorInfo | None = None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskNote(_Event):
    """The server's remark about a task run (for example: no connected worker serves its handler)."""

    task_run_id: str
    task_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent(_Event):
    """A history entry of a kind this version does not know (a newer server); `proto` has it as received."""

    # The body's field name when the stubs know it, else "".
    kind: str = ""


WatchEvent = ExecutionTransition | TaskRunTransition | TaskProgress | TaskLog | TaskNote | UnknownEvent


def event_from_proto(message: pb.ExecutionEvent) -> WatchEvent:
    """The typed event for a history entry; an UnknownEvent for a kind this SDK does not know."""
    common: dict[str, Any] = {
        "execution_id": message.execution_id,
        "sequence": message.sequence,
        "time": wire.timestamp_from_proto(message.time),
        "proto": message,
    }
    kind = message.WhichOneof("body") or ""
    if kind == "execution_transition":
        body = message.execution_transition
        return ExecutionTransition(
            **common,
            from_state=_from_state(body.from_state, wire.execution_state_from_proto),
            to_state=wire.execution_state_from_proto(body.to_state),
            reason=wire.reason_from_proto(body.reason_code, body.reason_message),
        )
    if kind == "task_run_transition":
        run = message.task_run_transition
        return TaskRunTransition(
            **common,
            task_run_id=run.task_run_id,
            task_id=run.task_id,
            from_state=_from_state(run.from_state, wire.task_run_state_from_proto),
            to_state=wire.task_run_state_from_proto(run.to_state),
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
            level=wire.log_level_from_proto(log.level),
            text=log.text,
        )
    if kind == "note":
        note = message.note
        return TaskNote(**common, task_run_id=note.task_run_id, task_id=note.task_id, text=note.text)
    return UnknownEvent(**common, kind=kind)


def _from_state(value: int, convert: Callable[[int], State]) -> State | None:
    """The state a transition left; None for the first one (from no state)."""
    return convert(value) if value else None
