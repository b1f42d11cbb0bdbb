"""The ready queues: PENDING task runs per handler, by priority, and in turns between fairness keys.

Each handler has one level per priority; each level has one FIFO per fairness
key (a tenant; task runs without one share the key ""), taken in turns: a pop
takes the head of the first key's FIFO and sends that key to the back of the
line. So within a priority, a key with one task run waits for at most one task
run of each other key, however long their backlogs.

Which level a pop takes from: the one with the highest *effective* priority, its
priority plus one level per `aging_s` seconds its oldest task run has waited
queued (at most `MAX_PRIORITY`); among equal effective priorities the one whose
oldest task run was queued first. So a level whose oldest task run was queued at
priority p wins over every level whose oldest came more than
`(MAX_PRIORITY - p) * aging_s` seconds later (docs/flow-control.md). With
`aging_s` 0 there is no aging: strict priority.

Queue times are kept per run of pushes that fall within `_RESOLUTION_S` of one
another (a deque of [time, count]), not per task run: a long queue costs one id
per task run and little more. Times are the engine clock's monotonic seconds; a
recovered queue starts aging again at recovery.

Removal is lazy: a task run cancelled while PENDING stays queued until it
reaches a head, where the dispatcher sees it is no longer PENDING. Task runs given
to another replica are dropped at once when they come to outnumber the rest
(`keep`): a replica without workers for a handler never reaches their heads.

May use: the domain's priority range, and a clock function.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

from taskwire.server.domain import DEFAULT_PRIORITY, MAX_PRIORITY

# Task runs queued in one FIFO within this many seconds of the first of them share its queue time.
_RESOLUTION_S = 1.0


class Queued(NamedTuple):
    """A task run taken from a ready queue: what putting it back at its place needs."""

    id: str
    priority: int
    since: float
    tenant: str = ""


class _Fifo:
    """One key's task runs at one priority: the ids, and their queue times run-length coded."""

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

    @property
    def head_since(self) -> float:
        return self.times[0][0]

    def keep(self, keep: Callable[[str], bool]) -> int:
        """Drop the ids `keep` refuses, in place (their times too); how many were dropped."""
        ids: deque[str] = deque()
        times: deque[list[float]] = deque()
        queued = iter(self.ids)
        for since, count in self.times:
            kept = [task_run_id for task_run_id in itertools.islice(queued, int(count)) if keep(task_run_id)]
            if kept:
                ids.extend(kept)
                times.append([since, len(kept)])
        dropped = len(self.ids) - len(ids)
        self.ids, self.times = ids, times
        return dropped


class _Level:
    """One handler's task runs at one priority: a FIFO per fairness key, in turns, and their oldest head."""

    __slots__ = ("heads", "size", "tenants")

    def __init__(self) -> None:
        self.tenants: OrderedDict[str, _Fifo] = OrderedDict()  # the first is next
        self.heads: list[tuple[float, str]] = []  # (a key's head time, the key); stale entries dropped lazily
        self.size = 0

    def push(self, tenant: str, task_run_id: str, since: float) -> None:
        fifo = self.tenants.get(tenant)
        if fifo is None:
            fifo = self.tenants[tenant] = _Fifo()
        fifo.push(task_run_id, since)
        if len(fifo.ids) == 1:
            self._head(tenant, fifo)
        self.size += 1

    def pushleft(self, queued: Queued) -> None:
        """Back at the front of its key's FIFO, and its key next in turn."""
        fifo = self.tenants.get(queued.tenant)
        if fifo is None:
            fifo = self.tenants[queued.tenant] = _Fifo()
        fifo.pushleft(queued.id, queued.since)
        self.tenants.move_to_end(queued.tenant, last=False)
        self._head(queued.tenant, fifo)
        self.size += 1

    def popleft(self, priority: int) -> Queued:
        tenant, fifo = next(iter(self.tenants.items()))
        task_run_id, since = fifo.popleft()
        if fifo.ids:
            self.tenants.move_to_end(tenant)
            self._head(tenant, fifo)
        else:
            del self.tenants[tenant]
        self.size -= 1
        return Queued(task_run_id, priority, since, tenant)

    def keep(self, keep: Callable[[str], bool]) -> int:
        """Drop the ids `keep` refuses (the keys keep their turns); how many were dropped."""
        dropped = 0
        for tenant, fifo in list(self.tenants.items()):
            dropped += fifo.keep(keep)
            if not fifo.ids:
                del self.tenants[tenant]
        self.size -= dropped
        self.heads[:] = [(f.head_since, t) for t, f in self.tenants.items()]
        heapq.heapify(self.heads)
        return dropped

    def _head(self, tenant: str, fifo: _Fifo) -> None:
        heads = self.heads
        if len(heads) > 2 * len(self.tenants) + 16:  # mostly stale: start over from the heads there are
            heads[:] = [(f.head_since, t) for t, f in self.tenants.items()]
            heapq.heapify(heads)
        else:
            heapq.heappush(heads, (fifo.head_since, tenant))

    def oldest(self) -> float:
        """When the longest-waiting task run of the level was queued."""
        heads = self.heads
        while True:
            since, tenant = heads[0]
            fifo = self.tenants.get(tenant)
            if fifo is not None and fifo.head_since == since:
                return since
            heapq.heappop(heads)  # that key's head has moved on, or the key left


