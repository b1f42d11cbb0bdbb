"""What the transition rooms share: the result of a transition, a row of a table, and refusals.

The pure transition functions and the tables they read live in `_task_run_transitions` and
`_execution_transitions`.

`transition_task_run(task_run, event, now)` and `transition_execution(execution,
event, now)` return a `Transition`: the new record, the effects the engine must
carry out, and whether anything happened at all. They read an explicit table of
allowed (state, event) rows; any other pair raises `InvalidTransition` (or its
subclass `TerminalStateError` for a terminal record).

Two kinds of event change nothing and emit no effect:
- replays: an event whose result already holds (a second cancel, a second
  DependenciesMet on a PENDING run, an attempt report for an attempt that ended);
- stale attempt reports: a message about an attempt older than the current one.
That is the fencing of at-least-once delivery, and it lives here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from ._effects import (
    Effect,
)
from ._errors import InvalidTransition, TerminalStateError
from ._events import (
    ExecutionEvent,
    TaskRunEvent,
    event_name,
)
from ._models import (
    Execution,
    TaskRun,
)
from ._states import State

RecordT = TypeVar("RecordT", TaskRun, Execution)


@dataclass(frozen=True, slots=True)
class Transition(Generic[RecordT]):
    """The outcome of applying one event: the record after it and what to do next."""

    record: RecordT
    effects: tuple[Effect, ...] = ()
    # False for replays and stale reports: nothing changed, nothing is to be stored.
    applied: bool = True


def _noop(record: RecordT) -> Transition[RecordT]:
    return Transition(record=record, effects=(), applied=False)


def _touch(previous: datetime, now: datetime) -> datetime:
    """updated_at never goes backwards, even if the caller's clock does."""
    return max(previous, now)


P, R, W = State.PENDING, State.RUNNING, State.WAITING
S, F, C = State.SUCCESS, State.FAILED, State.CANCELLED


@dataclass(frozen=True, slots=True)
class Row(Generic[RecordT]):
    """One allowed (state, event) pair: the states it may lead to, and how."""

    targets: frozenset[State]
    apply: Callable[[RecordT, object, datetime], Transition[RecordT]]


def _rows(
    table: Mapping[tuple[State, type], tuple[frozenset[State], object]],
) -> dict[tuple[State, type], Row]:  # type: ignore[type-arg]
    return {key: Row(targets=targets, apply=apply) for key, (targets, apply) in table.items()}  # type: ignore[arg-type]


def _refuse(entity: str, record: TaskRun | Execution, event: TaskRunEvent | ExecutionEvent) -> InvalidTransition:
    error = TerminalStateError if record.state.is_terminal else InvalidTransition
    why = "the record is terminal" if record.state.is_terminal else "not allowed in this state"
    return error(entity=entity, entity_id=record.id, state=record.state, event=event_name(event), reason=why)
