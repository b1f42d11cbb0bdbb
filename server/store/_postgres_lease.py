"""Who may write a PostgreSQL database: one server at a time, by a lease on the database's clock.

The row of `taskwire_owner` names the active server (`holder`), its `epoch` (one more at every
takeover) and `lease_until`, measured on the database's clock (`now()`), so the servers' clocks do not
matter. The holder renews the lease every third of its length. Taking the database is a compare-and-set
on that row, in one transaction with a session-level advisory lock keyed by the new epoch
(`OWNER_LOCK_CLASS`, epoch): while the holder's session lives, that lock is held, and when the session
ends (the server was killed) PostgreSQL lets it go at once.

So a server starting on a database finds one of three things:

- no holder, or a lapsed lease: it takes the database (epoch + 1);
- a holder whose session is gone (its epoch's lock is free: killed a moment ago): it takes it at once;
- a live holder with a current lease: without `standby` it refuses (`StoreInUse`, naming the holder);
  a standby waits until the lease lapses (the holder stopped renewing: dead, paused or cut off) and
  takes over then.

Fencing: every commit transaction of the holder first reads the row `FOR KEY SHARE` and checks its epoch
(`check_epoch`); a takeover (locking the row `FOR UPDATE`) waits for that transaction, and once a takeover
committed, the old holder's next commit sees the new epoch and rolls back (`StoreFenced`). A renewal (an update of
no key) does not conflict with a commit's lock: a slow commit never holds up its own server's renewal. A holder
that cannot renew before its own lease runs out (on its monotonic clock, measured from before the renewal was
sent) stops too, so two servers never act at once.

Active-active replicas (`_postgres_replicas`) each hold a row of their own the same way: `taskwire_replicas`, one row
per replica name (`LeaseRow.replica`), made when a replica of that name first starts, with its epochs' advisory locks
under a classid of its own (a hash of the name). A live replica of the same name is refused (`StoreInUse`); a
replica that another one adopted (`adopted_by`) is taken afresh. One `OwnerLease` serves both rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from ._lock import StoreInUse
from ._postgres_schema import MIGRATION_LOCK, MIGRATION_TIMEOUT_S, NO_STATEMENT_TIMEOUT
from ._protocol import StoreError, StoreFenced

log = logging.getLogger("taskwire.server.store")

# The classid of the per-epoch advisory lock of `taskwire_owner` ("twow" in ASCII); the objid is the epoch (mod 2^31).
# A replica's row has a classid of its own, from its name (`LeaseRow.replica`).
OWNER_LOCK_CLASS: Final = 0x74776F77
# Held by every takeover's transaction (of the owner row or a replica's row) while it checks that no server of the
# other kind lives on the database ("twkd"): a server without replicas and replicas never share one.
KIND_LOCK: Final = 0x74776B64


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """Which row a lease is: the one row of `taskwire_owner`, or a replica's row of `taskwire_replicas`.

    Every statement names the row by its key as `$1`; `lock_class` is the classid of its epochs' advisory locks."""

    table: str
    key_column: str
    key: int | str
    lock_class: int
    what: str  # what the holder holds, for messages
    advice: str  # how to start a server when a live one holds the row
    take_fresh: str = ""  # what a takeover also sets

    @classmethod
    def owner(cls) -> LeaseRow:
        return cls(
            "taskwire_owner",
            "id",
            1,
            OWNER_LOCK_CLASS,
            "the database",
            "stop it first, or start this one with --standby",
        )

    @classmethod
    def replica(cls, name: str) -> LeaseRow:
        return cls(
            "taskwire_replicas",
            "name",
            name,
            replica_lock_class(name),
            f"replica {name!r} of the database",
            "stop it first, or start this one with another --replica name",
            take_fresh=", adopted_by = ''",  # a replica another one adopted is started afresh
        )


