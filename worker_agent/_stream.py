"""A session: what the worker says it is, what the Welcome said, and the stream's I/O (the single writer,
the reader, the heartbeats, and the last words on close)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import grpc
import grpc.aio

from taskwire.v1 import worker_service_pb2 as wpb

from . import _convert
from ._executor import AttemptKey
from ._limits import WireLimits
from ._outbox import Outbox, OutboxEntry


def agent_version() -> str:
    """What the worker sends as ``WorkerHello.agent_version``."""
    try:
        version = metadata.version("taskwire")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"taskwire-worker/{version} python/{python}"


def default_worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def hello_message(
    *,
    name: str,
    instance_id: str,
    handlers: list[str],
    slots: int,
    labels: dict[str, str],
    running: set[AttemptKey],
) -> wpb.WorkerMessage:
    """What the worker says it is, and the attempts it holds (for the server to adopt or reject)."""
    hello = wpb.WorkerHello(
        name=name,
        instance_id=instance_id,
        handlers=handlers,
        slots=slots,
        labels=labels,
        agent_version=agent_version(),
        running_attempts=_convert.refs(running),
    )
    return wpb.WorkerMessage(hello=hello)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """What the server said in its Welcome."""

    session_id: str
    heartbeat_interval_s: float
    lease_timeout_s: float


class SessionStream:
    """The tasks that serve one Connect call once the Welcome has arrived."""

    def __init__(
        self,
        *,
        call: Any,
        outbox: Outbox,
        running: Callable[[], list[AttemptKey]],
        limits: Callable[[], WireLimits],
        handle: Callable[[wpb.ServerMessage], None],
        flush_timeout_s: float,
    ) -> None:
        self._call = call
        self._outbox = outbox
        self._running = running
        self._limits = limits
        self._handle = handle
        self._flush_timeout_s = flush_timeout_s
        # The highest Invocation.dispatch received and handled on this stream (echoed in heartbeats).
        self._received = 0

    async def write_loop(self) -> None:
        while True:
            batch = await self._outbox.take(max_bytes=self._limits().frame_budget)
            self._stamp_heartbeats(batch)
            try:
                await self._call.write(wpb.ConnectRequest(messages=[entry.message for entry in batch]))
            except BaseException:
                self._outbox.requeue(batch)
                raise
            self._outbox.written(batch)

    async def read_loop(self) -> None:
        while True:
            frame = await self._call.read()
            if frame is grpc.aio.EOF:
                return
            for message in frame.messages:
                self._handle(message)
                if message.HasField("invocation"):
                    # After handling: the attempt is listed (or its refusal queued) before a heartbeat says so.
                    self._received = max(self._received, message.invocation.dispatch)

    async def heartbeat_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            # Its running list is filled in as it is written (see _stamp_heartbeats).
            self._outbox.put(wpb.WorkerMessage(heartbeat=wpb.Heartbeat()), session_only=True)

    def _stamp_heartbeats(self, batch: list[OutboxEntry]) -> None:
        """Give each heartbeat its exact running list as of the moment it is written: every attempt still
        running, plus every attempt with a message behind it on the stream (its terminal report, at least).
        An attempt whose report goes before the heartbeat is over by the time the server reads it."""
        later = self._outbox.queued_attempts()
        for entry in reversed(batch):
            if entry.message.HasField("heartbeat"):
                running = _convert.refs(set(self._running()) | later)
                del entry.message.heartbeat.running_attempts[:]
                entry.message.heartbeat.running_attempts.extend(running)
                entry.message.heartbeat.invocations_received = self._received
            elif entry.attempt is not None:
                later.add(entry.attempt)

    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None]) -> None:
        """Last words on a stream we are closing: flush, half-close, let the server end it."""
        await self._outbox.wait_flushed(self._flush_timeout_s)
        writer.cancel()
        await asyncio.wait({writer})
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await self._call.done_writing()
        # The server ends the stream once it has read everything; the reader sees that as EOF.
        await asyncio.wait({reader}, timeout=self._flush_timeout_s)


def describe(failure: BaseException | None) -> str:
    if isinstance(failure, grpc.aio.AioRpcError):
        return f"{failure.code().name}: {failure.details()}"
    if isinstance(failure, TimeoutError):
        return "timed out waiting for the server"
    return f"{type(failure).__name__}: {failure}" if failure is not None else "unknown"
