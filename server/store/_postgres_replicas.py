"""Active-active replicas on one PostgreSQL database: the `ReplicaStore` half of `PostgresStore`.

Every execution is held by one replica (`executions.holder`, its name), and each replica holds its own lease
row in `taskwire_replicas` (`_postgres_lease`, `LeaseRow.replica`); each write here runs in one transaction of the
replica's writing connection that first checks that row's epoch, as a commit does (`PostgresStore._fenced`), so a
replica another one adopted, or that a restart under its name took over, changes nothing more.

- Claims: a replica with idle slots marks *movable* executions of other live replicas as claimed by it
  (`FOR UPDATE SKIP LOCKED`: two claimers never get the same one) and mails each holder a `claim`; the holder
  `give`s (holder := claimer) or refuses them and mails the claimer `given` / `refused`. Movable (the engine's
  `is_movable`): unfinished, not closing (no cancel under way), a task run PENDING for one of the claimer's
  handlers, no task run RUNNING (nothing a worker of the holder runs moves) and none with a concurrency key or a
  rate limit (counted by the holder). The new holder recovers it as a restart does (timers armed again).
- Hand over: the replica a worker reconnected to finds the holders of its running attempts' executions
  (`holders_of_task_runs`) and mails each a `hand_over`; the holder answers with the same `give`.
- Mail: `taskwire_mail`, read oldest first and deleted once applied (at-least-once); `send` notifies the
  recipient's channel (`mail_channel`) in the same transaction, delivered at commit.
- Death: the leader (`lead`: the one row of `taskwire_leader`, a lease on the database's clock) lists the
  replicas whose lease lapsed or whose session ended (`lapsed_replicas`) and `adopt`s each: the dead row's
  epoch + 1 (its commits fenced from then on), its unfinished executions and its mail moved to the leader, the
  claims it made cleared.
- Workers: each replica publishes the workers connected to it and the drains it keeps for worker instances
  (`publish_workers`, one row of `taskwire_workers`); `workers_elsewhere` and `drains_elsewhere` read those of the
  other live replicas. An adopted replica's row goes.
- Notifications (with `notify`): commits announce `taskwire_history` (the ids of executions that got events, or
  `*` past 7,000 bytes), `taskwire_ready` (the handlers of task runs written PENDING) and `taskwire_schedules`
  (schedules written or deleted), debounced (`_postgres_announce`); `listen` keeps one connection LISTENing to
  those and the replica's mail channel, connecting again when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from ._postgres_announce import HISTORY_CHANNEL, READY_CHANNEL, SCHEDULES_CHANNEL
from ._postgres_lease import OwnerLease, lock_free, replica_lock_class
from ._postgres_queries import recover
from ._postgres_schema import TERMINAL_SQL
from ._postgres_text import MARK, from_db, jsonb_dumps, jsonb_loads, to_db
from ._protocol import Mail, RecoveredState, StoreClosed, StoreError

__all__ = ["ReplicaMethods", "mail_channel"]

_T = TypeVar("_T")
log = logging.getLogger("taskwire.server.store")

_RECONNECT_S: Final = 0.5
# What a listening connection that cannot be made, or was cut, raises.
_UNREACHABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
_PING_S: Final = 5.0  # how often the listening connection is checked (a cut connection announces nothing)

# A live replica: its lease current, not adopted.
_ALIVE: Final = "r.adopted_by = '' AND r.lease_until >= now()"
_CLAIM: Final = (
    "WITH picked AS (SELECT e.id, e.holder FROM executions AS e JOIN taskwire_replicas AS r ON r.name = e.holder "
    f"WHERE e.holder <> $1 AND e.claimed_by = '' AND e.state NOT IN {TERMINAL_SQL} AND e.closing IS NULL AND {_ALIVE} "
    "AND EXISTS (SELECT 1 FROM task_runs AS t WHERE t.execution_id = e.id AND t.state = 'PENDING' "
    "AND t.handler = ANY($2::text[])) "
    "AND NOT EXISTS (SELECT 1 FROM task_runs AS o WHERE o.execution_id = e.id AND (o.state = 'RUNNING' "
    "OR o.concurrency_key IS NOT NULL OR o.rate_limit IS NOT NULL)) "
    "ORDER BY e.seq LIMIT $3 FOR UPDATE OF e SKIP LOCKED) "
    "UPDATE executions AS x SET claimed_by = $1 FROM picked WHERE x.id = picked.id RETURNING x.id, picked.holder"
)
_LAPSED: Final = (
    "SELECT name, epoch, lease_until < now() AS lapsed FROM taskwire_replicas "
    "WHERE name <> $1 AND adopted_by = '' AND epoch > 0 ORDER BY name"
)
_SEND: Final = (
    "INSERT INTO taskwire_mail (recipient, kind, body) VALUES ($1, $2, $3::jsonb)",
    "SELECT pg_notify($1, $2)",
)
_PUBLISH_WORKERS: Final = (
    "INSERT INTO taskwire_workers (replica, workers, drains) VALUES ($1, $2::jsonb, $3::jsonb) "
    "ON CONFLICT (replica) DO UPDATE SET workers = excluded.workers, drains = excluded.drains, published_at = now()"
)
_ELSEWHERE: Final = (
    f"FROM taskwire_workers AS w JOIN taskwire_replicas AS r ON r.name = w.replica WHERE w.replica <> $1 AND {_ALIVE}"
)
_WORKERS: Final = f"SELECT w.replica, w.workers {_ELSEWHERE} ORDER BY w.replica"
_DRAINS: Final = f"SELECT w.replica, w.drains {_ELSEWHERE} AND w.drains <> '[]'::jsonb ORDER BY w.replica"
# Taken when lapsed (epoch + 1), renewed while held; `now()` is the database's clock.
_LEAD: Final = (
    "UPDATE taskwire_leader SET epoch = epoch + CASE WHEN holder = $1 THEN 0 ELSE 1 END, holder = $1, "
    "lease_until = now() + $2 * interval '1 microsecond' "
    "WHERE id = 1 AND (holder = $1 OR lease_until < now()) RETURNING epoch"
)


def mail_channel(name: str) -> str:
    """The channel a replica's mail is announced on: a short stable hash of its name (identifiers end at 63 bytes)."""
    return "taskwire_mail_" + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


