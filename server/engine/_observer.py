"""What the engine tells an observer (metrics, for one) as it works: no I/O of its own, no wire types.

The engine calls these on its loop, synchronously, where things happen; an observer must be quick and
must not raise. `Unobserved` is the default: a server without metrics pays a method call per change.

May use: the domain.
"""

from __future__ import annotations

from typing import Protocol

from taskwire.server.domain import TaskRun


class Observer(Protocol):
    def task_run_changed(self, before: TaskRun | None, after: TaskRun) -> None:
        """A task run was created or recovered (`before` None) or changed state or attempt."""

    def cancel_confirmed(self, handler: str, seconds: float) -> None:
        """A worker confirmed that an attempt ended, `seconds` after the server sent it a cancel."""

    def committed(self, seconds: float, records: int) -> None:
        """The store made a group of `records` records durable in `seconds`."""


class Unobserved:
    """No observer: every call does nothing."""

    def task_run_changed(self, before: TaskRun | None, after: TaskRun) -> None:
        pass

    def cancel_confirmed(self, handler: str, seconds: float) -> None:
        pass

    def committed(self, seconds: float, records: int) -> None:
        pass
