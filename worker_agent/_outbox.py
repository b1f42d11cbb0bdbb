"""The outbox: every message the worker sends waits here until one writer puts it on the stream.

Whatever is ready when the writer comes round goes out as one frame; the writer never waits for more.
A message queued with ``linger=True`` (AttemptStarted) does not wake the writer by itself: it goes out
with the next frame written for any other reason (typically its attempt's terminal report), or alone
after ``LINGER_S``. A worker with few slots then writes one frame per task rather than two.
Messages about attempts outlive a broken stream (they are sent on the next session, or dropped when
the server rejects the attempt); heartbeats and Draining belong to the session they were made for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from taskwire.v1 import worker_service_pb2 as wpb

from ._executor import AttemptKey

_log = logging.getLogger("taskwire.worker.outbox")

#: The longest a lingering message waits for a frame to ride with before it goes out alone.
LINGER_S = 0.02


@dataclass(slots=True, eq=False, kw_only=True)
class OutboxEntry:
    """One queued message."""

    message: wpb.WorkerMessage
    #: The attempt the message is about, if any.
    attempt: AttemptKey | None = None
    #: Heartbeats and Draining: meaningless on any stream but the one they were made for.
    session_only: bool = False
    #: Progress and log lines: dropped (oldest first) rather than letting the outbox grow without bound.
    droppable: bool = False
    #: The message's encoded size.
    size: int = 0
    #: Goes out with the next frame rather than waking the writer (for at most LINGER_S).
    linger: bool = False


class Outbox:
    """A FIFO of outgoing messages with one consumer (the session's writer)."""

    def __init__(self, *, max_buffered: int = 10_000, max_batch: int = 256) -> None:
        self._queue: deque[OutboxEntry] = deque()
        self._in_flight: list[OutboxEntry] = []
        self._max_buffered = max_buffered
        self._max_batch = max_batch
        self._ready = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingered = False  # the lingering messages have waited long enough: the writer takes them
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue) + len(self._in_flight)

    def put(
        self,
        message: wpb.WorkerMessage,
        *,
        attempt: AttemptKey | None = None,
        session_only: bool = False,
        droppable: bool = False,
        front: bool = False,
        linger: bool = False,
    ) -> None:
        """Queue a message (at the front with ``front=True``, for messages that must overtake reports;
        with ``linger=True``, to go out with the next frame, see the module's docstring)."""
        if droppable and len(self._queue) >= self._max_buffered and not self._drop_oldest_droppable():
            self._count_drop()
            return
        entry = OutboxEntry(
            message=message,
            attempt=attempt,
            session_only=session_only,
            droppable=droppable,
            size=message.ByteSize(),
            linger=linger,
        )
        if front:
            self._queue.appendleft(entry)
        else:
            self._queue.append(entry)
        self._changed()

    async def take(self, *, max_bytes: int | None = None) -> list[OutboxEntry]:
        """Wait for at least one message, then take everything ready, up to the batch size and to
        ``max_bytes`` of messages (always at least one message).

        The caller reports back with :meth:`written` or :meth:`requeue`.
        """
        while not self._ready.is_set():
            await self._ready.wait()
        self._lingered = False
        batch = [self._queue.popleft()]
        total = batch[0].size
        while self._queue and len(batch) < self._max_batch:
            if max_bytes is not None and total + self._queue[0].size > max_bytes:
                break
            entry = self._queue.popleft()
            total += entry.size
            batch.append(entry)
        self._in_flight.extend(batch)
        self._changed()
        return batch

    def written(self, batch: Iterable[OutboxEntry]) -> None:
        """The batch is on the stream."""
        sent = set(map(id, batch))
        self._in_flight = [e for e in self._in_flight if id(e) not in sent]
        self._changed()

    def requeue(self, batch: list[OutboxEntry]) -> None:
        """Writing the batch failed: put it back in front, in order, without its session-only messages."""
        failed = set(map(id, batch))
        self._in_flight = [e for e in self._in_flight if id(e) not in failed]
        self._queue.extendleft(reversed([e for e in batch if not e.session_only]))
        self._changed()

    def end_session(self) -> None:
        """The stream is gone: forget heartbeats and Draining made for it."""
        self._queue = deque(e for e in self._queue if not e.session_only)
        self._changed()

    def drop_attempt(self, attempt: AttemptKey) -> int:
        """Forget every queued message about ``attempt``; returns how many there were."""
        before = len(self._queue)
        self._queue = deque(e for e in self._queue if e.attempt != attempt)
        self._changed()
        return before - len(self._queue)

    def queued_attempts(self) -> set[AttemptKey]:
        """Attempts with messages still waiting for the writer (not those in the batch being written)."""
        return {e.attempt for e in self._queue if e.attempt is not None}

    def pending_attempts(self) -> set[AttemptKey]:
        """Attempts with messages not yet on a stream (their terminal report, typically)."""
        return {e.attempt for e in (*self._queue, *self._in_flight) if e.attempt is not None}

    async def wait_flushed(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued has been written; False if ``timeout_s`` passed first."""
        self._lingered = True  # nothing waits for company now
        self._changed()
        try:
            async with asyncio.timeout(timeout_s):
                await self._flushed.wait()
        except TimeoutError:
            return False
        return True

    def _changed(self) -> None:
        if not self._queue and self._linger_timer is not None:
            # Nothing left to linger: the timer would only wake the loop.
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._queue and (self._lingered or not self._only_lingering()):
            self._ready.set()
        else:
            self._ready.clear()
            if self._queue and self._linger_timer is None:
                self._start_lingering()
        if self._queue or self._in_flight:
            self._flushed.clear()
        else:
            self._flushed.set()

    def _only_lingering(self) -> bool:
        queue = self._queue
        # Either end first: a report put last, or one left in front, decides without a walk.
        if not queue[-1].linger or not queue[0].linger:
            return False
        return all(entry.linger for entry in queue)

    def _start_lingering(self) -> None:
        """Only lingering messages are queued: the writer takes them in LINGER_S, if nothing comes first."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on: they go at once
            self._lingered = True
            self._ready.set()
            return
        self._linger_timer = loop.call_later(LINGER_S, self._linger_over)

    def _linger_over(self) -> None:
        self._linger_timer = None
        if self._queue:
            self._lingered = True
            self._changed()

    def _drop_oldest_droppable(self) -> bool:
        for index, entry in enumerate(self._queue):
            if entry.droppable:
                del self._queue[index]
                self._count_drop()
                return True
        return False

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            _log.warning("outbox full: dropped %d progress/log messages so far", self.dropped)
