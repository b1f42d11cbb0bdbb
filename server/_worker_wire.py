"""The worker stream's wire side: hellos and frames decoded into domain reports, the engine's sends encoded.

`WorkerService.Connect` decodes each frame once with `decode_messages` and
hands the reports to the engine; the engine sends through a `StreamLink`
(its `WorkerLink`), which encodes each send into a `ServerMessage` at once and
queues it; `frames()` batches what is queued into the stream's responses.
Protobuf stays here and in the servicers: the engine never sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import cast

from google.protobuf import struct_pb2

from taskwire.v1 import worker_service_pb2 as wpb

from . import wire
from .domain import (
    Attempt,
    CancelAcknowledged,
    Payload,
    Reason,
    TaskFailed,
    TaskRun,
    TaskSucceeded,
    TaskTimedOut,
    ValidationError,
)
from .engine import (
    AttemptEnd,
    AttemptKey,
    AttemptLog,
    AttemptProgress,
    Draining,
    Heartbeat,
    Welcome,
    WorkerHello,
    WorkerReport,
)

log = logging.getLogger(__name__)

MAX_SLOTS = 10_000
# A frame carries what is queued, up to this many bytes (a single larger message goes alone),
# so batching never builds a frame over the gRPC message limit.
MAX_FRAME_BYTES = 1024 * 1024
# A stream's outbox over either bound is backlogged: its worker is not reading (or reads slower than it is
# sent work), and the engine sends it no more invocations until the outbox drains (or the session is
# dropped after a lease). Cancels and drains still queue: they are few and small.
MAX_OUTBOX_MESSAGES = 256
MAX_OUTBOX_BYTES = 4 * 1024 * 1024


def _no_watcher(backlogged: bool) -> None:
    pass


def _keys(refs: Iterable[wpb.AttemptRef]) -> tuple[AttemptKey, ...]:
    return tuple((ref.task_run_id, ref.attempt) for ref in refs)


def hello_from_proto(hello: wpb.WorkerHello) -> WorkerHello:
    """Check a worker's hello field by field."""
    instance_id = hello.instance_id
    if not instance_id:
        raise ValidationError("hello.instance_id", "required")
    if not hello.handlers:
        raise ValidationError("hello.handlers", "a worker must serve at least one handler")
    for index, handler in enumerate(hello.handlers):
        if not handler.strip():
            raise ValidationError(f"hello.handlers[{index}]", "must not be empty")
    if not 1 <= hello.slots <= MAX_SLOTS:
        raise ValidationError("hello.slots", f"must be between 1 and {MAX_SLOTS}, got {hello.slots}")
    return WorkerHello(
        name=hello.name or instance_id,
        instance_id=instance_id,
        handlers=frozenset(hello.handlers),
        slots=hello.slots,
        labels=dict(hello.labels),
        agent_version=hello.agent_version,
        running_attempts=_keys(hello.running_attempts),
    )


def decode_messages(messages: Iterable[wpb.WorkerMessage], worker: str) -> list[WorkerReport]:
    """A frame's messages as reports, in order. `started` says nothing the dispatch did not; a kind this
    server does not know is logged and left out; a second hello is a protocol error (ValidationError)."""
    reports: list[WorkerReport] = []
    for index, message in enumerate(messages):
        kind = message.WhichOneof("kind")
        if kind == "completed":
            completed = message.completed
            ref = completed.ref
            output = wire.payload_from_proto(completed.output)
            reports.append(AttemptEnd(ref.task_run_id, TaskSucceeded(ref.attempt, output)))
        elif kind == "failed":
            failed = message.failed
            ref = failed.ref
            event = (
                TaskTimedOut(ref.attempt)
                if failed.timed_out
                else TaskFailed(ref.attempt, wire.error_from_proto(failed.error))
            )
            reports.append(AttemptEnd(ref.task_run_id, event))
        elif kind == "cancel_acknowledged":
            ref = message.cancel_acknowledged.ref
            reports.append(AttemptEnd(ref.task_run_id, CancelAcknowledged(ref.attempt)))
        elif kind == "progress":
            progress = message.progress
            ref = progress.ref
            details = progress.details if progress.HasField("details") else None
            if details is not None and (bad := _kindless_value(details)) is not None:
                # Stored as is, it would break every protojson reader of the history (grpcurl, buf curl).
                log.warning("dropped the details of a progress report from worker %s: %s has no kind", worker, bad)
                details = None
            reports.append(AttemptProgress(ref.task_run_id, ref.attempt, progress.fraction, progress.message, details))
        elif kind == "log":
            line = message.log
            reports.append(AttemptLog(line.ref.task_run_id, line.ref.attempt, line.level, line.text))
        elif kind == "heartbeat":
            heartbeat = message.heartbeat
            received = heartbeat.invocations_received if heartbeat.HasField("invocations_received") else None
            reports.append(Heartbeat(_keys(heartbeat.running_attempts), received))
        elif kind == "draining":
            reports.append(Draining(message.draining.reason))
        elif kind == "hello":
            raise ValidationError(f"messages[{index}].hello", "a session says hello once, in its first frame")
        elif kind is None:
            # A kind this server does not know (a newer worker's): skipped, so old servers keep working.
            log.warning("skipped a message of an unknown kind from worker %s", worker)
    return reports


