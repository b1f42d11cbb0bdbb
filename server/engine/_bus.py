"""The event bus: live history events to watchers, after they are durable.

A watcher that falls too far behind is not allowed to hold memory without
bound: its queue overflows, it is told so, and it catches up from the store.
The committer publishes here after each durable write; the history room
subscribes watchers.

A watcher of all executions (`subscribe_all`) has no store to catch up from:
it is live only, so one that overflows its smaller buffer is dropped (its
`overflowed` flag is set and it is woken) and receives nothing more. It sees
only what its `EventFilter` matches, on the `EventScope` the history attaches
to each event while anyone watches all executions.

A waiter on the ends of a set of executions (`subscribe_ends`) receives each
one's final snapshot when the live executions retire it, right after the
events of the commit that made its end durable were published here.

May use: the domain's states, the store's records.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from taskwire.server.domain import State
from taskwire.server.store import EventRecord, EventScope, ExecutionSnapshot


@dataclass(eq=False)
class Subscription:
    execution_id: str
    queue: asyncio.Queue[EventRecord]
    overflowed: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a watcher of all executions receives; the empty filter receives all."""

    handler: str = ""  # an execution with a task run of this handler
    states: frozenset[State] = frozenset()  # the execution's state before or after the event is one of these

    def matches(self, scope: EventScope | None) -> bool:
        if not self.handler and not self.states:
            return True
        if scope is None:  # staged before anyone watched all executions
            return False
        if self.handler and self.handler not in scope.handlers:
            return False
        return not self.states or not self.states.isdisjoint(scope.states)


@dataclass(eq=False)
class AllSubscription:
    filter: EventFilter
    queue: asyncio.Queue[EventRecord]
    overflowed: bool = False  # dropped: it fell behind and will receive nothing more
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set when dropped or at shutdown


@dataclass(eq=False)
class EndSubscription:
    """Waits for the ends of a set of executions: each one's final snapshot, delivered once."""

    execution_ids: tuple[str, ...]
    waiting: set[str]  # not delivered yet
    ended: list[ExecutionSnapshot] = field(default_factory=list)  # delivered, not taken yet
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set on a delivery and at shutdown
    closed: bool = False  # the server shuts down

    def deliver(self, snapshot: ExecutionSnapshot) -> None:
        """Hand over an execution's end (once: a second delivery of the same execution is ignored)."""
        execution_id = snapshot.execution.id
        if execution_id in self.waiting:
            self.waiting.discard(execution_id)
            self.ended.append(snapshot)
            self.wake.set()

    def take(self) -> list[ExecutionSnapshot]:
        """The ends delivered since the last take."""
        ended, self.ended = self.ended, []
        self.wake.clear()
        return ended


class EventBus:
    def __init__(self, *, max_backlog: int = 10_000, max_all_backlog: int = 1_000) -> None:
        self._max_backlog = max_backlog
        self._max_all_backlog = max_all_backlog
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._all: set[AllSubscription] = set()
        self._ends: dict[str, list[EndSubscription]] = {}  # by execution id: those who wait for its end
        self._end_waiters: set[EndSubscription] = set()
        self._closed = False

    def subscribe(self, execution_id: str) -> Subscription:
        subscription = Subscription(execution_id, asyncio.Queue(maxsize=self._max_backlog))
        self._subscribers[execution_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.execution_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.execution_id]

    def subscribe_all(self, event_filter: EventFilter) -> AllSubscription:
        subscription = AllSubscription(event_filter, asyncio.Queue(maxsize=self._max_all_backlog))
        self._all.add(subscription)
        return subscription

    def unsubscribe_all(self, subscription: AllSubscription) -> None:
        self._all.discard(subscription)

    def subscribe_ends(self, execution_ids: tuple[str, ...]) -> EndSubscription:
        subscription = EndSubscription(execution_ids, set(execution_ids), closed=self._closed)
        ends = self._ends
        for execution_id in execution_ids:
            waiters = ends.get(execution_id)
            if waiters is None:
                ends[execution_id] = [subscription]
            else:
                waiters.append(subscription)
        self._end_waiters.add(subscription)
        return subscription

    def unsubscribe_ends(self, subscription: EndSubscription) -> None:
        ends = self._ends
        for execution_id in subscription.execution_ids:
            waiters = ends.get(execution_id)
            if waiters is not None and subscription in waiters:
                waiters.remove(subscription)
                if not waiters:
                    del ends[execution_id]
        subscription.waiting = set()
        self._end_waiters.discard(subscription)

    def awaited(self, execution_id: str) -> bool:
        """Whether anyone waits for the execution's end."""
        return execution_id in self._ends

    def ended(self, snapshot: ExecutionSnapshot) -> None:
        """An execution finished and its end is durable: hand its final snapshot to those who wait for it."""
        for subscription in self._ends.pop(snapshot.execution.id, ()):
            subscription.deliver(snapshot)

    @property
    def watching_all(self) -> bool:
        """Whether anyone watches all executions (the history attaches scopes only then)."""
        return bool(self._all)

    def followed(self) -> set[str]:
        """The executions someone here watches or waits for the end of."""
        return {*self._subscribers, *self._ends}

    def publish(self, events: list[EventRecord], *, to_all: bool = True) -> None:
        """`to_all` False: not to watchers of all executions (events committed by another replica)."""
        for event in events:
            for subscription in self._subscribers.get(event.execution_id, ()):
                try:
                    subscription.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscription.overflowed = True
        if self._all and to_all:
            self._publish_all(events)

    def _publish_all(self, events: list[EventRecord]) -> None:
        for subscription in list(self._all):
            matches = subscription.filter.matches
            for event in events:
                if not matches(event.scope):
                    continue
                try:
                    subscription.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscription.overflowed = True
                    subscription.closed.set()
                    self._all.discard(subscription)
                    break

    def close(self) -> None:
        """Wake every watcher so its stream can end (server shutdown)."""
        self._closed = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.closed.set()
        for every in self._all:
            every.closed.set()
        for waiter in self._end_waiters:
            waiter.closed = True
            waiter.wake.set()

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values()) + len(self._all) + len(self._end_waiters)
