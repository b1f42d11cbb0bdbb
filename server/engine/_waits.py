"""Waiting for a set of executions to end: each one's final snapshot, those already finished at once.

A waiter subscribes to the ends of its executions on the bus before it looks where each one is, all in
one step of the loop, so no end can fall between looking and subscribing. Those held in memory end
there: the live executions retire each finished one once its end is durable, and the engine hands its
final snapshot to the bus (`EventBus.ended`). The others are read from the store in one call: a
finished one is delivered at once; one that has not finished is queued out of memory (the cold tier)
and comes back into memory before anything can end it, so its end comes through the bus too. An id
that is in neither place, or (`owner`) belongs to another identity, is NotFound, before anything is
delivered.

What ends close together (the executions one commit retires) is taken together, one batch.

A wait often comes right after its executions ended: a client submits, then waits for the result of a
quick task that has already left memory. A server that owns its database alone keeps the final
snapshots of the executions it retired last (`RecentEnds`), so such a wait is answered from memory
rather than by a store read. They are final (an execution that has ended changes no more) and forgotten
when deleted; replicas sharing a database keep none, since another replica may delete one.

May use: the bus, the store (reads), and a lookup of the live executions and of the recent ends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING

from taskwire.server.domain import Execution, NotFound, Reason, ShuttingDown
from taskwire.server.store import ExecutionSnapshot, Store

from ._bus import EndSubscription, EventBus

if TYPE_CHECKING:
    from ._live import LiveExecution

#: Final snapshots `RecentEnds` keeps: the executions of the last moments of a busy server.
RECENT_ENDS = 1_024
#: And at most about this many bytes of them (`held_bytes`).
RECENT_ENDS_BYTES = 4 * 1024 * 1024
_RECORD_BYTES = 1_024  # what a record holds besides its text and payloads, about


def held_bytes(snapshot: ExecutionSnapshot) -> int:
    """About how much memory keeping `snapshot` holds: its records, with their text and payloads."""
    execution = snapshot.execution
    total = _RECORD_BYTES + len(execution.name) + len(execution.idempotency_key) + _reason_bytes(execution.reason)
    total += sum(len(key) + len(value) for key, value in execution.metadata.items())
    total += sum(len(key) + len(value) for key, value in execution.trace_context.items())
    for task_run in snapshot.task_runs:
        total += _RECORD_BYTES + len(task_run.input.data) + _reason_bytes(task_run.reason)
        total += _reason_bytes(task_run.pending_cancel) + (len(task_run.progress.message) if task_run.progress else 0)
        for attempt in task_run.attempts:
            total += _RECORD_BYTES
            if attempt.output is not None:
                total += len(attempt.output.data)
            if attempt.error is not None:
                total += len(attempt.error.type) + len(attempt.error.message) + len(attempt.error.traceback)
    return total


def _reason_bytes(reason: Reason | None) -> int:
    return len(reason.message) if reason is not None else 0


class RecentEnds:
    """The final snapshots of the last executions to leave memory, by id, within `capacity` of them and
    `max_bytes` (`held_bytes`) in all; the oldest go first, and one larger than `max_bytes` is not kept."""

    def __init__(self, capacity: int = RECENT_ENDS, max_bytes: int = RECENT_ENDS_BYTES) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._ends: OrderedDict[str, tuple[ExecutionSnapshot, int]] = OrderedDict()  # oldest first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def keeping(self) -> bool:
        """Whether this keeps any (a replica's keeps none)."""
        return self._capacity > 0

    def remember(self, snapshot: ExecutionSnapshot) -> None:
        """An execution ended and left memory: `snapshot` is its last (its end is durable)."""
        self.forget(snapshot.execution.id)
        if not self.keeping:
            return
        size = held_bytes(snapshot)
        if size > self._max_bytes:
            return
        ends = self._ends
        ends[snapshot.execution.id] = (snapshot, size)
        self.bytes += size
        while len(ends) > self._capacity or self.bytes > self._max_bytes:
            _, (_, dropped) = ends.popitem(last=False)
            self.bytes -= dropped

    def get(self, execution_id: str) -> ExecutionSnapshot | None:
        found = self._ends.get(execution_id)
        return found[0] if found is not None else None

    def forget(self, execution_id: str) -> None:
        """The execution is being deleted."""
        found = self._ends.pop(execution_id, None)
        if found is not None:
            self.bytes -= found[1]


async def wait_ends(
    execution_ids: Sequence[str],
    *,
    bus: EventBus,
    store: Store,
    live: Callable[[str], LiveExecution | None],
    recent: RecentEnds,
    owner: str | None = None,
) -> AsyncGenerator[list[ExecutionSnapshot], None]:
    """Batches of the executions' final snapshots, each execution once: the first batch at once (those
    already finished; perhaps none), then each as they end; stops after the last. Raises NotFound (the
    first unknown id) before the first batch, ShuttingDown when the server shuts down meanwhile."""
    subscription = bus.subscribe_ends(tuple(execution_ids))
    try:
        elsewhere: list[str] = []
        for execution_id in execution_ids:
            held = live(execution_id)
            if held is not None:
                _check_owner(held.execution, owner)
            elif (ended := recent.get(execution_id)) is not None:
                _check_owner(ended.execution, owner)
                subscription.deliver(ended)
            else:
                elsewhere.append(execution_id)
        if elsewhere:
            await _deliver_stored(subscription, elsewhere, store, owner)
        yield subscription.take()
        while subscription.waiting or subscription.ended:
            if not subscription.ended:
                if subscription.closed:
                    raise ShuttingDown("the server is shutting down; wait again for the executions not received")
                await subscription.wake.wait()
                continue
            yield subscription.take()
    finally:
        bus.unsubscribe_ends(subscription)


async def _deliver_stored(
    subscription: EndSubscription, execution_ids: list[str], store: Store, owner: str | None
) -> None:
    stored = await store.get_executions(execution_ids)
    for execution_id in execution_ids:
        snapshot = stored.get(execution_id)
        if snapshot is None:
            if execution_id in subscription.waiting:
                raise NotFound("execution", execution_id)
            continue  # it came back into memory and ended while the store was read
        _check_owner(snapshot.execution, owner)
        if snapshot.execution.state.is_terminal:
            subscription.deliver(snapshot)


def _check_owner(execution: Execution, owner: str | None) -> None:
    """A caller limited to its own executions finds no other (as for an id that does not exist)."""
    if owner is not None and execution.submitted_by != owner:
        raise NotFound("execution", execution.id)
