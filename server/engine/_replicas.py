"""Replicas: what the engine does for several active servers that share one PostgreSQL database.

Each execution is held by one replica, which runs it as a single server would. The
rest of the engine does not know about replicas; this room is what it does beyond that:

- **Adopt** (`adopt`): executions taken over from a replica that died, or given by another one, are
  merged into the live state as a recovery merges them (`_recovery.merge`); those held already are left.
- **Give away** (`give_away`): executions another replica claimed leave this one if they are movable
  (`is_movable`: unfinished, no cancel under way, nothing running, no concurrency key or rate limit, whose
  counts are this replica's; or cold): out of memory, the cold tier and the queue figures
  at once, before anything is awaited, so that nothing dispatches them here afterwards (their places in
  the ready queue are dropped when the dispatcher reaches them: neither in memory nor cold). Then what
  was staged is made durable and the store moves them. Those the store did not move come back.
- **Hand over** (`hand_over`): a worker that ran attempts here reconnected to another replica (this one
  stopping, or the one it adopted them from stopped): the executions whose every running attempt is held by a
  session whose stream is gone go to that replica as given-away ones go (those sessions let go of the attempts,
  so that their leases fail nothing), the rest stay. An operator's drain that stands for that worker here is
  mailed to that replica (its Drain may have died with the old stream).
- **Take over** (`take_over`): the other side: a worker connecting here reports running attempts of executions
  another replica holds; they are asked of their holders, and the answers awaited (bounded) before its session
  opens, so that it adopts those given as it adopts attempts after a restart.
- **Idle handlers** (`idle_handlers`): the free slots of the local workers per handler with nothing
  queued here: what this replica may claim.
- **Follow remote executions** (`follow_remote`): for the executions that local watchers or waiters
  follow and that another replica holds, the events committed there are read from the store and
  published on the local bus in order (from the last one published here; the first time, from the last
  stored one, so that a watcher that missed events sees a gap and reads them from the store), and a
  finished one's final snapshot goes to those waiting for its end.
- **Cancel elsewhere** (`cancel_elsewhere`): a cancel of an execution another replica holds is mailed
  to it.
- **Leading**: only the leading replica fires schedules and deletes by retention; when it begins to
  lead it reads the schedules again and catches them up. Schedules changed through other replicas meanwhile
  reach every replica by the schedules room's `refresh` (the server calls it on a notification and a poll).

May use: the replica store, the store (reads), the committer, the bus, the live executions, the worker
pool, the cold tier, the ready queues, the dispatcher, the schedules, the recovery's merge, the clock; one hook
(forget an idempotency key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from taskwire.server.domain import Execution, State
from taskwire.server.store import Committer, ExecutionSnapshot, RecoveredState, ReplicaStore, Store

from ._bus import EventBus
from ._clock import Clock
from ._cold import ColdTier
from ._dispatch import Dispatcher
from ._drains import Drain
from ._live import Executions, LiveExecution
from ._ready import ReadyQueues
from ._recovery import merge
from ._schedules import Schedules
from ._sessions import AttemptKey
from ._workers import WorkerPool

log = logging.getLogger(__name__)


def is_movable(live: LiveExecution) -> bool:
    """May be handed to another replica: nothing of it runs here (no attempt, no cancel under way, not ending), and
    nothing of it counts in this replica's concurrency keys or rate limits. The new holder recovers it as a restart
    does (timers armed again; those left here find nothing when they fire). The store's claim selects by the same
    rule (`_postgres_replicas._CLAIM`)."""
    execution = live.execution
    return (
        not live.retiring
        and not execution.state.is_terminal
        and execution.closing is None
        and all(
            task_run.state is not State.RUNNING and not task_run.concurrency_key and not task_run.rate_limit
            for task_run in live.task_runs.values()
        )
    )


def _leaves_no_worker_behind(live: LiveExecution, pool: WorkerPool) -> bool:
    """May be handed to the replica a worker reconnected to: movable but for its RUNNING attempts, each held by a
    session whose stream is gone (its worker went elsewhere; the session of an adoption has none)."""
    execution = live.execution
    if live.retiring or execution.state.is_terminal or execution.closing is not None:
        return False
    for task_run in live.task_runs.values():
        if task_run.concurrency_key or task_run.rate_limit:
            return False
        attempt = task_run.current_attempt
        if task_run.state is State.RUNNING and attempt is not None:
            holder = pool.holders.holder((task_run.id, attempt.number))
            if holder is not None and holder.connected:
                return False
    return True


_EVENT_PAGE = 1000  # events read from the store at a time
# How often a worker's hello, waiting for its attempts to be handed over, looks again at who holds them: a holder
# asked just as it stopped may be adopted by another replica, which never reads the mail sent to the first.
_RECHECK_HOLDERS_S = 0.5


async def _no_mail(to: str, workers: list[dict[str, str]], drain: Drain) -> None:
    raise RuntimeError("Replicas.mail_drain is not wired")


@dataclass(frozen=True, slots=True)
class _Asked:
    """An execution a worker's hello asked to be handed over: whom it was last asked of, and its answer."""

    holder: str
    answer: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A cancel mailed to the replica that holds the execution; `snapshot` is the stored one."""

    snapshot: ExecutionSnapshot


class Replicas:
    def __init__(
        self,
        *,
        replica_store: ReplicaStore | None,
        store: Store,
        committer: Committer,
        bus: EventBus,
        executions: Executions,
        pool: WorkerPool,
        cold: ColdTier,
        ready: ReadyQueues,
        dispatcher: Dispatcher,
        schedules: Schedules,
        forget_key: Callable[[Execution], None],
        clock: Clock,
    ) -> None:
        self.replica_store = replica_store  # None: a single server
        self._clock = clock
        self._leading = replica_store is None  # set by the server in replica mode
        self._store = store
        self._committer = committer
        self._bus = bus
        self._executions = executions
        self._pool = pool
        self._cold = cold
        self._ready = ready
        self._dispatcher = dispatcher
        self._schedules = schedules
        self._forget_key = forget_key
        # Mails replica `to` a drain of the worker instances ({"instance", "identity"} each).
        self.mail_drain: Callable[[str, list[dict[str, str]], Drain], Awaitable[None]] = _no_mail
        self._handing: dict[str, asyncio.Future[None]] = {}  # execution id -> its hand over's answer
        self._given: dict[str, int] = {}  # per handler, task runs given away since its queue was last cleared of them
        self._followed: dict[str, int] = {}  # execution id -> the last sequence published here
        self._following = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def _replica_store(self) -> ReplicaStore:
        if self.replica_store is None:
            raise RuntimeError("this engine is not a replica (Engine(replica=...))")
        return self.replica_store

    # ---- Adopting -------------------------------------------------------------------------------

    def adopt(self, state: RecoveredState) -> int:
        """Merge the executions of `state` not held yet; settle them and let dispatch go on."""
        merged = merge(state, executions=self._executions, pool=self._pool, cold=self._cold, ready=self._ready)
        for live in merged.merged:
            self._executions.settle(live)
        self._dispatcher.schedule_pump()
        return merged.executions + merged.cold

    # ---- Giving away ----------------------------------------------------------------------------

    async def give_away(self, execution_ids: Sequence[str], to: str) -> list[str]:
        """Give `to` those of the executions that are movable; refuse the rest. Returns the ids moved."""
        replica_store = self._replica_store
        wanted = list(dict.fromkeys(execution_ids))
        others = [e for e in wanted if e not in self._executions.by_id]
        # Read before anything leaves memory: a read that fails loses nothing.
        stored = await self._store.get_executions(others) if others else {}
        # Decided now, with nothing awaited in between: a cold one may have come into memory meanwhile.
        given = []
        for execution_id in wanted:
            snapshot = stored.get(execution_id)
            if self._give_live(execution_id, is_movable) or (snapshot is not None and self._give_cold(snapshot)):
                given.append(execution_id)
        return await self._move(replica_store, wanted, given, to)

    async def hand_over(
        self,
        execution_ids: Sequence[str],
        to: str,
        *,
        instance_id: str = "",
        identity: str = "",
        hello_at: datetime | None = None,
    ) -> list[str]:
        """A worker that ran attempts of these executions reconnected to `to`: give `to` those whose every running
        attempt is held by a session whose stream is gone (their sessions let go of them); refuse the rest. Returns
        the ids moved. That worker's instance (`instance_id`, with its credential's `identity`) has one stream at a
        time, its new one: a session of it here that still looks connected ends first (`WorkerPool.replaced`),
        unless its own hello was read after that one (`hello_at`): then the worker gave that hello up, and the
        session here is the newer one."""
        replica_store = self._replica_store
        wanted = list(dict.fromkeys(execution_ids))
        if to == replica_store.replica:  # asked of a replica this one adopted since: they are here
            self.answered(wanted)
            return []
        pool = self._pool
        pool.replaced(instance_id, identity, before=hello_at)
        drain = pool.drains.standing_for(instance_id, identity)
        if drain is not None:  # asked of its stream here, which may have died with the Drain on it: told there
            # Before anything leaves memory: a failed mail leaves the hand over to be asked again, unchanged.
            await self.mail_drain(to, [{"instance": instance_id, "identity": identity}], drain)
        given = [e for e in wanted if self._give_live(e, lambda live: _leaves_no_worker_behind(live, pool))]
        return await self._move(replica_store, wanted, given, to)

    async def _move(self, replica_store: ReplicaStore, wanted: list[str], given: list[str], to: str) -> list[str]:
        given_ids = set(given)
        refused = [e for e in wanted if e not in given_ids]
        self._drop_places()
        self._dispatcher.schedule_pump()  # drops the places of those given, where workers are free
        try:
            await self._committer.flush()
            moved = await replica_store.give(given, refused, to)
        except Exception:
            self._take_back(given, await replica_store.load(given))
            raise
        moved_ids = set(moved)
        kept = [e for e in given if e not in moved_ids]
        if kept:  # `to` is gone: they stay here
            self._take_back(kept, await replica_store.load(kept))
        return moved

    def _give_live(self, execution_id: str, movable: Callable[[LiveExecution], bool]) -> bool:
        executions = self._executions
        live = executions.by_id.get(execution_id)
        if live is None or not movable(live):
            return False
        del executions.by_id[execution_id]
        for task_run in live.task_runs.values():
            del executions.by_task_run[task_run.id]
            executions.figures.uncount_given(task_run.handler, task_run.state)
            if task_run.state is State.RUNNING and task_run.current_attempt is not None:
                self._let_go((task_run.id, task_run.current_attempt.number))
            if task_run.state is State.PENDING:
                self._given[task_run.handler] = self._given.get(task_run.handler, 0) + 1
        self._forget_key(live.execution)
        return True

    def _let_go(self, key: AttemptKey) -> None:
        """The session (without a stream) that held a running attempt handed over holds it no longer: its lease
        fails nothing; a session left holding nothing goes."""
        session = self._pool.holders.release(key)
        if session is not None and not session.connected and not session.held:
            self._pool.sessions.pop(session.session_id, None)

    def _give_cold(self, snapshot: ExecutionSnapshot) -> bool:
        if snapshot.execution.id in self._executions.by_id or not self._cold.give_up(snapshot):
            return False
        for task_run in snapshot.task_runs:
            self._given[task_run.handler] = self._given.get(task_run.handler, 0) + 1
        self._forget_key(snapshot.execution)
        return True

    def _drop_places(self) -> None:
        """The queue places of what was given away go when they outnumber the others (a worker of this replica would
        drop each at the head, but there may be none for a long time)."""
        for handler, given in list(self._given.items()):
            if 2 * given > self._ready.size(handler):
                self._ready.keep(handler, self._queued_here)
                del self._given[handler]

    def _queued_here(self, task_run_id: str) -> bool:
        live = self._executions.by_task_run.get(task_run_id)
        if live is not None:
            return live.task_runs[task_run_id].state is State.PENDING
        return self._cold.is_cold(task_run_id)

    def _take_back(self, execution_ids: list[str], state: RecoveredState) -> None:
        missing = len(execution_ids) - self.adopt(state)
        if missing > 0:  # the store no longer says this replica holds them
            log.warning("%d executions not given away could not be loaded back", missing)

    # ---- Taking attempts over --------------------------------------------------------------------

    async def take_over(
        self,
        running: Sequence[AttemptKey],
        within_s: float,
        *,
        instance_id: str = "",
        identity: str = "",
        hello_at: datetime | None = None,
    ) -> None:
        """A worker connecting here runs these attempts: those of executions another replica holds are asked of their
        holders (`hand_over` mail, naming the worker's instance and credential), and their answers awaited for up to
        `within_s` seconds (the mail loop adopts what is given, and calls `answered`), so that the worker's session
        adopts them as its own. Nothing to wait for outside replica mode or when every attempt is known here; a
        failure is logged, never raised."""
        replica_store = self.replica_store
        if replica_store is None or self._pool.leaving:  # a replica going away takes nothing over
            return
        unknown = [task_run_id for task_run_id, _ in running if task_run_id not in self._executions.by_task_run]
        if not unknown:
            return
        loop = asyncio.get_running_loop()
        asked: dict[str, _Asked] = {}
        # When its hello was read (now, if not said): a session of it whose hello was read after that is newer.
        read_at = (self._clock.now() if hello_at is None else hello_at).isoformat()
        worker = {"instance": instance_id, "identity": identity, "hello_at": read_at} if instance_id else {}
        try:
            await self._ask(unknown, asked, worker)
            deadline = loop.time() + within_s
            while (pending := [a.answer for a in asked.values() if not a.answer.done()]) and (
                left := deadline - loop.time()
            ) > 0:
                await asyncio.wait(pending, timeout=min(_RECHECK_HOLDERS_S, left))
                try:
                    await self._ask(unknown, asked, worker)
                except Exception as error:  # the answers asked for are still awaited
                    log.debug("holders of a reconnecting worker's attempts not read again: %s", error)
        except Exception as error:
            log.warning("attempts of a reconnecting worker not taken over: %s", error)
        finally:
            for execution_id in asked:
                self._handing.pop(execution_id, None)

    async def _ask(self, task_run_ids: Sequence[str], asked: dict[str, _Asked], worker: dict[str, str]) -> None:
        """Read who holds the executions of these task runs, and ask each holder for those not asked of it yet: a
        holder that is this replica is loaded from the store (its mail not read yet), one that finished or is here
        already is answered, and one asked before whose holder changed since (its holder adopted by another
        replica) is asked of the new holder. `asked` says whom each was asked of, and holds its answer."""
        replica_store = self.replica_store
        assert replica_store is not None
        # The first time, every execution of these task runs; then those asked of a holder and not answered yet.
        waiting = [e for e, a in asked.items() if not a.answer.done()]
        if asked and not waiting:
            return
        holders = await replica_store.holders_of_task_runs(task_run_ids)
        me = replica_store.replica
        loop = asyncio.get_running_loop()
        mine: list[str] = []
        ask: dict[str, list[str]] = {}
        for execution_id in waiting if asked else list(holders):
            holder = holders.get(execution_id, "")
            if execution_id in self._executions.by_id or not holder:
                self.answered([execution_id])  # here by now, or finished
            elif holder == me:
                mine.append(execution_id)
            elif execution_id not in asked or holder != asked[execution_id].holder:
                ask.setdefault(holder, []).append(execution_id)
                answer = self._handing.setdefault(execution_id, loop.create_future())
                asked[execution_id] = _Asked(holder, answer)
        if mine:
            self.adopt(await replica_store.load(mine))
            self.answered(mine)
        for holder, ids in sorted(ask.items()):
            await replica_store.send(holder, "hand_over", {"by": me, "executions": ids, **worker})

    def answered(self, execution_ids: Sequence[str]) -> None:
        """The holder answered a `hand_over` of these executions (given, and adopted here, or refused)."""
        for execution_id in execution_ids:
            waiting = self._handing.pop(execution_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)

    # ---- Claiming -------------------------------------------------------------------------------

    def idle_handlers(self) -> dict[str, int]:
        """Per handler with nothing queued here (in memory or cold), the free slots of the local workers
        that serve it (connected, not draining)."""
        pending = self._executions.figures.pending_by_handler
        idle: dict[str, int] = {}
        for session in self._pool.connected():
            slots = session.free_slots  # none while draining or backlogged
            if slots <= 0:
                continue
            for handler in session.handlers:
                if not pending.get(handler):
                    idle[handler] = idle.get(handler, 0) + slots
        return idle

    # ---- Following remote executions ------------------------------------------------------------

    async def follow_remote(self, execution_ids: Sequence[str] | None) -> None:
        """Publish the events another replica committed for the executions followed here (all of them when
        `execution_ids` is None), and hand a finished one's final snapshot to those waiting for its end."""
        async with self._following:
            followed = self._bus.followed()
            for gone in [e for e in self._followed if e not in followed]:
                del self._followed[gone]
            wanted = followed if execution_ids is None else [e for e in execution_ids if e in followed]
            remote: list[str] = []
            for execution_id in wanted:
                if execution_id in self._executions.by_id:
                    self._followed.pop(execution_id, None)  # published by the committer here
                else:
                    remote.append(execution_id)
            if not remote:
                return
            sequences = await self._store.last_sequences(remote)
            moved = []
            for execution_id in remote:
                stored = sequences.get(execution_id, 0)
                if stored > self._followed.setdefault(execution_id, max(stored - 1, 0)):
                    moved.append(execution_id)
            for execution_id in moved:
                await self._publish_after(execution_id)
            if moved:
                for execution_id, snapshot in (await self._store.get_executions(moved)).items():
                    if snapshot.execution.state.is_terminal and self._bus.awaited(execution_id):
                        self._bus.ended(snapshot)

    async def _publish_after(self, execution_id: str) -> None:
        while True:
            after = self._followed.get(execution_id, 0)
            page = await self._store.read_events(execution_id, after, _EVENT_PAGE)
            page = [event for event in page if event.sequence > self._followed.get(execution_id, 0)]
            if not page:
                return
            self._bus.publish(page, to_all=False)
            self._followed[execution_id] = page[-1].sequence

    # ---- Cancels --------------------------------------------------------------------------------

    async def cancel_elsewhere(self, execution_id: str, reason: str) -> Forwarded | None:
        """A cancel of an execution not in memory here: mailed to the replica that holds it (Forwarded),
        or None when the engine goes on as for any other (it has finished, or is not stored, or it is held
        here and was loaded back into memory)."""
        replica_store = self._replica_store
        holder = await replica_store.holder_of(execution_id)  # '' when it is not stored, or finished
        if not holder:
            return None
        if holder == replica_store.replica:  # given to this one, and its mail not read yet; or cold here
            self.adopt(await replica_store.load([execution_id]))
            await self._cold.load([execution_id])  # it may have come back cold
            return None
        # The answer is read while the cancel is on its way: its holder aborts the handler the sooner.
        snapshot, _ = await asyncio.gather(
            self._store.get_execution(execution_id),
            replica_store.send(holder, "cancel", {"execution_id": execution_id, "reason": reason}),
        )
        return None if snapshot is None else Forwarded(snapshot)

    # ---- Leading --------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this server fires schedules and deletes by retention: always outside replica mode."""
        return self._leading

    @leading.setter
    def leading(self, leading: bool) -> None:
        """On beginning to lead, the schedules are read again (another replica may have changed them) and
        caught up."""
        if self.replica_store is None:
            return  # a single server always leads
        if leading and not self._leading:
            self._take_over()
        self._leading = leading

    @property
    def on_idle(self) -> Callable[[], None] | None:
        """Called when a dispatch pass leaves a worker with free slots (it may claim work elsewhere)."""
        return self._dispatcher.on_idle

    @on_idle.setter
    def on_idle(self, hook: Callable[[], None] | None) -> None:
        self._dispatcher.on_idle = hook

    def _take_over(self) -> None:
        if self._closed:
            return

        async def take_over() -> None:
            try:
                await self._committer.flush()
                count = await self._schedules.load()
                self._schedules.start()
                log.info("leading: loaded %d schedules", count)
            except Exception:
                log.exception("leading: loading the schedules failed")

        task = asyncio.create_task(take_over(), name="taskwire-replica-lead")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
