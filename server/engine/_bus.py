"""The event bus: live history events to watchers, after they are durable.

A watcher that falls too far behind is not allowed to hold memory without
bound: its queue overflows, it is told so, and it catches up from the store.
The committer publishes here after each durable write; the history room
subscribes watchers.

May use: the store's records.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from taskwire.server.store import EventRecord


@dataclass(eq=False)
class Subscription:
    execution_id: str
    queue: asyncio.Queue[EventRecord]
    overflowed: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class EventBus:
    def __init__(self, *, max_backlog: int = 10_000) -> None:
        self._max_backlog = max_backlog
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)

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

    def publish(self, events: list[EventRecord]) -> None:
        for event in events:
            for subscription in self._subscribers.get(event.execution_id, ()):
                try:
                    subscription.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscription.overflowed = True

    def close(self) -> None:
        """Wake every watcher so its stream can end (server shutdown)."""
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.closed.set()

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
