"""The worker stream's gRPC adapter: one session per `WorkerService.Connect` stream, frames decoded by
`taskwire.server._worker_wire` and handed to the engine, its sends written back through the stream's
context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.v1 import worker_service_pb2_grpc

from . import wire
from ._auth import current_caller
from ._config import ServerConfig
from ._edge import Malformed, RejectionLog
from ._worker_wire import StreamLink, decode_messages, hello_from_proto, welcome_to_proto
from .domain import TaskwireError, ValidationError
from .engine import Engine, WorkerSession

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
_HAND_OVER_S = 2.0
_HAND_OVER_LEASE_SHARE = 0.75


def _opening_frame(frame: wpb.ConnectRequest | Malformed) -> wpb.ConnectRequest:
    if isinstance(frame, Malformed):
        raise frame.refusal("frame")
    if not frame.messages or frame.messages[0].WhichOneof("kind") != "hello":
        raise ValidationError("messages[0]", "the first message of a session must be a hello")
    return frame


class WorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    """One session per stream. Protocol errors end the stream with a status: no hello within the lease
    timeout (DEADLINE_EXCEEDED), a first message that is not a hello, a second hello or a frame whose bytes
    do not parse (INVALID_ARGUMENT). The session's attempts keep their lease: the worker may reconnect."""

    def __init__(self, *, engine: Engine, config: ServerConfig, rejections: RejectionLog) -> None:
        self._engine = engine
        self._hello_timeout_s = config.lease_timeout.total_seconds()
        # How long a worker's hello waits for other replicas to hand over its running attempts: long enough for a
        # holder that died to be adopted (its lease lapses, and the leader's with it), which then answers; short
        # of the worker's lease, which its attempts keep meanwhile (at their holder, from their adoption).
        self._hand_over_s = min(
            _HAND_OVER_LEASE_SHARE * self._hello_timeout_s,
            max(_HAND_OVER_S, 2 * config.store_lease.total_seconds()),
        )
        self._rejections = rejections

    # The generated stub types a streaming handler as a generator; grpc.aio also serves one that returns
    # None after writing through its context.
    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[wpb.ConnectRequest | Malformed], context: Context
    ) -> None:
        # Frames are read with context.read() and written with context.write(): each passes through no
        # generator of ours (a worker with one slot sends and receives a frame per task).
        try:
            async with asyncio.timeout(self._hello_timeout_s):
                first = await context.read()
        except TimeoutError:
            await self._refuse(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no hello within {self._hello_timeout_s:g}s of opening the stream",
            )
        if first is grpc.aio.EOF:
            return
        try:
            opening = _opening_frame(first)
            hello = hello_from_proto(opening.messages[0].hello)
            ticket = self._engine.hello_read()
            link = StreamLink()
            # In replica mode, the executions of its running attempts another replica holds are asked of it first.
            identity = current_caller().identity
            await self._engine.replicas.take_over(
                hello.running_attempts,
                self._hand_over_s,
                instance_id=hello.instance_id,
                identity=identity,
                hello_at=ticket.at,
            )
            # Refused (UNAVAILABLE) while the server is going away: the worker comes back to the next one.
            session, welcome = self._engine.connect_worker(hello, link, identity=identity, ticket=ticket)
        except TaskwireError as error:
            await self._refuse(context, wire.status_for(error), error.message)
        link.on_backlog = lambda backlogged: self._engine.worker_backlogged(session, backlogged)
        failure: TaskwireError | None = None
        try:
            await context.write(wpb.ConnectResponse(messages=[welcome_to_proto(welcome)]))
            if len(opening.messages) > 1:
                self._engine.on_worker_frame(session, decode_messages(opening.messages[1:], session.name))
            reader = asyncio.create_task(self._read(context, session, link), name=f"worker-reader-{session.name}")
            try:
                async for frame in link.frames():
                    await context.write(frame)
            finally:
                reader.cancel()
                results = await asyncio.gather(reader, return_exceptions=True)
                failure = next((r for r in results if isinstance(r, TaskwireError)), None)
        finally:
            self._engine.disconnect_worker(session)
        if failure is not None:
            await self._refuse(context, wire.status_for(failure), failure.message)

    async def _refuse(self, context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
        self._rejections.rejected("Connect", context.peer(), "%s", message)
        await context.abort(code, message)

    async def _read(self, context: Context, session: WorkerSession, link: StreamLink) -> None:
        """Apply the worker's frames; a protocol error is raised (and ends the stream with its status)."""
        closed_by_worker = False
        try:
            while (frame := await context.read()) is not grpc.aio.EOF:
                if isinstance(frame, Malformed):
                    raise frame.refusal("frame")
                self._engine.on_worker_frame(session, decode_messages(frame.messages, session.name))
            closed_by_worker = True
        except asyncio.CancelledError:
            raise
        except TaskwireError:
            link.close()
            raise
        except Exception as error:
            log.info("stream of worker %s broke: %s", session.name, error)
        finally:
            # However the stream ended, the session stops sending; its leases decide the rest.
            self._engine.disconnect_worker(session, closed_by_worker=closed_by_worker)
