"""What the worker end-to-end tests share: readers of attempts and histories, samplers, a scripted worker.

Everything runs against a real `taskwire-server` and real `taskwire-worker` processes (see
`tests.harness`); the scripted worker is a real gRPC peer on a real `WorkerService.Connect` stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import grpc.aio
import psutil

from taskwire.client import (
    AsyncClient,
    Attempt,
    AttemptOutcome,
    Client,
    ExecutionSnapshot,
    ReasonCode,
    State,
    Stats,
    TaskLog,
    TaskProgress,
    TaskRun,
    TaskRunTransition,
    WatchEvent,
    WorkerInfo,
)
from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.v1 import worker_service_pb2_grpc
from tests.harness import Process, ServerProcess, wait_for

# What the `server` fixture passes: --lease-timeout 2 --heartbeat-interval 0.5 --cancel-grace 2.
LEASE_TIMEOUT_S = 2.0
HEARTBEAT_INTERVAL_S = 0.5
CANCEL_GRACE_S = 2.0
# How long a test waits for an execution that should end by itself.
FINISH = timedelta(seconds=30)
# Scheduling slack allowed on a timing assertion (a busy CI machine runs two test processes at once).
SLACK_S = 1.0

Ref = tuple[str, int]  # (task run id, attempt number)
T = TypeVar("T")


# ---- Reading executions -------------------------------------------------------------------------


def only_run(snapshot: ExecutionSnapshot) -> TaskRun:
    assert len(snapshot.task_runs) == 1, snapshot
    return snapshot.task_runs[0]


def wait_until_running(client: Client, execution_id: str, *, attempt: int = 1, timeout_s: float = 20.0) -> TaskRun:
    """Wait until the single task run is RUNNING with its attempt number `attempt`; returns it."""

    def running() -> TaskRun | None:
        run = only_run(client.get(execution_id))
        assert run.state.is_active, f"the task run ended before attempt {attempt} ran: {run}"
        if run.state is State.RUNNING and run.attempt_count == attempt:
            return run
        return None

    return wait_for(running, timeout_s=timeout_s, what=f"attempt {attempt} of {execution_id} to run")


def wait_until_handler_reports(client: Client, execution_id: str, *, timeout_s: float = 20.0) -> TaskRun:
    """Wait until the single task run's handler has reported progress; returns the run. RUNNING alone is set
    when the attempt is dispatched, before its worker has read the invocation: a signal sent to the worker
    then may find it with nothing running yet."""

    def reporting() -> TaskRun | None:
        run = only_run(client.get(execution_id))
        assert run.state.is_active, f"the task run ended before its handler reported: {run}"
        return run if run.state is State.RUNNING and run.progress is not None else None

    return wait_for(reporting, timeout_s=timeout_s, what=f"the handler of {execution_id} to report progress")


def reason_code(record: ExecutionSnapshot | TaskRun) -> ReasonCode | None:
    return record.reason.code if record.reason is not None else None


def error_type(attempt: Attempt) -> str | None:
    return attempt.error.type if attempt.error is not None else None


def ended(attempt: Attempt) -> datetime:
    assert attempt.ended_at is not None, attempt
    return attempt.ended_at


def max_overlap(attempts: Iterable[Attempt]) -> int:
    """The most attempts running at one instant, from their recorded start and end times.

    An end at the same instant as a start is counted first: a slot freed and reused at once is one slot.
    """
    edges: list[tuple[datetime, int]] = []
    for attempt in attempts:
        edges.append((attempt.started_at, 1))
        edges.append((ended(attempt), -1))
    edges.sort()
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---- Watching and sampling in the background ----------------------------------------------------


class Collector:
    """Reads one WatchExecution stream to its end on a thread; `join()` returns every event received."""

    def __init__(self, server: ServerProcess, execution_id: str) -> None:
        self.events: list[WatchEvent] = []
        self._client = Client(server.address)
        self._execution_id = execution_id
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._client.watch(self._execution_id, timeout=FINISH):
                self.events.append(event)
        except BaseException as error:
            self._error = error

    def join(self, timeout_s: float = 40.0) -> list[WatchEvent]:
        self._thread.join(timeout_s)
        self._client.close()
        assert not self._thread.is_alive(), "the watch did not end"
        if self._error is not None:
            raise self._error
        return self.events


@dataclass
class Sample:
    stats: Stats
    workers: list[WorkerInfo]


@dataclass
class Sampler:
    """Samples GetStats and ListWorkers about every 10 ms, on a thread, until stopped."""

    server: ServerProcess
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with Client(self.server.address) as client:
                while True:
                    self.samples.append(Sample(client.stats(), client.workers()))
                    if self._stop.wait(0.01):  # a sampling cadence that leaves the machine some room
                        return
        except BaseException as error:
            self._error = error

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(20)
        if self._error is not None:
            raise self._error
        return self.samples


# ---- Worker processes ---------------------------------------------------------------------------


def ended_line(worker: Process, ref: Ref, *, timeout_s: float = 20.0) -> str:
    """What the worker logged about how an attempt ended ("completed", "cancelled (cancelled)", ...)."""
    pattern = re.escape(f"attempt {ref[0]}#{ref[1]} (") + r"[^)]*\) ended: (.*)$"
    return worker.wait_for_line(pattern, timeout_s=timeout_s).group(1)


def children(worker: Process) -> list[tuple[psutil.Process, str]]:
    """The worker's child processes with their command lines ("?" when unreadable, as for a zombie)."""
    try:
        found = psutil.Process(worker.popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    result = []
    for child in found:
        try:
            result.append((child, " ".join(child.cmdline())))
        except psutil.NoSuchProcess:
            continue  # reaped meanwhile: gone
        except psutil.AccessDenied:
            result.append((child, "?"))
    return result


def other_than_resource_tracker(worker: Process) -> list[tuple[psutil.Process, str]]:
    """Every child but multiprocessing's resource tracker, which lives as long as the worker."""
    return [(child, command) for child, command in children(worker) if "resource_tracker" not in command]


def worker_named(client: Client, name: str) -> WorkerInfo | None:
    return next((info for info in client.workers() if info.name == name), None)


# ---- A scripted worker --------------------------------------------------------------------------


def ref_of(invocation: wpb.Invocation) -> Ref:
    return (invocation.ref.task_run_id, invocation.ref.attempt)


def attempt_ref(ref: Ref) -> wpb.AttemptRef:
    return wpb.AttemptRef(task_run_id=ref[0], attempt=ref[1])


def started(ref: Ref) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(started=wpb.AttemptStarted(ref=attempt_ref(ref)))


def completed(ref: Ref, output: object) -> wpb.WorkerMessage:
    payload = pb.Payload(data=json.dumps(output).encode(), content_type="application/json")
    return wpb.WorkerMessage(completed=wpb.AttemptCompleted(ref=attempt_ref(ref), output=payload))


def heartbeat(running: Iterable[Ref] = ()) -> wpb.WorkerMessage:
    return wpb.WorkerMessage(heartbeat=wpb.Heartbeat(running_attempts=[attempt_ref(ref) for ref in running]))


class ScriptedWorker:
    """A worker whose every move the test makes, over a real `WorkerService.Connect` stream.

    Create and use it inside one event loop. Heartbeats are sent only between `start_heartbeats` and
    `stop_heartbeats`, so a test can let its lease lapse on purpose.
    """

    def __init__(self, address: str, *, name: str, handlers: Sequence[str] = ("scripted",), slots: int = 1) -> None:
        self.address = address
        self.name = name
        self.instance_id = str(uuid.uuid4())
        self.handlers = list(handlers)
        self.slots = slots
        self.running: set[Ref] = set()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None  # grpc.aio's StreamStreamCall
        self._inbox: asyncio.Queue[wpb.ServerMessage | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.stream_ended = asyncio.Event()

    async def connect(self, *, reporting: Iterable[Ref] = ()) -> wpb.Welcome:
        """Open a stream, say hello (listing `reporting` as running) and return the server's Welcome."""
        await self._close_stream()
        self.stream_ended = asyncio.Event()
        self._inbox = asyncio.Queue()
        self._channel = grpc.aio.insecure_channel(self.address)
        self._call = worker_service_pb2_grpc.WorkerServiceStub(self._channel).Connect()
        hello = wpb.WorkerHello(
            name=self.name,
            instance_id=self.instance_id,
            handlers=self.handlers,
            slots=self.slots,
            agent_version="scripted-test-worker",
            running_attempts=[attempt_ref(ref) for ref in reporting],
        )
        await self._call.write(wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)]))
        async with asyncio.timeout(10):
            frame = await self._call.read()
        assert frame is not grpc.aio.EOF, "the server ended the stream instead of answering the hello"
        first, *rest = frame.messages
        assert first.WhichOneof("kind") == "welcome", first
        for message in rest:
            self._inbox.put_nowait(message)
        self._reader = asyncio.create_task(self._read())
        welcome: wpb.Welcome = first.welcome
        return welcome

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._call.read()
                if frame is grpc.aio.EOF:
                    return
                for message in frame.messages:
                    self._inbox.put_nowait(message)
        except grpc.RpcError:
            return
        finally:
            self.stream_ended.set()
            self._inbox.put_nowait(None)

    async def next(self, kind: str, *, timeout_s: float = 10.0) -> wpb.ServerMessage:
        """The next message from the server, which must be of `kind` ("invocation", "cancel", ...)."""
        async with asyncio.timeout(timeout_s):
            message = await self._inbox.get()
        assert message is not None, f"the stream ended while waiting for {kind}"
        assert message.WhichOneof("kind") == kind, f"expected {kind}, got {message}"
        return message

    async def invocation(self, *, timeout_s: float = 10.0) -> wpb.Invocation:
        """Wait for the next invocation, and tell the server it started."""
        invocation = (await self.next("invocation", timeout_s=timeout_s)).invocation
        self.running.add(ref_of(invocation))
        await self.send(started(ref_of(invocation)))
        return invocation

    async def send(self, *messages: wpb.WorkerMessage) -> None:
        """One frame carrying these messages."""
        async with self._write_lock:
            await self._call.write(wpb.ConnectRequest(messages=list(messages)))

    def start_heartbeats(self, interval_s: float = 0.2) -> None:
        async def beat() -> None:
            while True:
                await self.send(heartbeat(self.running))
                await asyncio.sleep(interval_s)

        self._heartbeats = asyncio.create_task(beat())

    async def stop_heartbeats(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
            self._heartbeats = None

    async def _close_stream(self) -> None:
        await self.stop_heartbeats()
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def close(self) -> None:
        await self._close_stream()


def json_output(attempt: Attempt) -> object:
    assert attempt.output is not None, attempt
    return json.loads(attempt.output.data)


def transitions(events: Iterable[WatchEvent], task_id: str | None = None) -> list[TaskRunTransition]:
    return [e for e in events if isinstance(e, TaskRunTransition) and (task_id is None or e.task_id == task_id)]


def logs_of(events: Iterable[WatchEvent], task_id: str) -> list[TaskLog]:
    return [e for e in events if isinstance(e, TaskLog) and e.task_id == task_id]


def progress_of(events: Iterable[WatchEvent], task_id: str) -> list[TaskProgress]:
    return [e for e in events if isinstance(e, TaskProgress) and e.task_id == task_id]


def outcomes(run: TaskRun) -> list[AttemptOutcome]:
    return [attempt.outcome for attempt in run.attempts]


async def until(condition: Callable[[], Awaitable[T | None]], *, what: str, timeout_s: float = 20.0) -> T:
    """`tests.harness.wait_for` for asyncio code: poll an async condition until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pause = 0.01
    while True:
        value = await condition()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.2)


async def history(client: AsyncClient, execution_id: str) -> list[WatchEvent]:
    """The whole stored history of a finished execution."""
    return [event async for event in client.watch(execution_id, timeout=FINISH)]


__all__ = [
    "CANCEL_GRACE_S",
    "FINISH",
    "HEARTBEAT_INTERVAL_S",
    "LEASE_TIMEOUT_S",
    "SLACK_S",
    "Collector",
    "Ref",
    "Sample",
    "Sampler",
    "ScriptedWorker",
    "children",
    "completed",
    "ended",
    "ended_line",
    "error_type",
    "history",
    "json_output",
    "logs_of",
    "max_overlap",
    "only_run",
    "other_than_resource_tracker",
    "outcomes",
    "progress_of",
    "reason_code",
    "ref_of",
    "started",
    "transitions",
    "until",
    "utc_now",
    "wait_until_running",
    "worker_named",
]
