"""Concurrency keys: at most `concurrency_limit` attempts of a key at once, across all workers.

A key's places are taken by its task runs that are queued (PENDING) and by its
attempts that a session holds: from the dispatch until the worker reports the
end, or the session loses the attempt (`AttemptHolders` says when, so an
attempt fenced by a server-side timeout or a pending cancel still counts while
its worker may run it). A task run is admitted to the ready queue only when its
key has a place (fewer than its own limit taken); otherwise it waits
`WAITING(CONCURRENCY_LIMIT)` in its key's line, and when a place frees the
first in line gets it and becomes PENDING. A dispatch moves a place from the
queued task run to its attempt; nothing at dispatch time is checked, so a key
never costs the dispatcher anything.

In memory only: recovery rebuilds the counts from the records (PENDING task
runs, RUNNING attempts, the line in the order the task runs began to wait).

May use: the domain (records), a way to run a callback soon, and one hook:
give the waiting task run its place (`admit`), which makes it PENDING.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from taskwire.common import ConcurrencyKeyStats
from taskwire.server.domain import ReasonCode, State, TaskRun

from ._sessions import AttemptKey


@dataclass(eq=False)
class _Key:
    queued: set[str] = field(default_factory=set)  # task runs PENDING with a place
    running: set[AttemptKey] = field(default_factory=set)  # attempts held by a session
    line: deque[tuple[str, int]] = field(default_factory=deque)  # (task run id, its limit), first waiting first
    reserved: set[str] = field(default_factory=set)  # given a place, not queued yet
    limit: int = 0  # the limit of the task run that took a place last (for the figures)

    @property
    def taken(self) -> int:
        return len(self.queued) + len(self.running) + len(self.reserved)

    @property
    def idle(self) -> bool:
        return not (self.queued or self.running or self.line or self.reserved)


class ConcurrencyKeys:
    def __init__(self, *, soon: Callable[[Callable[[], None]], object]) -> None:
        self._keys: dict[str, _Key] = {}
        self._attempts: dict[AttemptKey, str] = {}  # a keyed attempt held by a session -> its key
        self._soon = soon
        self._admitting: set[str] = set()  # keys whose line is looked at soon
        # Wired by the engine: the task run waiting for `key` has a place now; make it PENDING. False when
        # it no longer waits (cancelled meanwhile).
        self.admit: Callable[[str], bool] = lambda task_run_id: False

    def _key(self, key: str) -> _Key:
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = _Key()
        return found

    def take(self, task_run: TaskRun) -> str | None:
        """A task run became PENDING: None when it may queue (its place is taken), else why it must wait."""
        key, limit = task_run.concurrency_key, task_run.concurrency_limit
        places = self._key(key)
        if task_run.id in places.reserved:
            places.reserved.discard(task_run.id)
        elif places.line or places.taken >= limit:
            places.line.append((task_run.id, limit))
            return (
                f"concurrency key {key!r} is full: {len(places.running)} running and {len(places.queued)} queued"
                f" of a limit of {limit}; {len(places.line)} waiting"
            )
        places.queued.add(task_run.id)
        places.limit = limit
        return None

    def changed(self, before: TaskRun, after: TaskRun) -> None:
        """A keyed task run's state changed: leaving the queue frees its place, or moves it to the attempt."""
        if before.state is not State.PENDING or after.state is State.PENDING:
            return
        places = self._keys.get(after.concurrency_key)
        if places is None or after.id not in places.queued:
            return
        places.queued.discard(after.id)
        attempt = after.current_attempt
        if after.state is State.RUNNING and attempt is not None:
            self._hold(after.concurrency_key, places, (after.id, attempt.number))
        else:
            self._freed(after.concurrency_key)

    def _hold(self, key: str, places: _Key, attempt: AttemptKey) -> None:
        places.running.add(attempt)
        self._attempts[attempt] = key

    def attempt_over(self, attempt: AttemptKey) -> None:
        """No session holds the attempt any more: its worker reported its end, or it was lost."""
        key = self._attempts.pop(attempt, None)
        if key is not None:
            self._keys[key].running.discard(attempt)
            self._freed(key)

    def _freed(self, key: str) -> None:
        if key not in self._admitting:
            self._admitting.add(key)
            self._soon(lambda: self._admit(key))

    def _admit(self, key: str) -> None:
        """Give free places to the first in line: each becomes PENDING (and queues through `take`)."""
        self._admitting.discard(key)
        places = self._keys.get(key)
        if places is None:
            return
        while places.line and places.taken < places.line[0][1]:
            task_run_id, _ = places.line.popleft()
            places.reserved.add(task_run_id)
            if not self.admit(task_run_id):
                places.reserved.discard(task_run_id)  # no longer waiting: cancelled, or its execution ended
        if places.idle:
            del self._keys[key]

    def restore(self, task_runs: Iterable[TaskRun]) -> None:
        """Recovery: the places of the recovered task runs (PENDING and RUNNING keep theirs; WAITING ones line
        up in the order they began to wait)."""
        waiting: list[TaskRun] = []
        for task_run in task_runs:
            key = task_run.concurrency_key
            if not key:
                continue
            places = self._key(key)
            places.limit = task_run.concurrency_limit
            attempt = task_run.current_attempt
            if task_run.state is State.PENDING:
                places.queued.add(task_run.id)
            elif task_run.state is State.RUNNING and attempt is not None:
                self._hold(key, places, (task_run.id, attempt.number))
            elif task_run.reason is not None and task_run.reason.code is ReasonCode.CONCURRENCY_LIMIT:
                waiting.append(task_run)
        for task_run in sorted(waiting, key=lambda t: t.updated_at):
            self._key(task_run.concurrency_key).line.append((task_run.id, task_run.concurrency_limit))
        for key in list(self._keys):
            self._freed(key)

    def figures(self, most: int) -> list[ConcurrencyKeyStats]:
        """At most `most` of the keys in use, those with task runs waiting first (most waiting first)."""
        found = [
            ConcurrencyKeyStats(
                key, places.limit, len(places.running), len(places.queued) + len(places.reserved), len(places.line)
            )
            for key, places in self._keys.items()
        ]
        return sorted(found, key=lambda f: (-f.waiting, -f.running, f.key))[:most]
