"""An engine in the test's own loop: the in-memory store, a manual clock, and fake workers.

A `FakeWorker` is a plain object: the engine sends to it through its link (the
calls are recorded), and the test speaks for it with the domain reports a real
stream would decode into. Time moves only when the test advances the clock; the
engine's call-soon work (a dispatch pass after a worker connects or a slot
frees) runs when the test waits for a condition with `until`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from taskwire.server._config import ServerConfig
from taskwire.server._history_wire import ProtoHistoryCodec
from taskwire.server.domain import (
    Attempt,
    CancelAcknowledged,
    ErrorInfo,
    ExecutionSpec,
    Payload,
    Reason,
    State,
    TaskFailed,
    TaskRun,
    TaskSpec,
    TaskSucceeded,
    TaskTimedOut,
)
from taskwire.server.engine import (
    AttemptEnd,
    AttemptKey,
    AttemptLog,
    AttemptProgress,
    Draining,
    Engine,
    Heartbeat,
    ManualClock,
    Welcome,
    WorkerHello,
    WorkerReport,
    WorkerSession,
)
from taskwire.server.store import ExecutionSnapshot, MemoryStore, Store, WriteBatch

CONFIG = ServerConfig(
    heartbeat_interval=timedelta(seconds=5),
    lease_timeout=timedelta(seconds=30),
    cancel_grace=timedelta(seconds=10),
)
OUTPUT = Payload(b'{"ok": true}')


async def until(condition: Callable[[], object], what: str = "the condition") -> None:
    """Let the loop run the engine's call-soon work until `condition` holds. No clock is read."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} never held")


async def idle(turns: int = 10) -> None:
    """Let the loop run whatever is ready (for checking that something did not happen). No clock moves."""
    for _ in range(turns):
        await asyncio.sleep(0)


@dataclass(frozen=True)
class Invoked:
    task_run: TaskRun
    attempt: Attempt
    dispatch: int = 0

    @property
    def key(self) -> AttemptKey:
        return (self.task_run.id, self.attempt.number)


@dataclass(frozen=True)
class Cancelled:
    task_run_id: str
    attempt: int
    reason: Reason


@dataclass(frozen=True)
class Drained:
    grace: timedelta | None
    reason: str


@dataclass(frozen=True)
class ToldGoingAway:
    reconnect_within: timedelta
    reason: str


@dataclass(eq=False)
class FakeLink:
    """The engine's `WorkerLink`, recording what it is sent."""

    sent: list[Invoked | Cancelled | Drained | ToldGoingAway] = field(default_factory=list)
    closed: bool = False

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
        assert not self.closed, "sent an invocation on a closed link"
        self.sent.append(Invoked(task_run, attempt, dispatch))

    def cancel(self, task_run_id: str, attempt: int, reason: Reason) -> None:
        assert not self.closed, "sent a cancel on a closed link"
        self.sent.append(Cancelled(task_run_id, attempt, reason))

    def drain(self, grace: timedelta | None, reason: str) -> None:
        self.sent.append(Drained(grace, reason))

    def going_away(self, reconnect_within: timedelta, reason: str) -> None:
        self.sent.append(ToldGoingAway(reconnect_within, reason))

    def close(self) -> None:
        self.closed = True


@dataclass(eq=False)
class FakeWorker:
    engine: Engine
    session: WorkerSession
    welcome: Welcome
    link: FakeLink
    silent: bool = False  # a silent worker sends no heartbeats while the rig advances the clock

    @property
    def invocations(self) -> list[Invoked]:
        return [message for message in self.link.sent if isinstance(message, Invoked)]

    @property
    def cancels(self) -> list[Cancelled]:
        return [message for message in self.link.sent if isinstance(message, Cancelled)]

    @property
    def held(self) -> set[AttemptKey]:
        return set(self.session.held)

    def report(self, *reports: WorkerReport) -> None:
        self.engine.on_worker_frame(self.session, reports)

    def heartbeat(self) -> None:
        self.report(Heartbeat(tuple(self.session.held)))

    def complete(self, invoked: Invoked, output: Payload = OUTPUT) -> None:
        self.report(AttemptEnd(invoked.task_run.id, TaskSucceeded(invoked.attempt.number, output)))

    def fail(self, invoked: Invoked, error: ErrorInfo | None = None) -> None:
        error = error or ErrorInfo(type="ValueError", message="boom")
        self.report(AttemptEnd(invoked.task_run.id, TaskFailed(invoked.attempt.number, error)))

    def time_out(self, invoked: Invoked) -> None:
        self.report(AttemptEnd(invoked.task_run.id, TaskTimedOut(invoked.attempt.number)))

    def acknowledge(self, cancel: Cancelled) -> None:
        self.report(AttemptEnd(cancel.task_run_id, CancelAcknowledged(cancel.attempt)))

    def progress(self, invoked: Invoked, fraction: float, message: str = "") -> None:
        self.report(AttemptProgress(invoked.task_run.id, invoked.attempt.number, fraction, message))

    def log(self, invoked: Invoked, text: str, level: int = 2) -> None:
        self.report(AttemptLog(invoked.task_run.id, invoked.attempt.number, level, text))

    def drain(self) -> None:
        self.report(Draining("shutting down"))

    def disconnect(self) -> None:
        self.engine.disconnect_worker(self.session)