def replica_lock_class(name: str) -> int:
    """The classid of a replica's epoch locks: a stable 31-bit hash of its name."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


_OWNER_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS taskwire_owner ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, epoch BIGINT NOT NULL, "
    "lease_until TIMESTAMPTZ NOT NULL)",
    "INSERT INTO taskwire_owner (id, holder, epoch, lease_until) VALUES (1, '', 0, '-infinity') "
    "ON CONFLICT (id) DO NOTHING",
)
# Each replica's row (`holder`: the process that holds the name; `adopted_by`: the replica that took its executions
# over when it died). Made, as the owner row, before the migration: only a replica that holds its row migrates.
_REPLICAS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS taskwire_replicas ("
    "name TEXT PRIMARY KEY, holder TEXT NOT NULL DEFAULT '', epoch BIGINT NOT NULL, "
    "lease_until TIMESTAMPTZ NOT NULL, adopted_by TEXT NOT NULL DEFAULT '')",
)


def _statements(row: LeaseRow) -> dict[str, str]:
    """The lease's statements on `row` (its key is always `$1`)."""
    where = f"FROM {row.table} WHERE {row.key_column} = $1"
    update = f"UPDATE {row.table} SET"
    match = f"WHERE {row.key_column} = $1 AND epoch ="
    return {
        "read": f"SELECT holder, epoch, lease_until, lease_until < now() AS lapsed {where}",
        "lock": f"SELECT 1 {where} FOR UPDATE",  # conflicts with a commit's FOR KEY SHARE
        # The new lease runs from when the row is updated (`clock_timestamp()`; `_take` first waits for the row), not
        # from when the transaction began (`now()`): after waiting on the holder's commit under way (up to a lease, a
        # paused holder's) it would have lapsed already, and a third server would take the database at once.
        "take": f"{update} epoch = epoch + 1, holder = $2, lease_until = clock_timestamp() + $3 * interval "
        f"'1 microsecond'{row.take_fresh} {match} $4 AND (lease_until < now() OR $5) RETURNING epoch",
        "check": f"SELECT holder, epoch {where} FOR KEY SHARE",
        "renew": f"{update} lease_until = now() + $2 * interval '1 microsecond' {match} $3 RETURNING epoch",
        "release": f"{update} lease_until = '-infinity' {match} $2",
    }


def default_holder() -> str:
    """How a server names itself in the row: its host and process id."""
    return f"{socket.gethostname()}/{os.getpid()}"


def _objid(epoch: int) -> int:
    return epoch % 2**31


@dataclass(frozen=True, slots=True)
class _Row:
    holder: str
    epoch: int
    lease_until: Any
    lapsed: bool


async def create_lease_row(conn: Any, row: LeaseRow) -> None:
    """Make the lease's table and row if the database has none (under the migration lock: servers may start
    together)."""
    statements: list[tuple[str, tuple[Any, ...]]]
    if row.table == "taskwire_owner":
        statements = [(sql, ()) for sql in _OWNER_TABLE]
    else:
        insert = "INSERT INTO taskwire_replicas (name, epoch, lease_until) VALUES ($1, 0, '-infinity') "
        statements = [(sql, ()) for sql in _REPLICAS_TABLE] + [(insert + "ON CONFLICT DO NOTHING", (row.key,))]
    async with conn.transaction():
        await conn.execute(NO_STATEMENT_TIMEOUT)  # the lock waits for a migration under way, which may be long
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT_S)
        for statement, args in statements:
            await conn.execute(statement, *args)


async def lock_free(conn: Any, lock_class: int, epoch: int) -> bool:
    """Whether the session that held `epoch` of a lease (classid `lock_class`) has ended: its advisory lock is free."""
    if epoch == 0:
        return True
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", lock_class, _objid(epoch)):
        return False
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", lock_class, _objid(epoch))
    return True


