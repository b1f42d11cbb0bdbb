"""Which executions a bulk action (cancel, delete) applies to.

May use: the standard library and taskwire.common's records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ._errors import ValidationError
from ._models import Execution, TaskRun
from ._states import State


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """All conditions must hold; an empty filter matches nothing (a bulk action refuses it)."""

    states: tuple[State, ...] = ()
    handler: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.states or self.handler or self.labels or self.created_after or self.created_before)

    def check(self, where: str = "filter") -> None:
        """ValidationError unless it has a condition and its time range is not backwards."""
        if self.is_empty:
            raise ValidationError(
                where, "give at least one condition (states, handler, labels, created_after, created_before)"
            )
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValidationError(f"{where}.created_before", "must be after created_after")

    def matches(self, execution: Execution, task_runs: Sequence[TaskRun]) -> bool:
        if self.states and execution.state not in self.states:
            return False
        if self.handler and all(run.handler != self.handler for run in task_runs):
            return False
        if any(execution.metadata.get(key) != value for key, value in self.labels.items()):
            return False
        if self.created_after is not None and execution.created_at < self.created_after:
            return False
        return self.created_before is None or execution.created_at < self.created_before
