"""The host engine: the single writer of all taskwire state.

Every change goes through the domain's pure transition functions; the engine
carries out their effects (queue, timers, worker streams), stages the records
and history events for durable storage, and runs the planner until an
execution's follow-ups are exhausted. It runs on one asyncio loop, so no two
changes ever interleave.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from taskwire.v1 import types_pb2 as pb
from taskwire.v1 import worker_service_pb2 as wpb

from . import wire
from ._bus import EventBus, Subscription
from ._config import ServerConfig
from ._queue import AdmissionQueue, QueueStats, ReadyQueues, adjust_count
from ._sessions import AttemptKey, WorkerSession
from ._timers import Timers
from .domain import (
    ArmAttemptTimeout,
    AttemptEnded,
    CancelAcknowledged,
    CancelGraceExpired,
    CancellationRequested,
    CancelOnWorker,
    Effect,
    Enqueue,
    Execution,
    ExecutionEvent,
    ExecutionFinished,
    ExecutionFollowUp,
    ExecutionSpec,
    ExecutionTimeoutFired,
    IdempotencyConflict,
    InvalidTransition,
    LeaseExpired,
    NotFound,
    ReasonCode,
    RetryDue,
    ScheduleDue,
    ScheduleRetry,
    ShuttingDown,
    State,
    TaskDispatched,
    TaskFailed,
    TaskProgressed,
    TaskRun,
    TaskRunEvent,
    TaskRunFinished,
    TaskSucceeded,
    TaskTimedOut,
    TaskwireError,
    ValidationError,
    create_execution,
    plan_follow_ups,
    transition_execution,
    transition_task_run,
    validate_execution_spec,
)
from .store import Committer, EventRecord, ExecutionPage, ExecutionSnapshot, NewExecution, Store

log = logging.getLogger(__name__)

_QUEUED = (State.PENDING, State.WAITING)
# A planner that keeps finding work after this many rounds has a bug; stop rather than spin.
_MAX_SETTLE_ROUNDS = 10_000
# Cold executions come back from the store this many at a time (see ServerConfig.hot_queue_size).
_WARM_BATCH = 256


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def new_id() -> str:
    """A unique id: 32 hex digits, the milliseconds since the epoch and then 80 random bits.

    The time first (as in UUIDv7) makes the ids of new records sort after the ids of older ones, so
    the store appends them at the end of its indexes instead of touching a random page of each index
    for every record. The random bits come from a Mersenne Twister seeded from the OS once: ids need
    to be unique, not secret, and that is ~50x cheaper per id than an os.urandom call.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_ids.getrandbits(80):020x}"


_ids = random.Random()


@dataclass(eq=False)
class _Live:
    """An active execution held in memory: its records and the next history sequence number."""

    execution: Execution
    task_runs: dict[str, TaskRun]  # in submission order
    next_sequence: int = 1
    retiring: bool = False

    def snapshot(self) -> ExecutionSnapshot:
        return ExecutionSnapshot(self.execution, tuple(self.task_runs.values()))


@dataclass(eq=False)
class _KeyEntry:
    """An idempotency key this server has seen, and the durability of the execution it made."""

    key: str
    fingerprint: str  # of the request that made the execution; empty matches any request
    execution_id: str
    committed: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    snapshot: ExecutionSnapshot
    deduplicated: bool


@dataclass(frozen=True, slots=True)
class SubmitItem:
    """One execution of a batch submit: a spec to create, or the error its conversion already met."""

    spec: ExecutionSpec | None
    fingerprint: str
    error: TaskwireError | None = None


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    execution_id: str = ""
    deduplicated: bool = False
    error: TaskwireError | None = None


@dataclass(frozen=True, slots=True)
class HandlerStats:
    handler: str
    pending: int
    in_flight: int
    free_slots: int
    workers: int


@dataclass(frozen=True, slots=True)
class EngineStats:
    queue: QueueStats
    in_flight: int
    connected_workers: int
    free_slots: int
    handlers: list[HandlerStats]


