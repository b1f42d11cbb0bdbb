"""The engine: the single writer of all taskwire state, composed of its rooms. What servicers call.

It runs on one asyncio loop, so no two changes ever interleave. The rooms, and
what each owns (docs/engine.md has the picture and the table): `_live` (the live
executions, applying events, the queue figures), `_workers` (sessions, leases,
reports), `_holders` (who holds which attempt), `_dispatch`, `_ready`, `_submits`, `_history` (numbering,
watch), `_cold` (queued executions out of memory), `_recovery`, `_retention`,
`_schedules`, `_waits`, `_bulk`, `_replicas` (several replicas on one database),
`_directory` (the workers operators list and drain, across replicas), `_operator_drains`, `_drains`, `_stats`,
`_admission`, `_sessions`, `_bus`, `_timers`, `_clock`, `_ids`.

This module wires them together (a room's hooks point at another room's
methods, so that no two rooms import each other) and holds the lifecycle,
reads, cancel and stats.

May use: every room; the store, the committer and the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta

from taskwire.common import MAX_KEY_STATS, ExecutionFilter, Stats
from taskwire.server._config import ServerConfig
from taskwire.server.domain import (
    CancellationRequested,
    ExecutionSpec,
    InvalidTransition,
    NotFound,
    ReasonCode,
    Reused,
    State,
    TaskwireError,
    rerun_spec,
)
from taskwire.server.store import (
    Committer,
    EventRecord,
    ExecutionPage,
    ExecutionSnapshot,
    ReplicaStore,
    Store,
)

from ._admission import AdmissionQueue
from ._bulk import BulkResult, Deletions, cancel_matching, delete_matching
from ._bus import EventBus, EventFilter
from ._clock import Clock, SystemClock
from ._cold import ColdTier
from ._directory import WorkerDirectory
from ._dispatch import Dispatcher
from ._history import History, HistoryCodec
from ._keys import ConcurrencyKeys
from ._live import Executions, Figures, LiveExecution
from ._observer import Observer, Unobserved
from ._rates import RateLimits
from ._ready import ReadyQueues
from ._recovery import recover
from ._replicas import Forwarded, Replicas
from ._retention import Retention
from ._schedules import Schedules
from ._sessions import HelloRead, Welcome, WorkerHello, WorkerLink, WorkerReport, WorkerSession, WorkerView
from ._stats import engine_stats, oldest_queued
from ._submits import BatchItemResult, SubmitItem, SubmitResult, Submits
from ._timers import Timers
from ._waits import RecentEnds, wait_ends
from ._workers import WorkerPool

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        config: ServerConfig,
        codec: HistoryCodec,
        clock: Clock | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        observer: Observer | None = None,
        replica: ReplicaStore | None = None,
    ) -> None:
        """`replica`: this server is one of several replicas sharing the store (see `_replicas`)."""
        self._store = store
        self._config = config
        self._clock: Clock = clock or SystemClock()
        self.bus = EventBus()
        self.observer: Observer = observer or Unobserved()
        self._committer = Committer(
            store=store,
            bus=self.bus,
            on_fatal=on_fatal or (lambda error: None),
            observed=self.observer.committed,
            on_key_taken=lambda execution_id: self._submits.key_taken(execution_id),
        )
        self._timers = Timers(clock=self._clock)
        self._admission = AdmissionQueue(capacity=config.queue_capacity)
        self._history = History(store=store, bus=self.bus, committer=self._committer, codec=codec)
        self._keys = ConcurrencyKeys(soon=lambda callback: asyncio.get_running_loop().call_soon(callback))
        self._rates = RateLimits(
            limits={limit.name: limit for limit in config.rate_limits}, timers=self._timers, now=self._clock.monotonic
        )
        self._executions = executions = Executions(
            clock=self._clock,
            timers=self._timers,
            committer=self._committer,
            history=self._history,
            figures=Figures(self._admission, self.observer),
            keys=self._keys,
            rates=self._rates,
            cancel_grace_s=config.cancel_grace.total_seconds(),
        )
        self._pool = WorkerPool(
            clock=self._clock, timers=self._timers, config=config, executions=executions, observer=self.observer
        )
        self._ready = ReadyQueues(now=self._clock.monotonic, aging_s=config.priority_aging.total_seconds())
        self._cold = ColdTier(
            store=store,
            executions=executions,
            admission=self._admission,
            ready=self._ready,
            hot_queue_size=config.hot_queue_size,
            loaded=lambda: self._dispatcher.schedule_pump(),
        )
        self._dispatcher = Dispatcher(
            ready=self._ready, executions=executions, holders=self._pool.holders, cold=self._cold
        )
        self._submits = Submits(
            store=store,
            clock=self._clock,
            limits=config.limits,
            committer=self._committer,
            admission=self._admission,
            executions=executions,
            history=self._history,
            cold=self._cold,
            dispatcher=self._dispatcher,
            rate_limits=frozenset(limit.name for limit in config.rate_limits),
            shared_keys=replica is not None,
        )
        executions.enqueue = self._dispatcher.enqueue
        self._keys.admit = lambda task_run_id: not self._closed and executions.admit_waiting(task_run_id)
        self._rates.admit = lambda task_run_id: (
            not self._closed and executions.admit_waiting(task_run_id, ReasonCode.RATE_LIMITED)
        )
        self._pool.holders.forgotten = self._keys.attempt_over
        executions.is_served = self._pool.serves
        executions.cancel_on_worker = self._pool.cancel_on_worker
        executions.retired = self._retired
        self._history.is_live = executions.by_id.__contains__
        self._pool.slot_freed = self._dispatcher.slot_freed
        self._dispatcher.serves_elsewhere = lambda handler, besides: self._pool.serves(handler, besides=besides)
        self._timers.overslept = self._pool.renew_leases
        # Replicas keep no recent ends: another replica may delete one of them.
        self._recent = RecentEnds() if replica is None else RecentEnds(capacity=0)
        self.retention = Retention(
            clock=self._clock,
            store=store,
            committer=self._committer,
            is_live=executions.by_id.__contains__,
            retention=config.retention,
            batch=config.retention_batch,
            deleting=self._recent.forget,
        )
        self._deletions = Deletions(
            live=executions.by_id.get, store=store, committer=self._committer, deleting=self._recent.forget
        )
        self.schedules = Schedules(
            clock=self._clock, timers=self._timers, committer=self._committer, store=store, limits=config.limits
        )
        self.schedules.submit = self._submit_fire
        self.schedules.cancel = self.cancel
        self.schedules.active = self._active
        self._closed = False
        # Public, as `schedules` and `retention` are: what several replicas on one database add (`_replicas`).
        self.replicas = Replicas(
            replica_store=replica,
            store=store,
            committer=self._committer,
            bus=self.bus,
            executions=executions,
            pool=self._pool,
            cold=self._cold,
            ready=self._ready,
            dispatcher=self._dispatcher,
            schedules=self.schedules,
            forget_key=self._submits.forget_key,
            clock=self._clock,
        )
        self.schedules.leading = self.retention.leading = lambda: self.replicas.leading
        self.schedules.shared = replica is not None
        # Public too: the workers operators list and drain, across replicas (`_directory`).
        self.directory = WorkerDirectory(pool=self._pool, replica_store=replica, clock=self._clock)
        self.replicas.mail_drain = self.directory.mail_drain

    # ---- Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the queue, timers and leases from the store, then start serving."""
        recovered = await recover(
            store=self._store, executions=self._executions, pool=self._pool, cold=self._cold, ready=self._ready
        )
        schedules = await self.schedules.load()
        self._timers.start()
        self._committer.start()
        for live in list(self._executions.by_id.values()):
            self._executions.settle(live)
        self._dispatcher.schedule_pump()
        self.retention.start()
        self.schedules.start()
        log.info(
            "recovered %d active executions, %d queued task runs, %d running attempts awaiting their workers",
            recovered.executions,
            self._admission.size,
            recovered.awaiting_workers,
        )
        if schedules:
            log.info("loaded %d schedules", schedules)

    def stop_accepting(self) -> None:
        """New submits get UNAVAILABLE; submits waiting for room are released with the same."""
        self._submits.accepting = False
        self._admission.close()

    async def release_workers(self, grace: timedelta, *, reconnect_within: timedelta) -> None:
        """The server is going away: stop dispatching, tell every worker so (they keep running their
        attempts and reconnect to the next server, which adopts them), and wait (at most `grace`) for
        them all to hang up, so that every report they wrote before is read and staged."""
        pool = self._pool
        self._dispatcher.closed = True
        pool.going_away(reconnect_within, "the server is shutting down")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            pool.changed.set()

        deadline = self._clock.call_at(self._clock.monotonic() + grace.total_seconds(), expire)
        try:
            while pool.connected() and not expired:
                pool.changed.clear()
                await pool.changed.wait()
        finally:
            deadline.cancel()

    async def close(self) -> None:
        """Flush staged writes and stop timers. Idempotent. Closing the store is the caller's."""
        if self._closed:
            return
        self._closed = True
        self.stop_accepting()
        self._dispatcher.closed = True
        self._pool.close()
        self.bus.close()
        await self.replicas.close()
        await self.retention.close()
        await self.schedules.close()
        await self._cold.close()
        await self._timers.close()
        await self._committer.close()

    async def flush(self) -> None:
        """Wait until everything staged so far is durable."""
        await self._committer.flush()

    # ---- Submits, reads, watch, cancel ----------------------------------------------------------

    async def submit(
        self,
        spec: ExecutionSpec,
        *,
        fingerprint: str,
        wait_for_room: bool,
        timeout_s: float | None,
        submitted_by: str = "",
    ) -> SubmitResult:
        """Submit one execution, recorded as `submitted_by`'s (the caller's identity, "" without auth)."""
        return await self._submits.submit(
            spec, fingerprint=fingerprint, wait_for_room=wait_for_room, timeout_s=timeout_s, submitted_by=submitted_by
        )

    async def submit_each(
        self, specs: Sequence[ExecutionSpec], *, submitted_by: str = ""
    ) -> list[SubmitResult | TaskwireError]:
        """Single submits without idempotency keys that fail fast, made together: each refused or accepted on
        its own, all dispatched in one pass and committed together (see `Submits.submit_each`)."""
        return await self._submits.submit_each(specs, submitted_by=submitted_by)

    async def submit_many(
        self, items: Sequence[SubmitItem], *, wait_for_room: bool, timeout_s: float | None, submitted_by: str = ""
    ) -> list[BatchItemResult]:
        return await self._submits.submit_many(
            items, wait_for_room=wait_for_room, timeout_s=timeout_s, submitted_by=submitted_by
        )

    async def get(self, execution_id: str) -> ExecutionSnapshot:
        """The execution as durably stored (an execution that just ended, from memory: see `_stored`)."""
        snapshot = await self._stored(execution_id)
        if snapshot is None:
            raise NotFound("execution", execution_id)
        return snapshot

    async def _stored(self, execution_id: str) -> ExecutionSnapshot | None:
        """The execution as the store holds it: one of the recent ends is answered from memory (its end is
        durable and final; it is forgotten when its deletion is staged)."""
        return self._recent.get(execution_id) or await self._store.get_execution(execution_id)

    async def list_executions(
        self,
        *,
        states: Sequence[State],
        handler: str,
        page_size: int,
        page_token: str,
        submitted_by: str | None = None,
    ) -> ExecutionPage:
        """A page of executions, newest first; only `submitted_by`'s when given."""
        return await self._store.list_executions(
            states=states, handler=handler, page_size=page_size, page_token=page_token, submitted_by=submitted_by
        )

    def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[EventRecord]:
        """Stored events after `after_sequence`, then live ones; ends after the terminal event."""
        return self._history.watch(execution_id, after_sequence)

    def wait_ends(
        self, execution_ids: Sequence[str], *, owner: str | None = None
    ) -> AsyncGenerator[list[ExecutionSnapshot], None]:
        """Batches of the executions' final snapshots as they end, those already finished first (see `_waits`);
        only `owner`'s executions exist when given."""
        return wait_ends(
            execution_ids,
            bus=self.bus,
            store=self._store,
            live=self._executions.by_id.get,
            recent=self._recent,
            owner=owner,
        )

    def watch_all(self, *, handler: str = "", states: Sequence[State] = ()) -> AsyncIterator[EventRecord]:
        """Live events of every execution, from now on, filtered (see `EventFilter`); never ends by itself."""
        return self._history.watch_all(EventFilter(handler, frozenset(states)))

    async def cancel(self, execution_id: str, reason: str) -> tuple[ExecutionSnapshot, bool]:
        """Cancel an execution; returns it after the request and whether it was already terminal. One that
        another replica holds: its holder is mailed the cancel, and the stored snapshot is returned."""
        requested = await self._request_cancel(execution_id, reason)
        if isinstance(requested, Forwarded):
            return requested.snapshot, False
        if isinstance(requested, ExecutionSnapshot):
            return requested, True
        await self._committer.durable()
        return requested.snapshot(), False

    async def cancel_many(self, execution_ids: Sequence[str], reason: str) -> int:
        """Cancel executions as `cancel` does, in one commit; returns how many were cancelled (those that
        had ended or are gone are skipped)."""
        cancelled = 0
        await self._cold.load(execution_ids)  # the cold ones back in one read, not one each
        try:
            for execution_id in execution_ids:
                with contextlib.suppress(NotFound):  # deleted meanwhile
                    if not isinstance(await self._request_cancel(execution_id, reason), ExecutionSnapshot):
                        cancelled += 1
        finally:
            await self._committer.durable()
        return cancelled

    async def _request_cancel(self, execution_id: str, reason: str) -> LiveExecution | ExecutionSnapshot | Forwarded:
        """The live execution the cancel was applied to (not durable yet), or the snapshot of one that ended,
        or the cancel forwarded to the replica that holds the execution."""
        executions = self._executions
        if execution_id not in executions.by_id:
            if self.replicas.replica_store is not None:  # held by another replica: mailed there, not read back here
                forwarded = await self.replicas.cancel_elsewhere(execution_id, reason)
                if forwarded is not None:
                    return forwarded
            await self._cold.load([execution_id])  # a cold one comes back; anything else stays where it is
        live = executions.by_id.get(execution_id)
        if live is None or live.execution.state.is_terminal:
            snapshot = live.snapshot() if live is not None else await self._stored(execution_id)
            if snapshot is None:
                raise NotFound("execution", execution_id)
            return snapshot
        # The cancel goes down its worker's stream first; the commit that records it is taken after.
        with self._committer.after_the_rest():
            executions.apply_execution(live, CancellationRequested(reason or "cancellation requested"))
            executions.settle(live)
        return live

    async def rerun(self, execution_id: str, *, only_failed: bool, submitted_by: str = "") -> SubmitResult:
        """A new execution with the same spec as a finished one (labelled RERUN_OF it). With `only_failed`,
        its tasks that succeeded are not run again: their outputs are reused."""
        live = self._executions.by_id.get(execution_id)
        snapshot = live.snapshot() if live is not None else await self._stored(execution_id)
        if snapshot is None:
            raise NotFound("execution", execution_id)
        reused: dict[str, Reused] = {}
        if only_failed:
            for run in snapshot.task_runs:
                if run.state is State.SUCCESS:
                    reused[run.task_id] = Reused(run.output, execution_id)
        state = snapshot.execution.state
        why = ""
        if not state.is_terminal:
            why = "it has not ended; wait for it, or cancel it first"
        elif len(reused) == len(snapshot.task_runs):
            why = "every task of it succeeded: nothing to run again"
        if why:
            raise InvalidTransition(
                entity="execution", entity_id=execution_id, state=str(state.value), event="rerun", reason=why
            )
        spec = rerun_spec(snapshot.execution, snapshot.task_runs)
        return await self._submits.rerun(spec, reused, submitted_by=submitted_by)

    async def cancel_matching(self, selection: ExecutionFilter, *, reason: str, dry_run: bool) -> BulkResult:
        """Cancel every execution `selection` matches that has not ended (or count them, `dry_run`)."""
        await self.flush()
        return await cancel_matching(self.list_executions, self.cancel_many, selection, reason=reason, dry_run=dry_run)

    async def delete_matching(self, selection: ExecutionFilter, *, dry_run: bool) -> BulkResult:
        """Delete every finished execution `selection` matches (or count them, `dry_run`)."""
        await self.flush()
        return await delete_matching(self.list_executions, self.delete_many, selection, dry_run=dry_run)

    async def delete(self, execution_id: str) -> None:
        """Delete a finished execution with its task runs, history and idempotency key. InvalidTransition
        (FAILED_PRECONDITION) naming its state when it is not finished; NotFound when there is none."""
        await self._deletions.delete(execution_id)

    async def delete_many(self, execution_ids: Sequence[str]) -> int:
        """Delete finished executions as `delete` does, in one commit; see `Deletions.delete_many`."""
        return await self._deletions.delete_many(execution_ids)

    # ---- Hooks of the schedules room --------------------------------------------------------------

    def _retired(self, live: LiveExecution) -> None:
        """A finished execution left memory (its end is durable)."""
        if self._recent.keeping or self.bus.awaited(live.execution.id):
            snapshot = live.snapshot()
            self._recent.remember(snapshot)
            self.bus.ended(snapshot)
        self._submits.forget_key(live.execution)
        self.schedules.execution_ended(live.execution.id, live.execution.metadata)

    async def _submit_fire(self, spec: ExecutionSpec, fingerprint: str) -> tuple[str, bool]:
        """A schedule's fire, through the normal submit path (fail fast on a full queue); its id and whether
        it is still active (a repeated fire finds the execution the first one made, perhaps finished)."""
        result = await self._submits.submit(spec, fingerprint=fingerprint, wait_for_room=False, timeout_s=None)
        execution = result.snapshot.execution
        return execution.id, not execution.state.is_terminal

    async def _active(self, execution_ids: Sequence[str]) -> set[str]:
        """Those of the executions that have not finished (in memory, or stored: a cold one is queued)."""
        active: set[str] = set()
        elsewhere: list[str] = []
        for execution_id in execution_ids:
            live = self._executions.by_id.get(execution_id)
            if live is None:
                elsewhere.append(execution_id)
            elif not live.execution.state.is_terminal:
                active.add(execution_id)
        if elsewhere:
            stored = await self._store.get_executions(elsewhere)
            active.update(i for i, snapshot in stored.items() if not snapshot.execution.state.is_terminal)
        return active

    def stats(self) -> Stats:
        return engine_stats(
            self._executions.figures,
            self._pool.connected(),
            self._admission,
            self.oldest_queued(),
            keys=self._keys.figures(MAX_KEY_STATS),
            rates=self._rates.figures(MAX_KEY_STATS),
        )

    # ---- Workers --------------------------------------------------------------------------------

    def oldest_queued(self) -> dict[str, datetime]:
        """Per handler, when its oldest queued task run held in memory was queued (see `_stats`)."""
        return oldest_queued(self._ready, self._executions.by_task_run)

    def unserved(self, handlers: Iterable[str]) -> tuple[str, ...]:
        """Those of `handlers` that no connected worker serves now, sorted."""
        return tuple(sorted({handler for handler in handlers if not self._pool.serves(handler)}))

    def workers(self) -> list[WorkerSession]:
        return sorted(self._pool.connected(), key=lambda s: (s.name, s.session_id))

    def hello_read(self) -> HelloRead:
        """A ticket for a worker's hello just read: pass it to `connect_worker` (hellos connect in that order)."""
        return self._pool.hello_read()

    def connect_worker(
        self, hello: WorkerHello, link: WorkerLink, *, identity: str = "", ticket: HelloRead | None = None
    ) -> tuple[WorkerSession, Welcome]:
        """Open a session that sends on `link` for a worker whose credential names `identity`; adopt the
        running attempts it reports that are still its own. A hello read (`ticket`) before that of a session of
        its instance connected now is refused (Superseded)."""
        return self._pool.connect(hello, link, identity=identity, ticket=ticket)

    async def list_workers(self) -> list[WorkerView]:
        """The connected workers an operator sees: this server's, and on a replica the other replicas' too."""
        return await self.directory.everywhere()

    async def drain_worker(
        self, *, name: str = "", session_id: str = "", grace: timedelta | None = None, reason: str = ""
    ) -> list[WorkerView]:
        """An operator drains a worker (by name, session id or both), on this server or, on a replica, wherever
        it is connected: no new work for its sessions, and each is told to finish what it runs within `grace` and
        hang up. NotFound when none is connected."""
        return await self.directory.drain(
            name=name, session_id=session_id, grace=grace, reason=reason or "an operator asked this worker to drain"
        )

    def disconnect_worker(self, session: WorkerSession, *, closed_by_worker: bool = False) -> None:
        """The stream ended (`closed_by_worker`: the worker half-closed it). Held attempts keep their lease until it
        times out or the worker returns."""
        self._pool.disconnect(session, closed_by_worker=closed_by_worker)

    def worker_backlogged(self, session: WorkerSession, backlogged: bool) -> None:
        """The session's stream holds more unsent messages than it may (True), or is back under (False)."""
        self._pool.backlogged(session, backlogged)

    def on_worker_frame(self, session: WorkerSession, reports: Iterable[WorkerReport]) -> None:
        """One frame from a worker's stream, decoded into reports."""
        self._pool.on_frame(session, reports)
