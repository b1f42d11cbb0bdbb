"""Server-sent events: one response that the console writes to as a watch stream delivers.

`relay` reads a gRPC watch (an async iterator) in a task of its own into a bounded queue, and hands
the writer whatever has arrived since its last turn as one batch, so that a burst of events (a
replayed history, a progress storm) becomes one push rather than one per event. The queue being
bounded, a browser that reads slowly slows the watch, and the server drops a WatchEvents watcher
that falls too far behind (the browser's EventSource then reconnects). A comment line goes out
when nothing has for `keepalive_s`, which is also how a closed browser tab is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from aiohttp import web

T = TypeVar("T")
KEEPALIVE_S = 15.0
_QUEUE = 1000


class EventStream:
    """A `text/event-stream` response."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    @classmethod
    async def open(cls, request: web.Request) -> EventStream:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        return cls(response)

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def send(self, event: str, data: str = "", *, event_id: str | None = None) -> None:
        lines = [f"event: {event}"]
        if event_id is not None:
            lines.append(f"id: {event_id}")
        lines.extend(f"data: {line}" for line in (data.splitlines() or [""]))
        await self._response.write(("\n".join(lines) + "\n\n").encode())

    async def comment(self, text: str = "keepalive") -> None:
        await self._response.write(f": {text}\n\n".encode())


class _End(Generic[T]):
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def relay(
    stream: EventStream,
    source: AsyncIterator[T],
    write: Callable[[list[T]], Awaitable[bool]],
    *,
    keepalive_s: float = KEEPALIVE_S,
) -> BaseException | None:
    """Hand batches of `source` to `write` until it returns False, the source ends, or the browser goes.

    Returns the error that ended the source (None when it ended, or when writing stopped first).
    """
    queue: asyncio.Queue[T | _End[T]] = asyncio.Queue(maxsize=_QUEUE)

    async def read() -> None:
        error: BaseException | None = None
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # the watch broke: hand the reason to the writer
            error = exc
        await queue.put(_End(error))

    reader = asyncio.create_task(read())
    try:
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                await stream.comment()
                continue
            batch: list[T] = []
            end: _End[T] | None = None
            item: T | _End[T] = first
            while True:
                if isinstance(item, _End):
                    end = item
                    break
                batch.append(item)
                if queue.empty():
                    break
                item = queue.get_nowait()
            if batch and not await write(batch):
                return None
            if end is not None:
                return end.error
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await _close(source)


async def relay_changes(
    stream: EventStream,
    source: AsyncIterator[object],
    *,
    min_interval_s: float = 0.5,
    keepalive_s: float = KEEPALIVE_S,
) -> BaseException | None:
    """Send a `changed` event when `source` delivers, at most once per `min_interval_s`.

    For pages that re-read what they show when told: the source is read as fast as it delivers and
    nothing is buffered, so a busy server never finds this watcher behind. Returns what ended the source.
    """
    changed = asyncio.Event()
    ended: list[BaseException | None] = []

    async def read() -> None:
        try:
            async for _ in source:
                changed.set()
            ended.append(None)
        except Exception as exc:  # the watch broke: hand the reason to the writer
            ended.append(exc)
        changed.set()

    reader = asyncio.create_task(read())
    sent = 0
    try:
        while True:
            try:
                await asyncio.wait_for(changed.wait(), keepalive_s)
            except TimeoutError:
                await stream.comment()
                continue
            changed.clear()
            if ended:
                return ended[0]
            sent += 1
            await stream.send("changed", str(sent), event_id=str(sent))
            await asyncio.sleep(min_interval_s)  # what arrives meanwhile makes one more `changed`
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await _close(source)


async def _close(source: AsyncIterator[object]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
