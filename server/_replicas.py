"""What a replica does beside its engine: the work between replicas, all through the shared PostgreSQL database.

Several `taskwire-server --replica NAME` processes share one database, all active (docs/deploy.md). Each
execution is held by one replica, which runs it in its engine as a lone server would. This coordinator is
the rest, six loops, each polling; the first five are also woken by the database's notifications
(LISTEN/NOTIFY), so that a lost notification, or a pooler that passes none (`--store-notify off`), only slows
them down:

- **mail**: what other replicas ask of this one, applied in order, then deleted (every kind is
  idempotent): a `cancel` of an execution held here; a `claim` of movable executions by a replica with idle
  workers (given, or refused when they started meanwhile); a `hand_over` of executions whose running attempts'
  worker reconnected to the asking replica (given when no connected worker here holds them, or refused; a session
  here of that worker's instance ends first, unless its hello was read after the asking one's);
  `given` executions (loaded into the engine); `refused` claims (claimed again at the next wakeup) and hand overs.
  A `drain` of workers connected here that an operator asked of another replica; `drain_done`, a worker instance
  that finished a drain on another replica (the drains of it kept here and asked before are done).
- **claims**: while local workers have free slots for a handler with nothing queued here, claim at most that
  many movable executions of other replicas waiting for it (`FOR UPDATE SKIP LOCKED` in the store), less
  those claimed and not answered yet.
- **feed**: events other replicas committed, for the executions this replica's watchers and waiters follow
  and it does not hold, published on its bus.
- **leader**: the replica holding the leader row adopts the work of replicas whose lease lapsed (killed,
  paused, cut off) and runs schedules and retention; the others do neither. Mail waits while an adoption
  is under way: another replica may ask for what the store has moved here before it is loaded.
- **schedules**: schedules any replica created, changed or deleted, read again (`Engine.refresh_schedules`): the
  leader fires them as stored, and the others show them as stored.
- **workers**: the workers connected here and the drains kept here, published in the store when they changed
  (`engine.directory`), so that every replica lists and drains them; a worker new here learns a drain kept for it
  elsewhere.

May use: the engine, the store's replica side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .engine import Engine, aware
from .store import Mail, ReplicaStore, StoreClosed, StoreError, StoreFenced

log = logging.getLogger(__name__)

# At most this many executions claimed in one claim.
_CLAIM_BATCH = 256
# Polls: how often each loop looks without being woken (with notifications on, and off).
_POLL_S = {True: 1.0, False: 0.2}
_CLAIM_POLL_S = 0.5
_SCHEDULES_POLL_S = {True: 5.0, False: 2.0}
_CLAIM_GAP_S = 0.01
# How often the workers connected here are looked at, and published when they changed.
_WORKERS_POLL_S = 0.5
# A claim no answer came for in this long (its holder died, and its adopter refused it to nobody) no longer
# counts against the free slots.
_CLAIM_ANSWER_S = 30.0
_RETRY_S = 0.5


class ReplicaLoops:
    """The loops of one replica; `start` once the engine runs, `close` before it stops. (What the engine itself does
    for replicas is its room `engine._replicas`.)"""

    def __init__(self, *, engine: Engine, store: ReplicaStore, lease_s: float, notify: bool) -> None:
        self._engine = engine
        self._store = store
        self._lease_s = lease_s
        self._notify = notify
        self._poll_s = _POLL_S[notify]
        self._mail = asyncio.Event()
        self._claim = asyncio.Event()
        self._feed = asyncio.Event()
        self._schedules = asyncio.Event()
        self._followed: set[str] = set()
        self._feed_all = False
        # Claimed executions not answered yet, with when they were claimed.
        self._claimed: dict[str, float] = {}
        self._backlog = False  # the last claim found work elsewhere
        # Held from a claim until what it claimed is counted: its answer (mail) may come before the claim returns.
        self._claiming = asyncio.Lock()
        # Held while the leader adopts a replica, from the store's move of its executions until they are in the
        # engine: mail about them (a hand over asked by a replica that read their new holder) waits for them.
        self._adopting = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.leading = False

    async def start(self) -> None:
        if self._notify:
            await self._store.listen(self._notice)
        self._engine.replicas.on_idle = self._idle
        self._spawn("mail", self._mail_loop)
        self._spawn("claims", self._claim_loop)
        self._spawn("feed", self._feed_loop)
        self._spawn("leader", self._lead_loop)
        self._spawn("schedules", self._schedules_loop)
        self._spawn("workers", self._workers_loop)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._tasks.append(asyncio.create_task(self._guarded(name, loop), name=f"taskwire-replica-{name}"))

    async def _guarded(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Runs `loop` until the store closes or fences this replica (the server stops then); any other
        error is logged once per failure and the loop starts again after a moment."""
        while True:
            try:
                await loop()
            except (StoreClosed, StoreFenced):
                return
            except StoreError as error:
                log.warning("replica %s: %s; retrying", name, error)
            except Exception:
                log.exception("replica %s failed; retrying", name)
            await asyncio.sleep(_RETRY_S)

    def _idle(self) -> None:
        """A local worker has free slots after a dispatch pass: worth a claim only while other replicas have a
        backlog (the last claim found some); otherwise the notices and the poll are enough."""
        if self._backlog:
            self._claim.set()

    def _notice(self, kind: str, payload: str) -> None:
        if kind == "mail":
            self._mail.set()
        elif kind == "ready":
            self._claim.set()
        elif kind == "history":
            if payload == "*":
                self._feed_all = True
            else:
                self._followed.update(payload.split(","))
            self._feed.set()
        elif kind == "schedules":
            self._schedules.set()
        else:  # "lost": notifications may have been missed meanwhile; look at everything
            self._feed_all = True
            for event in (self._mail, self._claim, self._feed, self._schedules):
                event.set()

    @staticmethod
    async def _woken(event: asyncio.Event, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
        event.clear()

    # ---- mail

    async def _mail_loop(self) -> None:
        while True:
            await self._woken(self._mail, self._poll_s)
            while mail := await self._store.take_mail():
                applied: list[int] = []
                try:
                    for one in mail:
                        async with self._adopting:
                            await self._apply(one)
                        applied.append(one.id)
                except StoreError:  # the mail the store failed on stays, applied again with the next pass
                    if applied:
                        await self._store.done_mail(applied)
                    raise
                await self._store.done_mail(applied)

    async def _apply(self, mail: Mail) -> None:
        body = mail.body
        try:
            if mail.kind == "cancel":
                await self._engine.cancel(str(body["execution_id"]), str(body.get("reason", "")))
            elif mail.kind == "claim":
                await self._engine.replicas.give_away([str(one) for one in body["executions"]], str(body["by"]))
            elif mail.kind == "hand_over":
                hello_at = body.get("hello_at")
                await self._engine.replicas.hand_over(
                    [str(one) for one in body["executions"]],
                    str(body["by"]),
                    instance_id=str(body.get("instance", "")),
                    identity=str(body.get("identity", "")),
                    hello_at=None if hello_at is None else aware(hello_at, "hello_at"),
                )
            elif mail.kind == "drain":
                self._engine.directory.drain_here(body)
            elif mail.kind == "drain_done":
                self._engine.directory.drain_done_here(body)
            elif mail.kind == "given":
                ids = [str(one) for one in body["executions"]]
                await self._answered(ids)
                adopted = self._engine.replicas.adopt(await self._store.load(ids))
                self._engine.replicas.answered(ids)
                log.debug("took %d executions given by another replica", adopted)
            elif mail.kind == "refused":  # they started meanwhile: the next claim comes with the next wakeup
                ids = [str(one) for one in body["executions"]]
                await self._answered(ids)
                self._engine.replicas.answered(ids)
            else:
                log.warning("replica mail of an unknown kind %r ignored", mail.kind)
        except StoreError:  # the database failed (not the mail): applied again later, never dropped
            raise
        except Exception as error:  # one mail that cannot be applied must not hold up the others
            log.warning("replica mail %s %s not applied: %s", mail.kind, body, error)

    # ---- claims

    async def _answered(self, ids: list[str]) -> None:
        async with self._claiming:  # counted first, if its claim has not returned yet
            for execution_id in ids:
                self._claimed.pop(execution_id, None)

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._woken(self._claim, _CLAIM_POLL_S)
            now = loop.time()
            for execution_id, since in list(self._claimed.items()):
                if now - since > _CLAIM_ANSWER_S:
                    del self._claimed[execution_id]
            # Per handler, at most its workers' free slots; in all, at most the free slots of the workers with
            # the most (a worker's slots count for each of its handlers), less the claims not answered yet.
            idle = self._engine.replicas.idle_handlers()
            budget = min(max(idle.values(), default=0), _CLAIM_BATCH) - len(self._claimed)
            found = False
            for handler, slots in sorted(idle.items(), key=lambda item: (-item[1], item[0])):
                if budget <= 0:
                    break
                async with self._claiming:
                    claimed = await self._store.claim([handler], min(slots, budget))
                    for execution_id in claimed:
                        self._claimed[execution_id] = now
                budget -= len(claimed)
                found = found or bool(claimed)
            self._backlog = found
            await asyncio.sleep(_CLAIM_GAP_S)  # notices that came meanwhile make one claim, not one each

    # ---- feed

    async def _feed_loop(self) -> None:
        while True:
            await self._woken(self._feed, self._poll_s)
            if self._feed_all or not self._notify:
                self._feed_all = False
                self._followed.clear()
                await self._engine.replicas.follow_remote(None)
            elif self._followed:
                followed, self._followed = self._followed, set()
                await self._engine.replicas.follow_remote(sorted(followed))
            else:
                await self._engine.replicas.follow_remote(None)  # the poll: a notification may have been lost

    # ---- schedules

    async def _schedules_loop(self) -> None:
        while True:
            await self._woken(self._schedules, _SCHEDULES_POLL_S[self._notify])
            await self._engine.schedules.refresh()

    # ---- workers

    async def _workers_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._engine.directory.look(loop.time())
            await asyncio.sleep(_WORKERS_POLL_S)

    # ---- leader

    async def _lead_loop(self) -> None:
        while True:
            leading = await self._store.lead()
            if leading != self.leading:
                log.info("this replica %s the leader", "is now" if leading else "is no longer")
                self.leading = leading
            self._engine.replicas.leading = leading
            if leading:
                for name in await self._store.lapsed_replicas():
                    async with self._adopting:
                        state = await self._store.adopt(name)
                        if state is None:
                            continue
                        self._mail.set()  # its mail came too (a worker's hand over may wait for an answer)
                        count = self._engine.replicas.adopt(state)
                    log.warning("replica %s stopped renewing its lease: took over its %d executions", name, count)
            await asyncio.sleep(self._lease_s / 3)