class _HandlerQueue:
    __slots__ = ("levels", "size")

    def __init__(self) -> None:
        self.levels: dict[int, _Level] = {}
        self.size = 0


class ReadyQueues:
    """PENDING task run ids per handler: by effective priority, then in turns between keys, FIFO within one."""

    def __init__(self, *, now: Callable[[], float] = lambda: 0.0, aging_s: float = 0.0) -> None:
        self._by_handler: OrderedDict[str, _HandlerQueue] = OrderedDict()
        self._now = now
        self._aging_s = aging_s

    def push(self, handler: str, task_run_id: str, priority: int = DEFAULT_PRIORITY, tenant: str = "") -> None:
        self._level(handler, priority).push(tenant, task_run_id, self._now())

    def pushleft(self, handler: str, queued: Queued) -> None:
        """Put back a task run taken with `popleft`, at its place."""
        self._level(handler, queued.priority).pushleft(queued)

    def _level(self, handler: str, priority: int) -> _Level:
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
        queue.size -= 1
        return queue.levels[priority].popleft(priority)

    def _best_level(self, queue: _HandlerQueue) -> int:
        levels = [(priority, level) for priority, level in queue.levels.items() if level.size]
        if len(levels) == 1:
            return levels[0][0]
        now, aging_s = self._now(), self._aging_s
        best: tuple[int, float, int] | None = None
        chosen = DEFAULT_PRIORITY
        for priority, level in levels:
            since = level.oldest()
            effective = priority if not aging_s else min(MAX_PRIORITY, priority + int((now - since) // aging_s))
            key = (-effective, since, -priority)
            if best is None or key < best:
                best, chosen = key, priority
        return chosen

    def keep(self, handler: str, keep: Callable[[str], bool]) -> None:
        """Drop at once, rather than lazily at the head, the ids of a handler's queue that `keep` refuses: what left
        this server (given to another replica) while no worker takes from the queue."""
        queue = self._by_handler.get(handler)
        if queue is None:
            return
        for priority, level in list(queue.levels.items()):
            queue.size -= level.keep(keep)
            if not level.size:
                del queue.levels[priority]

    def peek(self, handler: str, count: int) -> list[str]:
        """Up to `count` ids of a handler's queue, left in place: those of the default level's task runs without a
        fairness key first (where cold task runs wait), then the rest."""
        queue = self._by_handler.get(handler)
        if queue is None:
            return []
        fifos = [
            fifo
            for priority in sorted(queue.levels, key=lambda priority: priority != DEFAULT_PRIORITY)
            for tenant, fifo in sorted(queue.levels[priority].tenants.items(), key=lambda item: item[0] != "")
        ]
        return list(itertools.islice(itertools.chain.from_iterable(fifo.ids for fifo in fifos), count))
