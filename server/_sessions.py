"""Worker sessions: one per Connect stream, with its slots, its held attempts and its outbox.

A session holds an attempt from dispatch until its worker reports how the
attempt ended (completed, failed or cancel acknowledged). Holding is what
counts against the worker's slots, so the server never sends a worker more
invocations than it declared, even while a fenced attempt is still stopping
over there. Holding is also what the lease covers: when a session goes silent
for the lease timeout, every attempt it holds is lost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from taskwire.v1 import worker_service_pb2 as wpb

AttemptKey = tuple[str, int]  # (task run id, attempt number)

# A frame carries what is queued, up to this many bytes (a single larger message goes alone),
# so batching never builds a frame over the gRPC message limit.
MAX_FRAME_BYTES = 1024 * 1024


@dataclass(eq=False, kw_only=True)
class WorkerSession:
    session_id: str
    instance_id: str
    name: str
    handlers: frozenset[str]
    slots: int
    labels: dict[str, str]
    agent_version: str
    connected_at: datetime
    last_seen_at: datetime
    last_seen: float  # monotonic seconds
    held: set[AttemptKey] = field(default_factory=set)
    draining: bool = False
    connected: bool = True
    _outbox: deque[wpb.ServerMessage] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def free_slots(self) -> int:
        if not self.connected or self.draining:
            return 0
        return max(self.slots - len(self.held), 0)

    def seen(self, monotonic_s: float, at: datetime) -> None:
        self.last_seen = monotonic_s
        self.last_seen_at = at

    def send(self, message: wpb.ServerMessage) -> None:
        if self.connected:
            self._outbox.append(message)
            self._wake.set()

    def disconnect(self) -> None:
        """The stream is gone (or must go): stop sending; the held attempts wait for their lease."""
        self.connected = False
        self._wake.set()

    async def frames(self) -> AsyncIterator[wpb.ConnectResponse]:
        """Frames for the stream: everything queued since the last frame goes out together."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                yield wpb.ConnectResponse(messages=self._take_frame())
            if not self.connected:
                return

    def _take_frame(self) -> list[wpb.ServerMessage]:
        messages = [self._outbox.popleft()]
        size = messages[0].ByteSize()
        while self._outbox:
            size += self._outbox[0].ByteSize()
            if size > MAX_FRAME_BYTES:
                break
            messages.append(self._outbox.popleft())
        return messages