class OwnerLease:
    """This server's hold on its row (the database's owner row, or its replica's row): `take` it (or wait for it),
    `check_epoch` in every commit, `renew`."""

    def __init__(self, *, holder: str, lease_s: float, database: str, row: LeaseRow | None = None) -> None:
        if lease_s <= 0:
            raise ValueError(f"the store lease must be positive, got {lease_s}")
        self.holder = holder
        self.lease_s = lease_s
        self.epoch = 0
        self.row = row or LeaseRow.owner()
        self._sql = _statements(self.row)
        self._database = database
        # When this server's lease runs out on its own monotonic clock, at the latest.
        self.deadline = 0.0

    @property
    def _lease_us(self) -> int:
        return round(self.lease_s * 1_000_000)

    async def _read(self, conn: Any) -> _Row:
        row = await conn.fetchrow(self._sql["read"], self.row.key)
        return _Row(str(row["holder"]), int(row["epoch"]), row["lease_until"], bool(row["lapsed"]))

    def _fenced(self, holder: str, epoch: int) -> StoreFenced:
        return StoreFenced(holder=holder, epoch=epoch, mine=self.epoch, what=self.row.what)

    async def take(self, conn: Any, *, standby: bool, refuse_after_s: float) -> None:
        """Take the row on `conn` (the session that then commits). A live holder with a current lease is
        waited for: up to `refuse_after_s` (StoreInUse after), or as a standby until the lease lapses."""
        loop = asyncio.get_running_loop()
        refuse_at = loop.time() + refuse_after_s
        told = False
        while True:
            row = await self._read(conn)
            holder_gone = not row.lapsed and await lock_free(conn, self.row.lock_class, row.epoch)
            if row.lapsed or holder_gone:
                try:
                    taken = await self._take(conn, row.epoch, holder_gone=holder_gone)
                except (asyncpg.QueryCanceledError, TimeoutError):
                    # The holder's commit under way kept the row longer than a statement may wait (the database
                    # ends a transaction idle for a lease, which may be longer): look again.
                    continue
                if taken:
                    if row.holder:
                        log.info(
                            "took over %s %s from %s (epoch %d)", self.row.what, self._database, row.holder, row.epoch
                        )
                    return
                continue  # another server took it first: look again
            if not standby and loop.time() >= refuse_at:
                raise StoreInUse(
                    f"another taskwire server uses {self.row.what} {self._database}: {row.holder} (epoch {row.epoch}, "
                    f"lease until {row.lease_until:%Y-%m-%d %H:%M:%S%z}); {self.row.advice}"
                )
            if standby and not told:
                told = True
                log.warning(
                    "standby: the database %s is held by %s (epoch %d); waiting to take over when its lease lapses",
                    self._database,
                    row.holder,
                    row.epoch,
                )
            # Polled: a lease lapses by the passing of time, which nothing announces.
            await asyncio.sleep(min(1.0, max(0.05, self.lease_s / 10)) if standby else 0.05)

    async def _take(self, conn: Any, seen: int, *, holder_gone: bool) -> bool:
        """The compare-and-set, and the new epoch's lock taken in the same transaction (no one sees the new
        epoch before its lock is held). The row is locked first: a commit of the holder under way is waited for here,
        and the lease is measured from after it."""
        async with conn.transaction():
            await conn.execute(self._sql["lock"], self.row.key)
            sent = asyncio.get_running_loop().time()
            epoch = await conn.fetchval(self._sql["take"], self.row.key, self.holder, self._lease_us, seen, holder_gone)
            if epoch is None:
                return False
            await self._refuse_the_other_kind(conn)
            await conn.execute("SELECT pg_advisory_lock($1, $2)", self.row.lock_class, _objid(epoch))
        self.epoch = int(epoch)
        self.deadline = sent + self.lease_s
        return True

    async def _refuse_the_other_kind(self, conn: Any) -> None:
        """Inside the takeover: StoreInUse (the takeover rolled back) while a server of the other kind lives on the
        database (its session holds its epoch's lock): replicas for a server without them, and the reverse. Each
        would run the other's executions too."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KIND_LOCK)
        if self.row.table == "taskwire_owner":
            if await conn.fetchval("SELECT to_regclass('taskwire_replicas')") is None:
                return
            replicas = await conn.fetch(
                "SELECT name, holder, epoch FROM taskwire_replicas WHERE adopted_by = '' AND epoch > 0 ORDER BY name"
            )
            for row in replicas:
                if not await lock_free(conn, replica_lock_class(row["name"]), int(row["epoch"])):
                    raise StoreInUse(
                        f"replica {row['name']!r} ({row['holder']}) uses the database {self._database}: a server "
                        "without --replica cannot share it with replicas; stop them first, or start this one with "
                        "--replica NAME"
                    )
            return
        if await conn.fetchval("SELECT to_regclass('taskwire_owner')") is None:
            return
        owner = await conn.fetchrow("SELECT holder, epoch FROM taskwire_owner WHERE id = 1")
        if owner is not None and not await lock_free(conn, OWNER_LOCK_CLASS, int(owner["epoch"])):
            raise StoreInUse(
                f"a taskwire server without --replica uses the database {self._database}: {owner['holder']}; "
                "replicas cannot share it with that server: stop it first"
            )

    async def check_epoch(self, conn: Any) -> None:
        """Inside a commit transaction: StoreFenced unless this server still holds the row. The row stays
        locked (FOR KEY SHARE: against a takeover's FOR UPDATE, not a renewal) to the end of the transaction, so no
        takeover commits in between. (Outside one: a look.)"""
        row = await conn.fetchrow(self._sql["check"], self.row.key)
        if int(row["epoch"]) != self.epoch:
            raise self._fenced(str(row["holder"]), int(row["epoch"]))

    async def renew(self, conn: Any) -> None:
        """Extend the lease by its length from the database's now; StoreFenced when another server holds it."""
        sent = asyncio.get_running_loop().time()
        if await conn.fetchval(self._sql["renew"], self.row.key, self._lease_us, self.epoch) is None:
            row = await self._read(conn)
            raise self._fenced(row.holder, row.epoch)
        self.deadline = sent + self.lease_s

    async def release(self, conn: Any) -> None:
        """Let the lease lapse now (a graceful stop): a standby takes over at once."""
        await conn.execute(self._sql["release"], self.row.key, self.epoch)


async def keep_renewed(lease: OwnerLease, pool: Any, on_lost: Any) -> None:
    """Renew `lease` every third of its length through `pool`; on a takeover, or when the lease ran out before a
    renewal got through, call `on_lost(error)` once and return.

    Every try is timed on the lease's end (`lease.deadline`): the next one comes a third of a lease after the last
    renewal was sent (at once when that renewal was slow), a try after a failed one by the lease's end, and no try
    runs past it. So a server that cannot renew is told as its lease ends, before a standby may take over, not up
    to a third of a lease after."""
    loop = asyncio.get_running_loop()
    failed = False
    while True:
        if failed:
            wait_s = min(lease.lease_s / 3, lease.deadline - loop.time())
        else:
            wait_s = lease.deadline - 2 * lease.lease_s / 3 - loop.time()
        await asyncio.sleep(max(0.0, wait_s))
        left_s = lease.deadline - loop.time()
        try:
            # A server that was paused past its lease (nothing failed, nothing left) still asks, a third of a lease
            # long, to learn who holds the database now.
            async with asyncio.timeout(left_s if failed or left_s > 0 else lease.lease_s / 3):
                async with pool.acquire() as conn:
                    await lease.renew(conn)
        except StoreFenced as error:
            on_lost(error)
            return
        except Exception as error:  # the database unreachable, slow, or the connection lost
            if loop.time() >= lease.deadline:
                why = str(error) or type(error).__name__
                lost = StoreError(
                    f"could not renew the lease on the database before it ran out ({why}); "
                    "stopping so that a standby can take over"
                )
                on_lost(lost)
                return
            log.warning("renewing the lease on the database failed (%s); retrying", error)
            failed = True
        else:
            failed = False
