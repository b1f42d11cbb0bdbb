"""The ready queues: PENDING task runs per handler, by priority, first come first served within one.

Each handler has one FIFO per priority level. The next task run of a handler is
the head of one of them: the head with the highest *effective* priority, its
priority plus one level per `aging_s` seconds it has waited queued (at most
`MAX_PRIORITY`); among equal effective priorities the one queued first. A head
is the oldest of its level, so comparing heads finds the best of all. So a task
run queued at priority p is overtaken by nothing queued more than
`(MAX_PRIORITY - p) * aging_s` seconds after it (docs/flow-control.md). With
`aging_s` 0 there is no aging: strict priority.

The time a task run was queued is kept per run of pushes that fall within
`_RESOLUTION_S` of one another (a deque of [time, count]), not per task run: a
long queue costs one id per task run and little more. Times are the engine
clock's monotonic seconds; a recovered queue starts aging again at recovery.

Removal is lazy: a task run cancelled while PENDING stays queued until it
reaches a head, where the dispatcher sees it is no longer PENDING.

May use: the domain's priority range, and a clock function.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

from taskwire.server.domain import DEFAULT_PRIORITY, MAX_PRIORITY

# Task runs queued at one level within this many seconds of the first of them share its queue time.
_RESOLUTION_S = 1.0


class Queued(NamedTuple):
    """A task run taken from a ready queue: what putting it back at its place needs."""

    id: str
    priority: int
    since: float


class _Level:
    """One handler's FIFO at one priority: the ids, and their queue times run-length coded."""

    __slots__ = ("ids", "times")

    def __init__(self) -> None:
        self.ids: deque[str] = deque()
        self.times: deque[list[float]] = deque()  # [time queued, how many ids from here share it]

    def push(self, task_run_id: str, since: float) -> None:
        self.ids.append(task_run_id)
        times = self.times
        if times and since - times[-1][0] < _RESOLUTION_S:
            times[-1][1] += 1
        else:
            times.append([since, 1])

    def pushleft(self, task_run_id: str, since: float) -> None:
        self.ids.appendleft(task_run_id)
        times = self.times
        if times and times[0][0] == since:
            times[0][1] += 1
        else:
            times.appendleft([since, 1])

    def popleft(self) -> tuple[str, float]:
        head = self.times[0]
        since = head[0]
        head[1] -= 1
        if head[1] == 0:
            self.times.popleft()
        return self.ids.popleft(), since


class _HandlerQueue:
    __slots__ = ("levels", "size")

    def __init__(self) -> None:
        self.levels: dict[int, _Level] = {}
        self.size = 0


class ReadyQueues:
    """PENDING task run ids per handler: by effective priority, then first queued first."""

    def __init__(self, *, now: Callable[[], float] = lambda: 0.0, aging_s: float = 0.0) -> None:
        self._by_handler: OrderedDict[str, _HandlerQueue] = OrderedDict()
        self._now = now
        self._aging_s = aging_s

    def push(self, handler: str, task_run_id: str, priority: int = DEFAULT_PRIORITY) -> None:
        self._place(handler, priority).push(task_run_id, self._now())

    def pushleft(self, handler: str, queued: Queued) -> None:
        """Put back a task run taken with `popleft`, at its place."""
        self._place(handler, queued.priority).pushleft(queued.id, queued.since)

    def _place(self, handler: str, priority: int) -> _Level:
        queue = self._by_handler.get(handler)
        if queue is None:
            queue = self._by_handler[handler] = _HandlerQueue()
        queue.size += 1
        level = queue.levels.get(priority)
        if level is None:
            level = queue.levels[priority] = _Level()
        return level

    def handlers_with_work(self) -> Iterator[str]:
        return iter([handler for handler, queue in self._by_handler.items() if queue.size])

    def size(self, handler: str) -> int:
        queue = self._by_handler.get(handler)
        return queue.size if queue is not None else 0

    def popleft(self, handler: str) -> Queued | None:
        """The next task run of a handler's queue, taken out of it; None when it is empty."""
        queue = self._by_handler.get(handler)
        if queue is None or not queue.size:
            return None
        priority = self._best_level(queue)
        task_run_id, since = queue.levels[priority].popleft()
        queue.size -= 1
        return Queued(task_run_id, priority, since)

    def _best_level(self, queue: _HandlerQueue) -> int:
        levels = [(priority, level) for priority, level in queue.levels.items() if level.ids]
        if len(levels) == 1:
            return levels[0][0]
        now, aging_s = self._now(), self._aging_s
        best: tuple[int, float, int] | None = None
        chosen = DEFAULT_PRIORITY
        for priority, level in levels:
            since = level.times[0][0]
            effective = priority if not aging_s else min(MAX_PRIORITY, priority + int((now - since) // aging_s))
            key = (-effective, since, -priority)
            if best is None or key < best:
                best, chosen = key, priority
        return chosen

    def peek(self, handler: str, count: int) -> list[str]:
        """Up to `count` ids of a handler's queue, left in place: the first of each level, default level first."""
        queue = self._by_handler.get(handler)
        if queue is None:
            return []
        order = sorted(queue.levels, key=lambda priority: priority != DEFAULT_PRIORITY)
        return list(itertools.islice(itertools.chain.from_iterable(queue.levels[p].ids for p in order), count))