async def _send(conn: Any, recipient: str, kind: str, body: dict[str, Any], *, notify: bool) -> None:
    await conn.execute(_SEND[0], recipient, kind, jsonb_dumps(body))
    if notify:
        await conn.execute(_SEND[1], mail_channel(recipient), kind)


class ReplicaMethods:
    """What `PostgresStore` adds as a replica (see the module). Every method raises StoreError outside replica mode."""

    replica: str
    lease: OwnerLease
    url: str
    _notify: bool
    _connect_timeout_s: float
    _listening: asyncio.Task[None] | None
    _broken: StoreError | None

    async def _read(self, read: Callable[..., Awaitable[_T]], *args: Any, snapshot: bool = True) -> _T:
        raise NotImplementedError

    async def _fenced(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        raise NotImplementedError

    def _check_open(self, what: str) -> None:
        raise NotImplementedError

    def _replica_name(self, what: str) -> str:
        if not self.replica:
            raise StoreError(f"cannot {what}: the store is not a replica (PostgresStore(..., replica=NAME))")
        return self.replica

    async def _recover_held(self) -> RecoveredState:
        """A replica's recovery: what it holds. Unfinished executions that no replica holds (written by a server
        without replicas, before the database was shared) are taken by the first replica that recovers."""
        me = self._replica_name("recover")

        async def take_unheld(conn: Any) -> str:
            return str(
                await conn.execute(
                    f"UPDATE executions SET holder = $1 WHERE holder = '' AND state NOT IN {TERMINAL_SQL}", me
                )
            )

        taken = int((await self._fenced(take_unheld)).split()[-1])
        if taken:
            log.info("replica %s took %d unfinished executions that no replica held", me, taken)
        return await self._read(recover, me)

    async def lapsed_replicas(self) -> list[str]:
        """The other replicas, not adopted yet, whose lease lapsed or whose session ended."""
        me = self._replica_name("list lapsed replicas")

        async def read(conn: Any) -> list[str]:
            return [
                str(row["name"])
                for row in await conn.fetch(_LAPSED, me)
                if row["lapsed"] or await lock_free(conn, replica_lock_class(row["name"]), int(row["epoch"]))
            ]

        return await self._read(read)

    async def adopt(self, dead: str) -> RecoveredState | None:
        """Take over a lapsed replica: fence it (epoch + 1, adopted_by := this replica), move its unfinished executions
        and its mail here, clear the claims it made; then what it held, as a recovery reads it. None when it is not
        adoptable any more (alive again, or adopted by another replica first)."""
        me = self._replica_name("adopt")
        if dead == me:
            raise ValueError(f"replica {me!r} cannot adopt itself")

        async def adopt(conn: Any) -> list[str] | None:
            # FOR UPDATE: waits for the dead replica's commit under way (its FOR KEY SHARE), as a takeover does.
            row = await conn.fetchrow(
                "SELECT epoch, lease_until < now() AS lapsed, adopted_by FROM taskwire_replicas "
                "WHERE name = $1 FOR UPDATE",
                dead,
            )
            if row is None or row["adopted_by"] or not row["epoch"]:
                return None
            if not row["lapsed"] and not await lock_free(conn, replica_lock_class(dead), int(row["epoch"])):
                return None
            await conn.execute(
                "UPDATE taskwire_replicas SET epoch = epoch + 1, holder = $2, adopted_by = $2, "
                "lease_until = '-infinity' WHERE name = $1",
                dead,
                me,
            )
            moved = await conn.fetch(
                f"UPDATE executions SET holder = $2, claimed_by = '' WHERE holder = $1 AND state NOT IN {TERMINAL_SQL} "
                "RETURNING id",
                dead,
                me,
            )
            await conn.execute("UPDATE taskwire_mail SET recipient = $2 WHERE recipient = $1", dead, me)
            await conn.execute("UPDATE executions SET claimed_by = '' WHERE claimed_by = $1", dead)
            await conn.execute("DELETE FROM taskwire_workers WHERE replica = $1", dead)
            return [row[0] for row in moved]

        moved = await self._fenced(adopt)
        if moved is None:
            return None
        log.info("replica %s adopted replica %s and its %d unfinished executions", me, dead, len(moved))
        while True:  # they are this replica's now: nothing else would read them back while it runs
            try:
                return await self._read(recover, me, moved)
            except StoreClosed:
                raise
            except StoreError as error:
                if self._broken is not None:
                    raise
                log.warning("reading the executions adopted from replica %s failed (%s); reading again", dead, error)
                await asyncio.sleep(_RECONNECT_S)

    async def claim(self, handlers: Sequence[str], limit: int) -> list[str]:
        """Claim up to `limit` movable executions of other live replicas with a task run of one of `handlers`, oldest
        first, and mail each holder a `claim`; the ids claimed."""
        me = self._replica_name("claim")
        if limit <= 0 or not handlers:
            return []

        async def claim(conn: Any) -> list[str]:
            rows = await conn.fetch(_CLAIM, me, [to_db(handler) for handler in handlers], limit)
            by_holder: dict[str, list[str]] = {}
            for execution_id, holder in rows:
                by_holder.setdefault(holder, []).append(from_db(execution_id))
            for holder, ids in by_holder.items():
                await _send(conn, holder, "claim", {"by": me, "executions": ids}, notify=self._notify)
            return [execution_id for ids in by_holder.values() for execution_id in ids]

        return await self._fenced(claim)

    async def give(self, given: Sequence[str], refused: Sequence[str], to: str) -> list[str]:
        """Answer `to`'s claim: move the `given` executions this replica still holds to `to` (when it is alive), clear
        the claim on the rest, mail `to` `given` and/or `refused`; the ids moved."""
        me = self._replica_name("give executions away")
        given_db = [to_db(i) for i in given]
        refused_db = [to_db(i) for i in refused]

        async def give(conn: Any) -> list[str]:
            alive = await conn.fetchval(
                f"SELECT {_ALIVE} FROM taskwire_replicas AS r WHERE r.name = $1 FOR KEY SHARE", to
            )  # an adoption of `to` (FOR UPDATE) waits for this transaction, or this one for it
            moved: list[str] = []
            if alive and given_db:
                rows = await conn.fetch(
                    "UPDATE executions SET holder = $2, claimed_by = '' WHERE id = ANY($1::text[]) AND holder = $3 "
                    "RETURNING id",
                    given_db,
                    to,
                    me,
                )
                moved = [row[0] for row in rows]
            kept = set(moved)
            rest = [i for i in dict.fromkeys((*given_db, *refused_db)) if i not in kept]
            if rest:
                await conn.execute(
                    "UPDATE executions SET claimed_by = '' WHERE id = ANY($1::text[]) AND holder = $2 "
                    "AND claimed_by = $3",
                    rest,
                    me,
                    to,
                )
            moved = [from_db(i) for i in moved]
            if moved:
                await _send(conn, to, "given", {"executions": moved}, notify=self._notify)
            if rest:
                await _send(conn, to, "refused", {"executions": [from_db(i) for i in rest]}, notify=self._notify)
            return moved

        return await self._fenced(give)

    async def load(self, execution_ids: Sequence[str]) -> RecoveredState:
        """The executions of `execution_ids` this replica holds, as a recovery reads them."""
        me = self._replica_name("load executions")
        return await self._read(recover, me, [to_db(i) for i in execution_ids])

    async def send(self, recipient: str, kind: str, body: dict[str, Any]) -> None:
        """Mail `recipient` (a replica's name); it is told on its channel when the mail is committed."""
        self._replica_name("send mail")

        async def send(conn: Any) -> None:
            await _send(conn, recipient, kind, body, notify=self._notify)

        await self._fenced(send)

    async def take_mail(self, limit: int = 500) -> list[Mail]:
        """This replica's mail, oldest first, at most `limit`; it stays until `done_mail`."""
        me = self._replica_name("take mail")

        async def read(conn: Any) -> list[Mail]:
            rows = await conn.fetch(
                "SELECT id, kind, body FROM taskwire_mail WHERE recipient = $1 ORDER BY id LIMIT $2", me, limit
            )
            return [Mail(int(row["id"]), str(row["kind"]), jsonb_loads(row["body"])) for row in rows]

        return [] if limit <= 0 else await self._read(read, snapshot=False)

    async def done_mail(self, ids: Sequence[int]) -> None:
        """Delete this replica's mail of `ids` (applied)."""
        me = self._replica_name("delete mail")
        if not ids:
            return

        async def done(conn: Any) -> None:
            await conn.execute(
                "DELETE FROM taskwire_mail WHERE id = ANY($1::bigint[]) AND recipient = $2", list(ids), me
            )

        await self._fenced(done)

    async def publish_workers(self, workers: Sequence[dict[str, Any]], drains: Sequence[dict[str, Any]]) -> None:
        """Store the workers connected to this replica now and the drains it keeps, replacing what it stored before."""
        me = self._replica_name("publish workers")

        async def publish(conn: Any) -> None:
            await conn.execute(_PUBLISH_WORKERS, me, jsonb_dumps(list(workers)), jsonb_dumps(list(drains)))

        await self._fenced(publish)

    async def workers_elsewhere(self) -> dict[str, list[dict[str, Any]]]:
        """Per other live replica, the workers it published last."""
        return await self._published("list workers", _WORKERS, "workers")

    async def drains_elsewhere(self) -> dict[str, list[dict[str, Any]]]:
        """Per other live replica that keeps any, the drains it published last."""
        return await self._published("read drains", _DRAINS, "drains")

    async def _published(self, doing: str, query: str, column: str) -> dict[str, list[dict[str, Any]]]:
        me = self._replica_name(doing)

        async def read(conn: Any) -> dict[str, list[dict[str, Any]]]:
            return {str(row["replica"]): jsonb_loads(row[column]) for row in await conn.fetch(query, me)}

        return await self._read(read)

    async def holder_of(self, execution_id: str) -> str:
        """The replica that holds the execution; '' when it is unknown or finished."""
        self._replica_name("look up a holder")

        async def read(conn: Any) -> str:
            holder = await conn.fetchval(
                f"SELECT holder FROM executions WHERE id = $1 AND state NOT IN {TERMINAL_SQL}", to_db(execution_id)
            )
            return "" if holder is None else str(holder)

        return await self._read(read, snapshot=False)

    async def holders_of_task_runs(self, task_run_ids: Sequence[str]) -> dict[str, str]:
        """Per unfinished execution with one of the task runs of `task_run_ids`: the replica that holds it."""
        self._replica_name("look up holders")

        async def read(conn: Any) -> dict[str, str]:
            rows = await conn.fetch(
                "SELECT DISTINCT e.id, e.holder FROM task_runs AS t JOIN executions AS e ON e.id = t.execution_id "
                f"WHERE t.id = ANY($1::text[]) AND e.state NOT IN {TERMINAL_SQL}",
                [to_db(i) for i in task_run_ids],
            )
            return {from_db(row[0]): str(row[1]) for row in rows}

        return await self._read(read)

    async def lead(self) -> bool:
        """Take the leader's row when its lease lapsed, or renew it when this replica holds it; whether it leads."""
        me = self._replica_name("lead")
        lease_us = round(self.lease.lease_s * 1_000_000)

        async def lead(conn: Any) -> bool:
            return await conn.fetchval(_LEAD, me, lease_us) is not None

        return await self._fenced(lead)

    async def _step_down(self, conn: Any) -> None:
        """A graceful stop: the leader's row lapses now, when this replica holds it."""
        await conn.execute(
            "UPDATE taskwire_leader SET lease_until = '-infinity' WHERE id = 1 AND holder = $1", self.replica
        )

    # ---- notifications

    async def listen(self, on_notice: Callable[[str, str], None]) -> None:
        """Start listening on a connection of its own (returns once it listens); `on_notice(kind, payload)`: "mail",
        "ready" (a handler), "history" (ids or "*"), "schedules" (some were written or deleted), and "lost" (the
        connection was lost and is back). Nothing without `notify`; a second call does nothing."""
        self._replica_name("listen")
        self._check_open("listen")
        if not self._notify or self._listening is not None:
            return
        try:
            conn, lost = await self._listening_connection(on_notice)
        except _UNREACHABLE as error:
            raise StoreError(f"cannot listen on the database: {error}") from error
        self._listening = asyncio.create_task(self._keep_listening(conn, lost, on_notice), name="taskwire-listen")

    async def _listening_connection(self, on_notice: Callable[[str, str], None]) -> tuple[Any, asyncio.Event]:
        kinds = {
            mail_channel(self.replica): "mail",
            READY_CHANNEL: "ready",
            HISTORY_CHANNEL: "history",
            SCHEDULES_CHANNEL: "schedules",
        }
        conn = await asyncpg.connect(
            self.url, timeout=self._connect_timeout_s, server_settings={"application_name": "taskwire-server"}
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())

        def heard(_conn: Any, _pid: int, channel: str, payload: str) -> None:
            kind = kinds[channel]
            if MARK in payload:  # a handler name or an id that held a NUL (see `Announcer`)
                if kind == "ready":
                    payload = from_db(payload)
                elif kind == "history":
                    payload = ",".join(from_db(part) for part in payload.split(","))
            on_notice(kind, payload)

        try:
            for channel in kinds:
                await conn.add_listener(channel, heard)
        except BaseException:
            conn.terminate()
            raise
        return conn, lost

    async def _keep_listening(self, conn: Any, lost: asyncio.Event, on_notice: Callable[[str, str], None]) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), _PING_S)
                if not lost.is_set():
                    try:  # a cut connection (no reset) is only seen by using it
                        await conn.execute("SELECT 1", timeout=_PING_S)
                        continue
                    except Exception as error:
                        log.warning("the listening connection to the database failed (%s)", error)
                conn.terminate()
                log.warning("lost the listening connection to the database; connecting again")
                while True:
                    await asyncio.sleep(_RECONNECT_S)
                    try:
                        conn, lost = await self._listening_connection(on_notice)
                        break
                    except _UNREACHABLE:
                        continue
                on_notice("lost", "")
        finally:
            conn.terminate()