@dataclass(frozen=True, slots=True)
class WorkerHello:
    """A validated hello: who the worker is and what it can run."""

    name: str
    instance_id: str
    handlers: frozenset[str]
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    agent_version: str = ""
    running_attempts: tuple[AttemptKey, ...] = ()


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        config: ServerConfig,
        clock: Clock | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._clock: Clock = clock or SystemClock()
        self.bus = EventBus()
        self._committer = Committer(store=store, bus=self.bus, on_fatal=on_fatal or (lambda error: None))
        self._timers = Timers(monotonic=self._clock.monotonic)
        self._admission = AdmissionQueue(capacity=config.queue_capacity)
        self._ready = ReadyQueues()
        self._executions: dict[str, _Live] = {}
        self._owner: dict[str, _Live] = {}  # task run id -> its live execution
        self._sessions: dict[str, WorkerSession] = {}
        # Sessions that may have a free slot: every place that frees a slot adds its session, and the
        # dispatch pass drops the ones it finds full. So a pass looks at the few sessions with room,
        # not at every connected worker.
        self._maybe_free: dict[WorkerSession, None] = {}
        self._attempt_sessions: dict[AttemptKey, WorkerSession] = {}
        self._keys: dict[str, _KeyEntry] = {}
        self._in_flight_by_handler: dict[str, int] = {}
        self._pump_handle: asyncio.Handle | None = None
        self._accepting = True
        self._closed = False
        self._sessions_changed = asyncio.Event()
        self._cold: dict[str, str] = {}  # task run id -> execution id, for executions kept out of memory
        self._loading: dict[str, asyncio.Future[None]] = {}  # execution id -> its load from the store
        self._warming: set[str] = set()  # handlers whose next cold task runs are being loaded
        self._background: set[asyncio.Task[None]] = set()

    # ---- Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the queue, timers and leases from the store, then start serving."""
        recovered = await self._store.recover()
        recovery_holder = self._recovery_session()
        for snapshot in recovered.active:
            live = _Live(
                snapshot.execution,
                {task_run.id: task_run for task_run in snapshot.task_runs},
                next_sequence=recovered.last_sequences.get(snapshot.execution.id, 0) + 1,
            )
            self._register(live)
            self._arm_execution_timers(live.execution)
            for task_run in live.task_runs.values():
                self._count(None, task_run)
                self._arm_recovered_task_run(task_run, recovery_holder)
        for task_run_id in recovered.pending_order:
            owner = self._owner.get(task_run_id)
            if owner is not None:
                self._ready.push(owner.task_runs[task_run_id].handler, task_run_id)
        # Cold executions stay in the store: only their queue places come back (after the active ones).
        for cold in recovered.cold:
            handler = sys.intern(cold.handler)
            self._cold[cold.task_run_id] = cold.execution_id
            self._admission.add(1)
            self._ready.count_pending(handler, 1)
            self._ready.push(handler, cold.task_run_id)
        if recovery_holder.held:
            self._sessions[recovery_holder.session_id] = recovery_holder
            self._arm_lease(recovery_holder)
        self._timers.start()
        self._committer.start()
        for live in list(self._executions.values()):
            self._settle(live)
        self._schedule_pump()
        log.info(
            "recovered %d active executions, %d queued task runs, %d running attempts awaiting their workers",
            len(self._executions),
            self._admission.size,
            len(recovery_holder.held),
        )

    def _recovery_session(self) -> WorkerSession:
        """Holds the attempts that were running before a restart until their workers reclaim them."""
        now = self._clock.now()
        return WorkerSession(
            session_id=f"recovered-{new_id()}",
            instance_id="",
            name="(awaiting reconnect)",
            handlers=frozenset(),
            slots=0,
            labels={},
            agent_version="",
            connected_at=now,
            last_seen_at=now,
            last_seen=self._clock.monotonic(),
            connected=False,
        )

    def _arm_recovered_task_run(self, task_run: TaskRun, holder: WorkerSession) -> None:
        if task_run.state is State.WAITING and task_run.not_before is not None:
            code = task_run.reason.code if task_run.reason else None
            if code is ReasonCode.RETRY_BACKOFF:
                self._carry_out(ScheduleRetry(task_run.id, task_run.not_before))
        attempt = task_run.current_attempt
        if task_run.state is State.RUNNING and attempt is not None:
            key = (task_run.id, attempt.number)
            holder.held.add(key)
            self._attempt_sessions[key] = holder
            if task_run.timeout is not None:
                self._carry_out(ArmAttemptTimeout(task_run.id, attempt.number, attempt.started_at + task_run.timeout))
            if task_run.pending_cancel is not None:
                self._arm_cancel_grace(task_run.id, attempt.number)

    def stop_accepting(self) -> None:
        """New submits get UNAVAILABLE; submits waiting for room are released with the same."""
        self._accepting = False
        self._admission.close()

    async def drain_workers(self, grace: timedelta) -> None:
        """Ask every worker to drain, and wait (at most `grace`) for them all to disconnect."""
        message = wpb.ServerMessage(
            drain=wpb.Drain(grace=wire.duration_to_proto(grace), reason="the server is shutting down")
        )
        for session in self._connected_sessions():
            session.draining = True
            session.send(message)
        deadline = self._clock.monotonic() + grace.total_seconds()
        while self._connected_sessions():
            self._sessions_changed.clear()
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._sessions_changed.wait(), remaining)
            except TimeoutError:
                return

    async def close(self) -> None:
        """Flush staged writes and stop timers. Idempotent. Closing the store is the caller's."""
        if self._closed:
            return
        self._closed = True
        self.stop_accepting()
        for session in list(self._sessions.values()):
            session.disconnect()
        self.bus.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._timers.close()
        await self._committer.close()

    # ---- Submits --------------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down and accepts no new work")

    async def submit(
        self, spec: ExecutionSpec, *, fingerprint: str, wait_for_room: bool, timeout_s: float | None
    ) -> SubmitResult:
        """Validate, admit, store durably; or return the execution an identical earlier submit made."""
        self._check_accepting()
        spec = validate_execution_spec(spec, self._config.limits)
        key = spec.idempotency_key
        if key:
            entry = await self._lookup_key(key)
            if entry is not None:
                return await self._deduplicate(entry, fingerprint)
        await self._admission.admit(len(spec.tasks), wait=wait_for_room, timeout_s=timeout_s)
        if key:
            # An identical submit may have won the race while this one waited for room; its execution
            # may even have finished and left memory since, so a waiting submit asks the store too.
            try:
                entry = await self._lookup_key(key) if wait_for_room else self._keys.get(key)
            except BaseException:
                self._admission.release(len(spec.tasks))
                raise
            if entry is not None:
                self._admission.release(len(spec.tasks))
                return await self._deduplicate(entry, fingerprint)
        live = self._create(spec, fingerprint)
        self._pump_now()
        await self._committer.durable()
        return SubmitResult(live.snapshot(), deduplicated=False)

    async def submit_many(
        self, items: Sequence[SubmitItem], *, wait_for_room: bool, timeout_s: float | None
    ) -> list[BatchItemResult]:
        """Per-item validation and idempotency; the new executions are admitted together or not at all."""
        self._check_accepting()
        results: list[BatchItemResult] = [BatchItemResult() for _ in items]
        to_create: list[tuple[int, ExecutionSpec, str]] = []
        first_with_key: dict[str, tuple[int, str]] = {}  # key -> (index, fingerprint) of its first item here
        repeats: list[tuple[int, int]] = []  # (index, index of the earlier item with the same key)
        known: list[tuple[int, _KeyEntry, str]] = []  # (index, entry of an existing execution, fingerprint)
        for index, item in enumerate(items):
            if item.error is not None or item.spec is None:
                results[index] = BatchItemResult(error=item.error)
                continue
            try:
                spec = validate_execution_spec(item.spec, self._config.limits, where=f"executions[{index}]")
            except ValidationError as error:
                results[index] = BatchItemResult(error=error)
                continue
            key = spec.idempotency_key
            if key in first_with_key:
                first, fingerprint = first_with_key[key]
                if fingerprint != item.fingerprint:
                    results[index] = BatchItemResult(error=IdempotencyConflict(key, f"executions[{first}]"))
                else:
                    repeats.append((index, first))
                continue
            if key:
                first_with_key[key] = (index, item.fingerprint)
                entry = await self._lookup_key(key)
                if entry is not None:
                    known.append((index, entry, item.fingerprint))
                    continue
            to_create.append((index, spec, item.fingerprint))
        claimed: dict[str, _KeyEntry] = {}  # keys used while this batch waited for room, found in the store
        if to_create:
            tasks = sum(len(spec.tasks) for _, spec, _ in to_create)
            await self._admission.admit(tasks, wait=wait_for_room, timeout_s=timeout_s)
            if wait_for_room:
                try:
                    for _, spec, _ in to_create:
                        key = spec.idempotency_key
                        if key and (entry := await self._lookup_key(key)) is not None:
                            claimed[key] = entry
                except BaseException:
                    self._admission.release(tasks)
                    raise
        for index, spec, fingerprint in to_create:
            key = spec.idempotency_key
            entry = (self._keys.get(key) or claimed.get(key)) if key else None
            if entry is not None:  # claimed by a concurrent submit while this batch waited for room
                self._admission.release(len(spec.tasks))
                known.append((index, entry, fingerprint))
                continue
            results[index] = BatchItemResult(execution_id=self._create(spec, fingerprint).execution.id)
        self._pump_now()
        await self._committer.durable()
        for index, entry, fingerprint in known:
            try:
                outcome = await self._deduplicate(entry, fingerprint)
                results[index] = BatchItemResult(execution_id=outcome.snapshot.execution.id, deduplicated=True)
            except TaskwireError as error:
                results[index] = BatchItemResult(error=error)
        for index, first in repeats:
            earlier = results[first]
            results[index] = BatchItemResult(earlier.execution_id, deduplicated=True, error=earlier.error)
        return results

    async def _lookup_key(self, key: str) -> _KeyEntry | None:
        entry = self._keys.get(key)
        if entry is not None:
            return entry
        hit = await self._store.find_idempotency_key(key)
        if key in self._keys:  # claimed while the store was read
            return self._keys[key]
        if hit is None:
            return None
        return _KeyEntry(key, hit.request_fingerprint, hit.execution_id, self._done_future())

    async def _deduplicate(self, entry: _KeyEntry, fingerprint: str) -> SubmitResult:
        if entry.fingerprint and entry.fingerprint != fingerprint:
            raise IdempotencyConflict(entry.key, entry.execution_id)
        await asyncio.shield(entry.committed)
        live = self._executions.get(entry.execution_id)
        if live is not None:
            return SubmitResult(live.snapshot(), deduplicated=True)
        snapshot = await self._store.get_execution(entry.execution_id)
        if snapshot is None:
            raise NotFound("execution", entry.execution_id)
        return SubmitResult(snapshot, deduplicated=True)

    def _done_future(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def _create(self, spec: ExecutionSpec, fingerprint: str) -> _Live:
        """Make the records of a validated, admitted spec and stage them (room is already reserved)."""
        now = self._clock.now()
        execution, task_runs = create_execution(
            spec, execution_id=new_id(), task_run_ids=[new_id() for _ in spec.tasks], now=now
        )
        live = _Live(execution, {task_run.id: task_run for task_run in task_runs})
        self._register(live)
        self._committer.stage_new(NewExecution(execution, task_runs, fingerprint))
        created = wire.execution_created_event(execution)
        self._record(live, "execution_transition", pb.ExecutionEvent(execution_transition=created))
        if spec.idempotency_key:
            key = spec.idempotency_key
            self._keys[key] = _KeyEntry(key, fingerprint, execution.id, self._committer.durable())
        for task_run in task_runs:
            self._count(None, task_run, admitted=True)
            if task_run.state is State.PENDING:
                self._carry_out(Enqueue(task_run.id))
        self._arm_execution_timers(execution)
        self._committer.after_commit(lambda: self._maybe_freeze(live))
        return live

    def _maybe_freeze(self, live: _Live) -> None:
        """Let a durable execution that waits untouched in a long queue leave memory (ServerConfig.hot_queue_size)."""
        if self._admission.size <= self._config.hot_queue_size or not _is_coldable(live):
            return
        if self._executions.get(live.execution.id) is not live:
            return
        del self._executions[live.execution.id]
        for task_run_id in live.task_runs:
            del self._owner[task_run_id]
            self._cold[task_run_id] = live.execution.id

    async def _load(self, execution_ids: Sequence[str]) -> None:
        """Bring cold executions back into memory (ids that are not cold are ignored)."""
        waiting = [self._loading[e] for e in execution_ids if e in self._loading]
        wanted = [e for e in dict.fromkeys(execution_ids) if e not in self._loading and e not in self._executions]
        if wanted:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for execution_id in wanted:
                self._loading[execution_id] = done
            try:
                snapshots = await self._store.get_executions(wanted)
                sequences = await self._store.last_sequences(list(snapshots))
                for execution_id, snapshot in snapshots.items():
                    if not all(task_run.id in self._cold for task_run in snapshot.task_runs):
                        continue  # not cold: finished long ago, or live already
                    for task_run in snapshot.task_runs:
                        del self._cold[task_run.id]
                    live = _Live(
                        snapshot.execution,
                        {task_run.id: task_run for task_run in snapshot.task_runs},
                        next_sequence=sequences.get(execution_id, 0) + 1,
                    )
                    self._register(live)
                done.set_result(None)
            except BaseException as error:
                done.set_exception(error)
                raise
            finally:
                for execution_id in wanted:
                    del self._loading[execution_id]
        for other in waiting:
            await asyncio.shield(other)

    def _warm(self, handler: str) -> None:
        """Load the next cold task runs of a handler's queue, then dispatch again."""
        if handler in self._warming or self._closed:
            return
        self._warming.add(handler)
        execution_ids = [self._cold[t] for t in self._ready.peek(handler, _WARM_BATCH) if t in self._cold]

        async def warm() -> None:
            try:
                await self._load(execution_ids)
            except Exception:
                log.exception("loading queued executions of %s failed", handler)
            finally:
                self._warming.discard(handler)
                self._schedule_pump()

        task = asyncio.create_task(warm(), name=f"taskwire-warm-{handler}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _register(self, live: _Live) -> None:
        self._executions[live.execution.id] = live
        for task_run_id in live.task_runs:
            self._owner[task_run_id] = live

    # ---- Reads ----------------------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionSnapshot:
        snapshot = await self._store.get_execution(execution_id)
        if snapshot is None:
            raise NotFound("execution", execution_id)
        return snapshot

    async def list_executions(
        self, *, states: Sequence[State], handler: str, page_size: int, page_token: str
    ) -> ExecutionPage:
        return await self._store.list_executions(
            states=states, handler=handler, page_size=page_size, page_token=page_token
        )

    def stats(self) -> EngineStats:
        connected = self._connected_sessions()
        handlers = set(self._ready.pending_by_handler) | set(self._in_flight_by_handler)
        for session in connected:
            handlers |= session.handlers
        per_handler = []
        for handler in sorted(handlers):
            serving = [session for session in connected if handler in session.handlers]
            per_handler.append(
                HandlerStats(
                    handler=handler,
                    pending=self._ready.pending_by_handler.get(handler, 0),
                    in_flight=self._in_flight_by_handler.get(handler, 0),
                    free_slots=sum(session.free_slots for session in serving),
                    workers=len(serving),
                )
            )
        return EngineStats(
            queue=self._admission.stats(),
            in_flight=sum(self._in_flight_by_handler.values()),
            connected_workers=len(connected),
            free_slots=sum(session.free_slots for session in connected),
            handlers=per_handler,
        )

    def workers(self) -> list[WorkerSession]:
        return sorted(self._connected_sessions(), key=lambda s: (s.name, s.session_id))

    def _connected_sessions(self) -> list[WorkerSession]:
        return [session for session in self._sessions.values() if session.connected]

    async def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[EventRecord]:
        """Stored events after `after_sequence`, then live ones; ends after the terminal event."""
        if after_sequence < 0:
            raise ValidationError("after_sequence", "must not be negative")
        subscription = self.bus.subscribe(execution_id)
        try:
            if execution_id not in self._executions and await self._store.get_execution(execution_id) is None:
                raise NotFound("execution", execution_id)
            last = after_sequence
            complete = False  # the store is known to hold the whole history, terminal event included
            while True:
                # Catch up from the store: the whole history the first time, a gap after an overflow.
                while True:
                    page = await self._store.read_events(execution_id, last)
                    for event in page:
                        yield event
                        last = event.sequence
                        if _is_terminal_event(event):
                            return
                    if len(page) < 1000:
                        break
                if complete:
                    return  # nothing is stored after `last`: the watch started past the end
                if execution_id not in self._executions:
                    snapshot = await self._store.get_execution(execution_id)
                    if snapshot is not None and snapshot.execution.state.is_terminal:
                        # It finished, perhaps while the replay above was reading: read the rest of
                        # its history, terminal event included, rather than end without it.
                        complete = True
                        continue
                subscription.overflowed = False
                while not subscription.overflowed:
                    live_event = await self._next_live(subscription)
                    if live_event is None:
                        raise ShuttingDown("the server is shutting down; watch again to resume")
                    if live_event.sequence <= last:
                        continue
                    if live_event.sequence > last + 1:
                        break  # a gap: read it from the store
                    yield live_event
                    last = live_event.sequence
                    if _is_terminal_event(live_event):
                        return
                while not subscription.queue.empty():
                    subscription.queue.get_nowait()
        finally:
            self.bus.unsubscribe(subscription)

    async def _next_live(self, subscription: Subscription) -> EventRecord | None:
        if not subscription.queue.empty():
            return subscription.queue.get_nowait()
        getter = asyncio.ensure_future(subscription.queue.get())
        closer = asyncio.ensure_future(subscription.closed.wait())
        try:
            await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closer.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    # ---- Cancel ---------------------------------------------------------------------------------

    async def cancel(self, execution_id: str, reason: str) -> tuple[ExecutionSnapshot, bool]:
        """Cancel an execution; returns it after the request and whether it was already terminal."""
        if execution_id not in self._executions:
            await self._load([execution_id])  # a cold one comes back; anything else stays where it is
        live = self._executions.get(execution_id)
        if live is None or live.execution.state.is_terminal:
            snapshot = live.snapshot() if live is not None else await self._store.get_execution(execution_id)
            if snapshot is None:
                raise NotFound("execution", execution_id)
            return snapshot, snapshot.execution.state.is_terminal
        self._apply_execution(live, CancellationRequested(reason or "cancellation requested"))
        self._settle(live)
        await self._committer.durable()
        return live.snapshot(), False

    # ---- Workers --------------------------------------------------------------------------------

    def connect_worker(self, hello: WorkerHello) -> tuple[WorkerSession, wpb.Welcome]:
        """Open a session; adopt the running attempts it reports that are still current."""
        now, monotonic_now = self._clock.now(), self._clock.monotonic()
        session = WorkerSession(
            session_id=new_id(),
            instance_id=hello.instance_id,
            name=hello.name,
            handlers=hello.handlers,
            slots=hello.slots,
            labels=hello.labels,
            agent_version=hello.agent_version,
            connected_at=now,
            last_seen_at=now,
            last_seen=monotonic_now,
        )
        adopted, rejected = [], []
        for key in hello.running_attempts:
            if self._may_adopt(key, hello):
                previous = self._attempt_sessions.get(key)
                if previous is not None:
                    previous.held.discard(key)
                    self._maybe_free[previous] = None
                session.held.add(key)
                self._attempt_sessions[key] = session
                adopted.append(key)
            else:
                rejected.append(key)
        self._sessions[session.session_id] = session
        self._maybe_free[session] = None
        self._arm_lease(session)
        self._sessions_changed.set()
        self._schedule_pump()
        log.info(
            "worker %s connected (session %s, %d slots, handlers %s, %d adopted, %d rejected)",
            session.name,
            session.session_id,
            session.slots,
            ",".join(sorted(session.handlers)),
            len(adopted),
            len(rejected),
        )
        welcome = wpb.Welcome(
            session_id=session.session_id,
            heartbeat_interval=wire.duration_to_proto(self._config.heartbeat_interval),
            lease_timeout=wire.duration_to_proto(self._config.lease_timeout),
            adopted_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in adopted],
            rejected_attempts=[wpb.AttemptRef(task_run_id=t, attempt=a) for t, a in rejected],
        )
        return session, welcome

    def disconnect_worker(self, session: WorkerSession) -> None:
        """The stream ended. Held attempts keep their lease until it times out or the worker returns."""
        if not session.connected and session.session_id not in self._sessions:
            return
        session.disconnect()
        if not session.held:
            self._sessions.pop(session.session_id, None)
        self._sessions_changed.set()
        log.info(
            "worker %s disconnected (session %s, %d attempts held)", session.name, session.session_id, len(session.held)
        )

    def _may_adopt(self, key: AttemptKey, hello: WorkerHello) -> bool:
        """A reconnecting worker gets back an attempt only if it is current and was that worker's.

        The attempt number alone is not enough: after a crash before a dispatch was stored, the same
        number can go to another worker, and the first one must not take it over on its return.
        """
        if not self._is_current_attempt(*key):
            return False
        holder = self._attempt_sessions.get(key)
        if holder is None or holder.instance_id == hello.instance_id:
            return True
        if holder.instance_id:  # held by another live worker
            return False
        # Held since a restart: the store knows the worker only by name.
        attempt = self._owner[key[0]].task_runs[key[0]].current_attempt
        return attempt is not None and attempt.worker_id == hello.name

    def _is_current_attempt(self, task_run_id: str, attempt: int) -> bool:
        live = self._owner.get(task_run_id)
        if live is None:
            return False
        current = live.task_runs[task_run_id].current_attempt
        return current is not None and current.number == attempt and current.is_running

    def on_worker_frame(self, session: WorkerSession, frame: wpb.ConnectRequest) -> None:
        session.seen(self._clock.monotonic(), self._clock.now())
        for message in frame.messages:
            kind = message.WhichOneof("kind")
            try:
                self._on_worker_message(session, kind, message)
            except InvalidTransition as error:
                # A report the state machine refuses (not a stale one: those are no-ops). Keep serving.
                log.warning("ignored %s from worker %s: %s", kind, session.name, error)

    def _on_worker_message(self, session: WorkerSession, kind: str | None, message: wpb.WorkerMessage) -> None:
        if kind == "heartbeat" or kind == "started":
            return
        if kind == "draining":
            session.draining = True
            return
        if kind == "completed":
            ref = message.completed.ref
            output = wire.payload_from_proto(message.completed.output)
            self._worker_report(session, ref, TaskSucceeded(ref.attempt, output))
        elif kind == "failed":
            ref, failed = message.failed.ref, message.failed
            event: TaskRunEvent = (
                TaskTimedOut(ref.attempt)
                if failed.timed_out
                else TaskFailed(ref.attempt, wire.error_from_proto(failed.error))
            )
            self._worker_report(session, ref, event)
        elif kind == "cancel_acknowledged":
            ref = message.cancel_acknowledged.ref
            self._worker_report(session, ref, CancelAcknowledged(ref.attempt))
        elif kind == "progress":
            if self._reports_for(session, (message.progress.ref.task_run_id, message.progress.ref.attempt)):
                self._on_progress(message.progress)
        elif kind == "log":
            if self._reports_for(session, (message.log.ref.task_run_id, message.log.ref.attempt)):
                self._on_log(message.log)
        else:
            log.warning("unexpected %s message from worker %s", kind, session.name)

    def _worker_report(self, session: WorkerSession, ref: wpb.AttemptRef, event: TaskRunEvent) -> None:
        """A terminal report for an attempt: free its slot, then let the state machine judge it."""
        key = (ref.task_run_id, ref.attempt)
        holder = self._attempt_sessions.get(key)
        if not self._reports_for(session, key):
            return
        if holder is not None:
            holder.held.discard(key)
            self._maybe_free[holder] = None
            del self._attempt_sessions[key]
            self._schedule_pump()
        live = self._owner.get(ref.task_run_id)
        if live is None:
            return  # long finished: nothing to apply
        self._apply_task(live, ref.task_run_id, event)
        self._settle(live)

    def _reports_for(self, session: WorkerSession, key: AttemptKey) -> bool:
        """Only the session that holds an attempt speaks for it; another one's report is ignored."""
        holder = self._attempt_sessions.get(key)
        if holder is None or holder is session:
            return True  # no holder: the attempt is over, and the state machine fences the report
        log.warning("ignored a report for attempt %s#%d from %s: %s holds it", *key, session.name, holder.name)
        return False

    def _on_progress(self, progress: wpb.AttemptProgress) -> None:
        live = self._owner.get(progress.ref.task_run_id)
        if live is None:
            return
        event = TaskProgressed(progress.ref.attempt, progress.fraction, progress.message)
        before = live.task_runs[progress.ref.task_run_id]
        result = transition_task_run(before, event, self._clock.now())
        if not result.applied:
            return
        self._store_task_run(live, before, result.record)
        body = pb.TaskProgress(
            task_run_id=before.id,
            task_id=before.task_id,
            attempt=progress.ref.attempt,
            fraction=result.record.progress.fraction if result.record.progress else progress.fraction,
            message=progress.message,
            details=progress.details if progress.HasField("details") else None,
        )
        self._record(live, "progress", pb.ExecutionEvent(progress=body))

    def _on_log(self, line: wpb.AttemptLog) -> None:
        ref = line.ref
        if not self._is_current_attempt(ref.task_run_id, ref.attempt):
            return  # fenced: a line from an attempt that is over
        live = self._owner[ref.task_run_id]
        task_run = live.task_runs[ref.task_run_id]
        body = pb.TaskLog(
            task_run_id=task_run.id, task_id=task_run.task_id, attempt=ref.attempt, level=line.level, text=line.text
        )
        self._record(live, "log", pb.ExecutionEvent(log=body))

    # ---- Leases ---------------------------------------------------------------------------------

    def _arm_lease(self, session: WorkerSession) -> None:
        at = session.last_seen + self._config.lease_timeout.total_seconds()
        self._timers.arm(("lease", session.session_id), at, lambda: self._check_lease(session))

    def _check_lease(self, session: WorkerSession) -> None:
        if self._sessions.get(session.session_id) is not session:
            return
        if self._clock.monotonic() - session.last_seen < self._config.lease_timeout.total_seconds():
            self._arm_lease(session)  # heard from since: look again when the renewed lease ends
            return
        log.warning("worker %s lost its lease (%d attempts held)", session.name, len(session.held))
        session.disconnect()
        del self._sessions[session.session_id]
        self._sessions_changed.set()
        for key in sorted(session.held):
            if self._attempt_sessions.get(key) is session:
                del self._attempt_sessions[key]
            live = self._owner.get(key[0])
            if live is not None:
                self._apply_task(live, key[0], LeaseExpired(key[1]))
                self._settle(live)
        session.held.clear()

    # ---- Dispatch -------------------------------------------------------------------------------

    def _schedule_pump(self) -> None:
        if self._pump_handle is None:
            self._pump_handle = asyncio.get_running_loop().call_soon(self._pump)

    def _pump_now(self) -> None:
        """Dispatch what was just queued before anything else runs: the commit of the submit that
        queued it can wait its turn (dispatch does not wait for it, see docs/design.md)."""
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump()

    def _pump(self) -> None:
        """Match PENDING task runs to free slots: FIFO per handler, one task per free worker per round."""
        self._pump_handle = None
        if self._closed:
            return
        free = [session for session in self._maybe_free if session.free_slots > 0]
        self._maybe_free = dict.fromkeys(free)
        if not free:
            return
        for handler in self._ready.handlers_with_work():
            # Round robin over the workers that serve the handler: the load spreads evenly, and each
            # dispatch costs O(1) however many workers are connected.
            candidates = [session for session in free if handler in session.handlers and session.free_slots > 0]
            while candidates:
                next_round: list[WorkerSession] = []
                for session in candidates:
                    live = self._next_dispatchable(handler)
                    if live is None:
                        next_round = []
                        break
                    self._dispatch(live[0], live[1], session)
                    if session.free_slots > 0:
                        next_round.append(session)
                candidates = next_round

    def _next_dispatchable(self, handler: str) -> tuple[_Live, TaskRun] | None:
        """The next PENDING task run of the handler's queue, or None (empty, or its next records are loading)."""
        while (task_run_id := self._ready.popleft(handler)) is not None:
            if task_run_id in self._cold:
                self._ready.pushleft(handler, task_run_id)
                self._warm(handler)  # this handler goes on once its next records are in memory
                return None
            live = self._owner.get(task_run_id)
            if live is not None and live.task_runs[task_run_id].state is State.PENDING:
                return live, live.task_runs[task_run_id]
            # Otherwise it was cancelled while queued: dropped here, lazily.
        return None

    def _dispatch(self, live: _Live, task_run: TaskRun, session: WorkerSession) -> None:
        attempt = task_run.attempt_count + 1
        self._apply_task(live, task_run.id, TaskDispatched(attempt, session.name))
        key = (task_run.id, attempt)
        session.held.add(key)
        self._attempt_sessions[key] = session
        started = live.task_runs[task_run.id].current_attempt
        assert started is not None
        invocation = wpb.Invocation(
            ref=wpb.AttemptRef(task_run_id=task_run.id, attempt=attempt),
            execution_id=task_run.execution_id,
            task_id=task_run.task_id,
            handler=task_run.handler,
            input=wire.payload_to_proto(task_run.input),
            timeout=wire.duration_to_proto(task_run.timeout),
            deadline=wire.timestamp_to_proto(started.started_at + task_run.timeout if task_run.timeout else None),
        )
        session.send(wpb.ServerMessage(invocation=invocation))
        self._settle(live)

    # ---- Applying events ------------------------------------------------------------------------

    def _apply_task(self, live: _Live, task_run_id: str, event: TaskRunEvent) -> None:
        before = live.task_runs[task_run_id]
        result = transition_task_run(before, event, self._clock.now())
        if not result.applied:
            return
        self._store_task_run(live, before, result.record)
        self._record(
            live,
            "task_run_transition",
            pb.ExecutionEvent(task_run_transition=wire.task_run_transition_event(before, result.record)),
        )
        for effect in result.effects:
            self._carry_out(effect)

    def _store_task_run(self, live: _Live, before: TaskRun, after: TaskRun) -> None:
        live.task_runs[after.id] = after
        self._count(before, after)
        self._committer.stage_task_run(after)

    def _apply_execution(self, live: _Live, event: ExecutionEvent) -> None:
        before = live.execution
        result = transition_execution(before, event, self._clock.now())
        if not result.applied:
            return
        live.execution = result.record
        self._committer.stage_execution(result.record)
        self._record(
            live,
            "execution_transition",
            pb.ExecutionEvent(execution_transition=wire.execution_transition_event(before, result.record)),
        )
        for effect in result.effects:
            self._carry_out(effect)

    def _settle(self, live: _Live) -> None:
        """Apply the planner's follow-ups until there are none; retire the execution once terminal."""
        for _ in range(_MAX_SETTLE_ROUNDS):
            follow_ups = plan_follow_ups(live.execution, list(live.task_runs.values()))
            if not follow_ups:
                break
            for follow_up in follow_ups:
                if isinstance(follow_up, ExecutionFollowUp):
                    self._apply_execution(live, follow_up.event)
                else:
                    self._apply_task(live, follow_up.task_run_id, follow_up.event)
        else:
            log.error("execution %s did not settle after %d rounds", live.execution.id, _MAX_SETTLE_ROUNDS)
        if live.execution.state.is_terminal and not live.retiring:
            live.retiring = True
            self._committer.after_commit(lambda: self._retire(live))

    def _retire(self, live: _Live) -> None:
        """Drop a finished execution from memory once its end is durable; the store has it all."""
        self._executions.pop(live.execution.id, None)
        for task_run_id in live.task_runs:
            self._owner.pop(task_run_id, None)
        key = live.execution.idempotency_key
        if key and (entry := self._keys.get(key)) is not None and entry.execution_id == live.execution.id:
            del self._keys[key]

    def _record(self, live: _Live, kind: str, event: pb.ExecutionEvent) -> None:
        now = self._clock.now()
        event.execution_id = live.execution.id
        event.sequence = live.next_sequence
        wire.set_timestamp(event.time, now)
        live.next_sequence += 1
        self._committer.stage_event(
            EventRecord(live.execution.id, event.sequence, now, kind, event.SerializeToString())
        )

    def _count(self, before: TaskRun | None, after: TaskRun, *, admitted: bool = False) -> None:
        """Keep the queue size and the per-handler pending / in-flight figures in step with states."""
        was_queued = before is not None and before.state in _QUEUED
        is_queued = after.state in _QUEUED
        if is_queued and not was_queued and not admitted:
            self._admission.add(1)
        elif was_queued and not is_queued:
            self._admission.release(1)
        handler = after.handler
        pending = (after.state is State.PENDING) - (before is not None and before.state is State.PENDING)
        if pending:
            self._ready.count_pending(handler, pending)
        running = (after.state is State.RUNNING) - (before is not None and before.state is State.RUNNING)
        if running:
            adjust_count(self._in_flight_by_handler, handler, running)

    # ---- Effects and timers ---------------------------------------------------------------------

    def _at(self, when: datetime) -> float:
        """A wall-clock time as a point on the monotonic clock that timers run on."""
        return self._clock.monotonic() + (when - self._clock.now()).total_seconds()

    def _carry_out(self, effect: Effect) -> None:
        if isinstance(effect, Enqueue):
            live = self._owner[effect.task_run_id]
            self._ready.push(live.task_runs[effect.task_run_id].handler, effect.task_run_id)
            self._schedule_pump()
        elif isinstance(effect, ScheduleRetry):
            task_run_id = effect.task_run_id
            self._timers.arm(
                ("retry", task_run_id), self._at(effect.at), lambda: self._on_timer(task_run_id, RetryDue())
            )
        elif isinstance(effect, ArmAttemptTimeout):
            task_run_id, attempt = effect.task_run_id, effect.attempt
            self._timers.arm(
                ("timeout", task_run_id, attempt),
                self._at(effect.at),
                lambda: self._on_timer(task_run_id, TaskTimedOut(attempt)),
            )
        elif isinstance(effect, AttemptEnded):
            self._timers.disarm(("timeout", effect.task_run_id, effect.attempt))
            self._timers.disarm(("grace", effect.task_run_id, effect.attempt))
        elif isinstance(effect, CancelOnWorker):
            self._cancel_on_worker(effect)
        elif isinstance(effect, TaskRunFinished):
            self._timers.disarm(("retry", effect.task_run_id))
        elif isinstance(effect, ExecutionFinished):
            self._timers.disarm(("deadline", effect.execution_id))
            self._timers.disarm(("schedule", effect.execution_id))
        # Dequeue: the ready queue drops cancelled runs lazily. PropagateCancel: the planner does it.

    def _cancel_on_worker(self, effect: CancelOnWorker) -> None:
        key = (effect.task_run_id, effect.attempt)
        session = self._attempt_sessions.get(key)
        if session is not None:
            cancel = wpb.Cancel(
                ref=wpb.AttemptRef(task_run_id=effect.task_run_id, attempt=effect.attempt),
                reason=wire.cancel_reason_to_proto(effect.reason.code),
                message=effect.reason.message,
            )
            session.send(wpb.ServerMessage(cancel=cancel))
        if self._is_current_attempt(*key):
            self._arm_cancel_grace(*key)

    def _arm_cancel_grace(self, task_run_id: str, attempt: int) -> None:
        self._timers.arm_in(
            ("grace", task_run_id, attempt),
            self._config.cancel_grace.total_seconds(),
            lambda: self._on_timer(task_run_id, CancelGraceExpired(attempt)),
        )

    def _on_timer(self, task_run_id: str, event: TaskRunEvent) -> None:
        live = self._owner.get(task_run_id)
        if live is None:
            return
        try:
            self._apply_task(live, task_run_id, event)
        except InvalidTransition as error:
            log.debug("timer event no longer applies: %s", error)
            return
        self._settle(live)

    def _arm_execution_timers(self, execution: Execution) -> None:
        execution_id = execution.id
        if execution.deadline is not None and execution.state.is_active:
            self._timers.arm(
                ("deadline", execution_id),
                self._at(execution.deadline),
                lambda: self._on_execution_timer(execution_id, ExecutionTimeoutFired()),
            )
        if execution.state is State.WAITING and execution.not_before is not None:
            self._timers.arm(
                ("schedule", execution_id),
                self._at(execution.not_before),
                lambda: self._on_execution_timer(execution_id, ScheduleDue()),
            )

    def _on_execution_timer(self, execution_id: str, event: ExecutionEvent) -> None:
        live = self._executions.get(execution_id)
        if live is None:
            return
        try:
            self._apply_execution(live, event)
        except InvalidTransition as error:
            log.debug("timer event no longer applies: %s", error)
            return
        self._settle(live)


def _is_coldable(live: _Live) -> bool:
    """Nothing but a dispatch can change it: no timer, no closing, no task run started or waiting."""
    execution = live.execution
    return (
        not live.retiring
        and execution.state is State.PENDING
        and execution.closing is None
        and execution.deadline is None
        and all(t.state is State.PENDING and not t.attempts for t in live.task_runs.values())
    )


def _is_terminal_event(event: EventRecord) -> bool:
    if event.kind != "execution_transition":
        return False
    message = pb.ExecutionEvent.FromString(event.body)
    return wire.execution_state_from_proto(message.execution_transition.to_state).is_terminal


__all__ = [
    "BatchItemResult",
    "Clock",
    "Engine",
    "EngineStats",
    "HandlerStats",
    "SubmitItem",
    "SubmitResult",
    "SystemClock",
    "WorkerHello",
]
