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

May use: the bus, the store (reads), and a lookup of the live executions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING

from taskwire.server.domain import Execution, NotFound, ShuttingDown
from taskwire.server.store import ExecutionSnapshot, Store

from ._bus import EndSubscription, EventBus

if TYPE_CHECKING:
    from ._live import LiveExecution


async def wait_ends(
    execution_ids: Sequence[str],
    *,
    bus: EventBus,
    store: Store,
    live: Callable[[str], LiveExecution | None],
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
            if held is None:
                elsewhere.append(execution_id)
            else:
                _check_owner(held.execution, owner)
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