def _kindless_value(struct: struct_pb2.Struct, path: str = "details") -> str | None:
    """The path of the first `Value` in the Struct with no kind set (which protojson cannot print), or None."""
    pending: list[tuple[str, struct_pb2.Value]] = [(f"{path}.{key}", value) for key, value in struct.fields.items()]
    while pending:
        where, value = pending.pop()
        kind = value.WhichOneof("kind")
        if kind is None:
            return where
        if kind == "struct_value":
            pending.extend((f"{where}.{key}", item) for key, item in value.struct_value.fields.items())
        elif kind == "list_value":
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value.list_value.values))
    return None


def progress_details(report: AttemptProgress) -> struct_pb2.Struct | None:
    """The details a progress report carries: the Struct `decode_messages` put there, unread by the engine."""
    return cast(struct_pb2.Struct | None, report.details)


def welcome_to_proto(welcome: Welcome) -> wpb.ServerMessage:
    return wpb.ServerMessage(
        welcome=wpb.Welcome(
            session_id=welcome.session_id,
            heartbeat_interval=wire.duration_to_proto(welcome.heartbeat_interval),
            lease_timeout=wire.duration_to_proto(welcome.lease_timeout),
            adopted_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in welcome.adopted],
            rejected_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in welcome.rejected],
            max_payload_bytes=welcome.max_payload_bytes,
            max_message_bytes=welcome.max_message_bytes,
        )
    )


class StreamLink:
    """The engine's `WorkerLink` for one Connect stream: each send is encoded and queued for `frames()`."""

    def __init__(self) -> None:
        self._outbox: deque[tuple[wpb.ServerMessage, int]] = deque()  # each message with its size
        self._bytes = 0
        self._wake = asyncio.Event()
        self._closed = False
        self.backlogged = False
        # Told when the outbox goes over its bounds (True) and when it is back under them (False).
        self.on_backlog: Callable[[bool], None] = _no_watcher

    def _send(self, message: wpb.ServerMessage) -> None:
        if not self._closed:
            size = message.ByteSize()
            self._outbox.append((message, size))
            self._bytes += size
            self._wake.set()
            self._update_backlog()

    def _update_backlog(self) -> None:
        backlogged = len(self._outbox) >= MAX_OUTBOX_MESSAGES or self._bytes >= MAX_OUTBOX_BYTES
        if backlogged != self.backlogged:
            self.backlogged = backlogged
            self.on_backlog(backlogged)

    def invoke(
        self,
        task_run: TaskRun,
        attempt: Attempt,
        dispatch: int,
        *,
        queued_at: datetime,
        trace_context: Mapping[str, str],
        upstream: Mapping[str, Payload],
    ) -> None:
        # Filled in place: a submessage given to a constructor is copied, and there is one invocation per task.
        message = wpb.ServerMessage()
        invocation = message.invocation
        invocation.ref.task_run_id = task_run.id
        invocation.ref.attempt = attempt.number
        invocation.execution_id = task_run.execution_id
        invocation.task_id = task_run.task_id
        invocation.handler = task_run.handler
        wire.set_payload(invocation.input, task_run.input)
        if (timeout := task_run.timeout) is not None:
            invocation.timeout.FromTimedelta(timeout)
            if timeout:
                wire.set_timestamp(invocation.deadline, attempt.started_at + timeout)
        invocation.dispatch = dispatch
        if trace_context:
            invocation.trace_context.update(trace_context)
        wire.set_timestamp(invocation.queued_at, queued_at)
        for task_id, output in upstream.items():  # the dispatcher sends only the outputs there are
            wire.set_payload(invocation.upstream_outputs[task_id], output)
        self._send(message)

    def cancel(self, task_run_id: str, attempt: int, reason: Reason) -> None:
        cancel = wpb.Cancel(
            ref=wpb.AttemptRef(task_run_id=task_run_id, attempt=attempt),
            reason=wire.cancel_reason_to_proto(reason.code),
            message=reason.message,
        )
        self._send(wpb.ServerMessage(cancel=cancel))

    def drain(self, grace: timedelta | None, reason: str) -> None:
        self._send(wpb.ServerMessage(drain=wpb.Drain(grace=wire.duration_to_proto(grace), reason=reason)))

    def going_away(self, reconnect_within: timedelta, reason: str) -> None:
        going_away = wpb.GoingAway(reconnect_within=wire.duration_to_proto(reconnect_within), reason=reason)
        self._send(wpb.ServerMessage(going_away=going_away))

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def frames(self) -> AsyncIterator[wpb.ConnectResponse]:
        """Frames for the stream: everything queued since the last frame goes out together."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                frame, size = self._take_frame()
                self._bytes -= size
                if not self._closed:
                    self._update_backlog()
                yield wpb.ConnectResponse(messages=frame)
            if self._closed:
                return

    def _take_frame(self) -> tuple[list[wpb.ServerMessage], int]:
        """The next frame's messages (up to MAX_FRAME_BYTES, or one larger message alone) and their size."""
        first, size = self._outbox.popleft()
        messages = [first]
        while self._outbox and size + self._outbox[0][1] <= MAX_FRAME_BYTES:
            message, message_size = self._outbox.popleft()
            messages.append(message)
            size += message_size
        return messages, size
