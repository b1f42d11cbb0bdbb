"""Admission to the bounded queue: capacity accounting with backpressure.

Capacity counts task runs accepted and not yet dispatched (PENDING or WAITING).
A submit reserves room for all its task runs at once; a fail-fast submit is
refused at once when there is no room, a wait-for-room submit waits its turn
(first come, first served) until room frees or its deadline passes. Retries
re-enter without asking: nothing accepted is ever dropped, so a burst of
retries can take the size past capacity for a while. The order task runs are
dispatched in is the dispatcher's (`_dispatch.ReadyQueues`); the size is kept
in step with task run states by the live executions (`_live.Figures`).

May use: the domain's errors.
"""

from __future__ import annotations

import asyncio
from collections import deque

from taskwire.common import QueueStats
from taskwire.server.domain import AdmissionTimeout, QueueFull, ShuttingDown


class AdmissionQueue:
    """Counts queued task runs against a capacity and admits submits in arrival order."""

    def __init__(self, *, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._closed = False

    def stats(self) -> QueueStats:
        return QueueStats(size=self.size, capacity=self.capacity, waiting_submitters=len(self._waiters))

    def _fits(self, count: int) -> bool:
        # A single submit larger than the whole capacity is admitted into an empty queue rather
        # than refused forever.
        return self.size + count <= self.capacity or self.size == 0

    async def admit(self, count: int, *, wait: bool, timeout_s: float | None) -> None:
        """Reserve room for `count` task runs, or raise QueueFull / AdmissionTimeout / ShuttingDown."""
        if self._closed:
            raise ShuttingDown("the server is shutting down and accepts no new work")
        if not self._waiters and self._fits(count):
            self.size += count
            return
        if not wait:
            raise QueueFull(size=self.size, capacity=self.capacity, requested=count)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                return  # admitted just as the deadline passed: keep the room
            self._forget(entry)
            raise AdmissionTimeout(
                f"no room in the queue before the deadline ({self.size} of {self.capacity} queued, {count} requested)"
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(count)
            else:
                self._forget(entry)
            raise

    def _forget(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        try:
            self._waiters.remove(entry)
        except ValueError:
            return
        if not entry[1].done():
            entry[1].cancel()
        self._admit_waiters()  # a large waiter leaving may let smaller ones behind it in

    def _admit_waiters(self) -> None:
        while self._waiters:
            count, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if not self._fits(count):
                return
            self._waiters.popleft()
            self.size += count
            waiter.set_result(None)

    def add(self, count: int = 1) -> None:
        """Task runs that re-enter the queue without admission (a retry after a dispatch)."""
        self.size += count

    def release(self, count: int = 1) -> None:
        """Task runs that left the queue (dispatched or ended), or a reservation not used."""
        self.size -= count
        assert self.size >= 0, "queue size went negative"
        self._admit_waiters()

    def close(self) -> None:
        """Refuse new submits and fail the waiting ones with ShuttingDown."""
        self._closed = True
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ShuttingDown("the server is shutting down and accepts no new work"))