def task(handler: str = "echo", **fields: object) -> TaskSpec:
    return TaskSpec(handler, **fields)  # type: ignore[arg-type]


@dataclass(eq=False)
class Rig:
    store: Store
    clock: ManualClock
    config: ServerConfig
    engine: Engine = field(init=False)
    workers: list[FakeWorker] = field(default_factory=list)

    async def start(self) -> Rig:
        self.engine = Engine(store=self.store, config=self.config, codec=ProtoHistoryCodec(), clock=self.clock)
        await self.engine.start()
        return self

    async def restart(self) -> None:
        """A new engine on the same store: what a server restart recovers."""
        await self.engine.close()
        assert all(worker.link.closed for worker in self.workers)
        self.workers.clear()
        await self.start()

    async def restart_with(self, **config: object) -> None:
        """A restart with other settings."""
        self.config = replace(self.config, **config)  # type: ignore[arg-type]
        await self.restart()

    async def close(self) -> None:
        await self.engine.close()

    def store_attempts_without_instance(self) -> None:
        """Rewrite every stored attempt without its worker's instance, as attempts were stored before they kept it."""
        assert isinstance(self.store, MemoryStore)
        stored = self.store._task_runs  # the memory store has no way to write an older row
        for task_run_id, (number, task_run) in stored.items():
            attempts = tuple(replace(attempt, worker_instance="") for attempt in task_run.attempts)
            stored[task_run_id] = (number, replace(task_run, attempts=attempts))

    def count_commits(self) -> list[int]:
        """From now on, every commit of the store: the number of batches it carried, appended as it happens."""
        commits: list[int] = []
        commit = self.store.commit

        async def counted(batches: Sequence[WriteBatch]) -> list[Exception | None]:
            commits.append(len(batches))
            return await commit(batches)

        self.store.commit = counted  # type: ignore[method-assign]
        return commits

    def hold_commits(self) -> asyncio.Event:
        """From now on, every commit waits until the returned event is set (a slow store)."""
        release = asyncio.Event()
        commit = self.store.commit

        async def held(batches: Sequence[WriteBatch]) -> list[Exception | None]:
            await release.wait()
            return await commit(batches)

        self.store.commit = held  # type: ignore[method-assign]
        return release

    def connect(
        self,
        name: str = "w1",
        *,
        handlers: Iterable[str] = ("echo",),
        slots: int = 1,
        instance_id: str = "",
        running: Iterable[AttemptKey] = (),
        identity: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> FakeWorker:
        hello = WorkerHello(
            name=name,
            instance_id=instance_id or f"instance-{name}",
            handlers=frozenset(handlers),
            slots=slots,
            labels=dict(labels or {}),
            running_attempts=tuple(running),
        )
        link = FakeLink()
        session, welcome = self.engine.connect_worker(hello, link, identity=identity)
        worker = FakeWorker(self.engine, session, welcome, link)
        self.workers.append(worker)
        return worker

    async def submit(self, *tasks: TaskSpec, **fields: object) -> str:
        spec = ExecutionSpec(tasks=tasks or (task(),))
        if fields:
            spec = replace(spec, **fields)  # type: ignore[arg-type]
        result = await self.engine.submit(spec, fingerprint="", wait_for_room=False, timeout_s=None)
        return result.snapshot.execution.id

    async def snapshot(self, execution_id: str) -> ExecutionSnapshot:
        """The execution as stored, once everything staged so far is durable."""
        await self.engine.flush()
        return await self.engine.get(execution_id)

    async def state(self, execution_id: str) -> State:
        return (await self.snapshot(execution_id)).execution.state

    async def task_run(self, execution_id: str, index: int = 0) -> TaskRun:
        return (await self.snapshot(execution_id)).task_runs[index]

    def advance(self, seconds: float) -> None:
        """Move the clock on, one heartbeat interval at a time; connected workers that are not silent
        heartbeat after each step, as a live worker would."""
        step = self.config.heartbeat_interval.total_seconds()
        while seconds > 0:
            moved = min(step, seconds)
            self.clock.advance(moved)
            seconds -= moved
            for worker in self.workers:
                if worker.session.connected and not worker.silent:
                    worker.heartbeat()


@contextlib.asynccontextmanager
async def started(store: Store, config: ServerConfig = CONFIG) -> AsyncIterator[Rig]:
    """An engine with a manual clock on `store`, which is opened here; both closed after."""
    await store.open()
    rig = await Rig(store, ManualClock(), config).start()
    try:
        yield rig
    finally:
        await rig.close()
        await store.close()
