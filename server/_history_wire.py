"""History event bodies: the engine's `HistoryCodec`, building serialized `taskwire.v1.ExecutionEvent`s.

The store keeps each body opaque, so a late watcher replays exactly the bytes a
live one received. The transition messages themselves come from `wire`.
"""

from __future__ import annotations

from datetime import datetime

from taskwire.v1 import types_pb2 as pb

from . import wire
from ._worker_wire import progress_details
from .domain import Execution, TaskRun
from .engine import AttemptLog, AttemptProgress
from .engine._history import EXECUTION_TRANSITION
from .store import EventRecord


def _serialized(event: pb.ExecutionEvent, time: datetime) -> bytes:
    wire.set_timestamp(event.time, time)
    return event.SerializeToString()


class ProtoHistoryCodec:
    def execution_transition(
        self, execution_id: str, sequence: int, time: datetime, before: Execution | None, after: Execution
    ) -> bytes:
        event = pb.ExecutionEvent(execution_id=execution_id, sequence=sequence)
        if before is None:
            wire.fill_execution_created(event.execution_transition, after)
        else:
            wire.fill_execution_transition(event.execution_transition, before, after)
        return _serialized(event, time)

    def task_run_transition(
        self, execution_id: str, sequence: int, time: datetime, before: TaskRun, after: TaskRun
    ) -> bytes:
        event = pb.ExecutionEvent(execution_id=execution_id, sequence=sequence)
        wire.fill_task_run_transition(event.task_run_transition, before, after)
        return _serialized(event, time)

    def progress(
        self,
        execution_id: str,
        sequence: int,
        time: datetime,
        task_run: TaskRun,
        report: AttemptProgress,
        fraction: float,
    ) -> bytes:
        body = pb.TaskProgress(
            task_run_id=task_run.id,
            task_id=task_run.task_id,
            attempt=report.attempt,
            fraction=fraction,
            message=report.message,
            details=progress_details(report),
        )
        return _serialized(pb.ExecutionEvent(execution_id=execution_id, sequence=sequence, progress=body), time)

    def log(self, execution_id: str, sequence: int, time: datetime, task_run: TaskRun, report: AttemptLog) -> bytes:
        body = pb.TaskLog(
            task_run_id=task_run.id,
            task_id=task_run.task_id,
            attempt=report.attempt,
            level=report.level,  # type: ignore[arg-type]  # the wire's number, passed through
            text=report.text,
        )
        return _serialized(pb.ExecutionEvent(execution_id=execution_id, sequence=sequence, log=body), time)

    def note(self, execution_id: str, sequence: int, time: datetime, task_run: TaskRun, text: str) -> bytes:
        body = pb.TaskNote(task_run_id=task_run.id, task_id=task_run.task_id, text=text)
        return _serialized(pb.ExecutionEvent(execution_id=execution_id, sequence=sequence, note=body), time)

    def is_terminal(self, event: EventRecord) -> bool:
        if event.kind != EXECUTION_TRANSITION:
            return False
        message = pb.ExecutionEvent.FromString(event.body)
        return wire.execution_state_from_proto(message.execution_transition.to_state).is_terminal
