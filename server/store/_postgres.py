"""`PostgresStore`: the `Store` on a PostgreSQL database, through asyncpg.

One server writes a database at a time, by a lease in the database (`_postgres_lease`): `open()` takes
it on its own connection (refusing when a live server holds it, or, as a `standby`, waiting until that
server's lease lapses), renews it in the background, and checks its epoch inside every commit, so a
server that another one took over from changes nothing more (`StoreFenced`). The same connection
migrates the schema (`_postgres_schema.migrate`, safe with several servers starting together) and then
commits every group: one transaction per group, one statement per table (rows travel as arrays through
`unnest`), committed with PostgreSQL's own durability (`synchronous_commit` as the server has it;
`on` by default: flushed to the WAL before `commit` returns). A batch the database refuses (a
constraint or a bad value) fails alone: the group is retried one batch per transaction, exactly as
the SQLite writer does. A lost connection fails the commit and every later one with StoreError (the
server stops: it never serves state it cannot keep); so does a lost lease, through `on_lost`.

Reads run on a small pool of connections, each read in one read-only REPEATABLE READ transaction (a
consistent snapshot). The SQL of reads is in `_postgres_queries`; rows are `_sqlite_codec`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType, TracebackType
from typing import Any, ClassVar, Final, TypeVar

import asyncpg

from . import _postgres_queries as queries
from ._postgres_announce import Announcer
from ._postgres_lease import LeaseRow, OwnerLease, create_lease_row, default_holder, keep_renewed
from ._postgres_replicas import ReplicaMethods
from ._postgres_schema import analyze_if_never_analyzed, migrate
from ._postgres_writes import apply_rows, taken_keys
from ._protocol import (
    DuplicateIdempotencyKey,
    RecoveredState,
    StoreClosed,
    StoreError,
    StoreFenced,
    WriteBatch,
)
from ._query_reads import QueryReads
from ._sqlite_codec import Rows
from ._url import redact

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)

# What a lost or refused connection raises: a standby waits through these (the database restarting).
_CONNECTION_LOST = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    # A connection the database ended between two statements (a FATAL while idle, as when it shuts down): the
    # next statement finds the protocol still taking in that error ("another operation is in progress").
    asyncpg.InternalClientError,
)
_RECONNECT_S = 0.5
# SQLSTATE classes of a refusal that concerns the batch, not the database: data exceptions and constraints.
_REFUSAL_CLASSES: Final = ("22", "23")
_APPLICATION_NAME: Final = "taskwire-server"  # what pg_stat_activity shows of the store's sessions


def _is_refusal(error: Exception) -> bool:
    if isinstance(error, StoreFenced):
        return False
    if isinstance(error, StoreError | ValueError):
        return True
    return isinstance(error, asyncpg.PostgresError) and str(getattr(error, "sqlstate", ""))[:2] in _REFUSAL_CLASSES


class PostgresStore(ReplicaMethods, QueryReads):
    """The `Store` on one PostgreSQL database. Create it, `await open()` (or `async with`), `await close()`.

    `url` is a libpq URL (`postgresql://user:password@host:port/database?...`). Errors as `SqliteStore`'s:
    StoreClosed outside open..close, StoreInUse when another server holds the database, per batch
    DuplicateIdempotencyKey / StoreError / ValueError, and StoreError for all once the connection is lost.

    With `replica`, it is one of several active replicas on the database (`ReplicaStore`, `_postgres_replicas`).
    """

    _queries: ClassVar[ModuleType] = queries

    def __init__(
        self,
        url: str,
        *,
        readers: int = 4,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
        lock_wait_s: float = 2.0,
        lease_s: float = 10.0,
        standby: bool = False,
        holder: str | None = None,
        replica: str | None = None,
        notify: bool = True,
    ) -> None:
        """`readers`: size of the read pool; `command_timeout_s`: longest a statement may take before the store
        counts the database as lost; `lock_wait_s`: how long `open()` waits for another server's session to end
        (a server killed a moment ago) before it refuses; `lease_s`: the length of the lease on the database
        (a standby takes over at most this long after the holder stopped renewing it); `standby`: `open()`
        waits for a held database instead of refusing; `holder`: how this server is named to others; `replica`: this
        server's name as one of several active replicas (its lease is its own row, not the database's); `notify`
        (replicas): send and listen to PostgreSQL notifications (off: others learn by polling)."""
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        if replica and standby:
            raise ValueError("a replica cannot be a standby: every replica is active")
        self.replica = replica or ""
        self._notify = notify
        self._listening: asyncio.Task[None] | None = None
        # A replica's commits announced to the others (with `notify`), by a task of its own.
        self._announcer: Announcer | None = None
        self._announcing: asyncio.Task[None] | None = None
        self.url = url
        self._readers = readers
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._lock_wait_s = lock_wait_s
        self._state = "new"  # new → open → closed
        self._conn: Any = None  # the owner and writer connection
        self._pool: Any = None
        self._lease_pool: Any = None  # one connection of its own: reads queued in `_pool` never delay a renewal
        self._commit_lock = asyncio.Lock()
        self._broken: StoreError | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._standby = standby
        row = LeaseRow.replica(self.replica) if self.replica else LeaseRow.owner()
        self.lease = OwnerLease(holder=holder or default_holder(), lease_s=lease_s, database=redact(url), row=row)
        self._renewing: asyncio.Task[None] | None = None
        # Called once when the lease is lost between commits (taken over, or not renewed in time).
        self.on_lost: Callable[[StoreError], None] = lambda error: None

    def __str__(self) -> str:
        return redact(self.url)

    # ---- lifecycle

    async def open(self) -> None:
        """Connect, take the database for this server, migrate it, open the read pool. A second call does nothing."""
        async with self._opening:
            if self._state == "open":
                return
            if self._state != "new":
                raise StoreClosed(f"the store at {self} is closed; make a new PostgresStore to open it again")
            try:
                await self._connect()
            except BaseException:
                self._state = "closed"
                await self._release()
                raise
            self._state = "open"

    async def _connect(self) -> None:
        try:
            options = {
                "timeout": self._connect_timeout_s,
                "command_timeout": self._command_timeout_s,
                # JIT compiles plans whose estimated cost is high, which a lookup's can be while the statistics
                # are young: 200 ms of compiling for a 3 ms read. Every statement here is short.
                "server_settings": {"application_name": _APPLICATION_NAME, "jit": "off"},
            }
            # A paused server's open transaction (its commit's lock on the lease row) cannot hold up the
            # server taking over for longer than a lease, nor can a statement run on unseen.
            lease_ms = str(max(1, round(self.lease.lease_s * 1000)))
            writer_settings = {
                **options["server_settings"],  # type: ignore[dict-item]
                "idle_in_transaction_session_timeout": lease_ms,
                "statement_timeout": str(round(self._command_timeout_s * 1000)),
            }
            self._conn = await self._take_database({**options, "server_settings": writer_settings})
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self._readers, **options)
            self._lease_pool = await asyncpg.create_pool(self.url, min_size=1, max_size=1, **options)
            # Renewed from now on, through a long migration too.
            renewing = keep_renewed(self.lease, self._lease_pool, self._lose)
            self._renewing = asyncio.create_task(renewing, name="taskwire-lease")
            if self.replica and self._notify:
                self._announcer = Announcer()
                self._announcing = asyncio.create_task(self._announcer.run(self._pool), name="taskwire-announce")
            await migrate(self._conn, before_commit=self.lease.check_epoch)  # only the holder migrates
            await analyze_if_never_analyzed(self._conn)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as error:
            why = str(error) or type(error).__name__  # a timeout says nothing of itself
            raise StoreError(f"cannot open the database {self}: {why}") from error

    async def _take_database(self, options: dict[str, Any]) -> Any:
        """The writing connection, once it holds the database. A standby that loses its connection while it
        waits (the database restarted, a network cut) connects again and waits on: a database that comes back
        without its holder is taken at once. Before the first connection, and for a server that is not a
        standby, an error is the caller's."""
        lost = False
        while True:
            try:
                conn = await asyncpg.connect(self.url, **options)
            except _CONNECTION_LOST:
                if not lost:
                    raise
                await asyncio.sleep(_RECONNECT_S)  # not back yet
                continue
            try:
                await create_lease_row(conn, self.lease.row)
                # A killed server's session ends as soon as PostgreSQL sees its socket close: wait that long for it.
                await self.lease.take(conn, standby=self._standby, refuse_after_s=self._lock_wait_s)
                return conn
            except _CONNECTION_LOST as error:
                conn.terminate()
                if not self._standby:
                    raise
                why = str(error) or type(error).__name__
                log.warning("standby: lost the database %s while waiting (%s); connecting again", self, why)
                lost = True
                await asyncio.sleep(_RECONNECT_S)
            except BaseException:
                conn.terminate()  # refused (StoreInUse), or the wait cancelled: nothing was taken
                raise

    def _lose(self, error: StoreError) -> None:
        """The lease is gone: no commit may pass any more, and the server is told. The writing session is cut at
        once: a commit under way (one a pause left hanging) fails now instead of holding up the stop."""
        if self._broken is None:
            self._broken = error
        if self._conn is not None:
            self._conn.terminate()
        self.on_lost(error)

    async def _release(self) -> None:
        if self._announcing is not None:
            self._announcing.cancel()
            await asyncio.gather(self._announcing, return_exceptions=True)
            self._announcing = None
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
            self._listening = None
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
            self._renewing = None
        if self._conn is not None and self._broken is None and self.lease.epoch:
            with contextlib.suppress(Exception):
                if self.replica:
                    await self._step_down(self._conn)
                await self.lease.release(self._conn)
        for pool in (self._pool, self._lease_pool):
            if pool is not None:
                with contextlib.suppress(Exception):
                    await pool.close()
        self._pool = self._lease_pool = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()  # ends the session: PostgreSQL lets the epoch's lock go
            self._conn = None

    async def close(self) -> None:
        """Finish the commit under way and close every connection. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        async with self._commit_lock:
            await self._release()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            state = "closed" if self._state == "closed" else "not open yet (await open() first)"
            raise StoreClosed(f"cannot {what}: the store at {self} is {state}")

    # ---- writes

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        """Apply the batches in one transaction; per batch None (committed) or why it alone was refused."""
        self._check_open("write")
        outcomes: list[Exception | None] = [None] * len(batches)
        encoded: list[Rows] = []
        places: list[int] = []
        for place, batch in enumerate(batches):
            if not batch:
                continue
            try:
                encoded.append(Rows.of(batch))
            except Exception as error:
                outcomes[place] = error
            else:
                places.append(place)
        if encoded:
            for place, refusal in zip(
                places, await self._serialized(lambda: self._commit_isolating(encoded)), strict=True
            ):
                outcomes[place] = refusal
        return outcomes

    async def _serialized(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """Run `work` on the writing connection alone, in call order. Shielded: a caller that stops waiting must not
        cut a transaction short."""
        self._check_open("write")
        await self._commit_lock.acquire()
        return await asyncio.shield(asyncio.ensure_future(self._alone(work)))

    async def _alone(self, work: Callable[[], Awaitable[_T]]) -> _T:
        try:
            if self._broken is not None:
                raise self._broken
            if self._state != "open":
                raise StoreClosed(f"cannot write: the store at {self} is closed")
            return await work()
        finally:
            self._commit_lock.release()

    async def _commit_isolating(self, group: list[Rows]) -> list[Exception | None]:
        try:
            return await self._commit_again_if_raced(group)
        except Exception as error:
            if not _is_refusal(error):
                raise self._break(await self._fenced_or(error)) from error
            if len(group) == 1:
                return [_translate(error)]
        outcomes: list[Exception | None] = []  # the group failed as a whole: each batch alone
        for rows in group:
            try:
                outcomes.extend(await self._commit_again_if_raced([rows]))
            except Exception as error:
                if not _is_refusal(error):
                    raise self._break(await self._fenced_or(error)) from error
                outcomes.append(_translate(error))
        return outcomes

    async def _fenced(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run `work(connection)` in one transaction of the writing connection that holds this server's lease row
        (as a commit does): StoreFenced, the store broken and `on_lost` called, once another server took it."""

        async def fenced() -> _T:
            try:
                async with self._conn.transaction():
                    await self.lease.check_epoch(self._conn)
                    return await work(self._conn)
            except Exception as error:
                if _is_refusal(error):
                    raise _translate(error) from error
                broken = self._break(await self._fenced_or(error))
                if not isinstance(broken, StoreFenced):  # (a fenced one was told already)
                    # A replica that can write nothing more (its lease renewed on another connection) would hold its
                    # executions from the others: it stops, as after a failed commit.
                    self.on_lost(broken)
                raise broken from error

        return await self._serialized(fenced)

    async def _fenced_or(self, error: Exception) -> Exception:
        """StoreFenced when the commit failed because another server took over (a paused server's session ended by
        the database, its transaction cut short): so it says who holds the database. Otherwise `error`."""
        if isinstance(error, StoreFenced) or self._lease_pool is None:
            return error
        try:
            async with asyncio.timeout(self.lease.lease_s / 3), self._lease_pool.acquire() as conn:
                await self.lease.check_epoch(conn)
        except StoreFenced as fenced:
            return fenced
        except Exception:  # the database unreachable too: the commit's own error says it
            return error
        return error

    def _break(self, error: Exception) -> StoreError:
        if isinstance(error, StoreFenced):
            self._lose(error)
        if self._broken is not None:
            return self._broken
        if isinstance(error, StoreError):
            self._broken = error
        else:
            self._broken = StoreError(f"the database {self} failed: {error}")
            self._broken.__cause__ = error
        return self._broken

    async def _commit_again_if_raced(self, group: Sequence[Rows]) -> list[Exception | None]:
        """`_commit`, once more when another replica's transaction committed a key this one inserts while it ran
        (the unique index, not the check, saw it): the second time the check refuses that batch alone."""
        try:
            return await self._commit(group)
        except asyncpg.UniqueViolationError:
            return await self._commit(group)

    async def _commit(self, group: Sequence[Rows]) -> list[Exception | None]:
        """Apply the group in one transaction; per batch None or its refusal for a reused key. Raises when the
        transaction as a whole failed (nothing of it is committed)."""
        async with self._conn.transaction():
            await self.lease.check_epoch(self._conn)  # fenced: nothing of this transaction commits
            outcomes = await self._refuse_duplicate_keys(group)
            accepted = [rows for rows, outcome in zip(group, outcomes, strict=True) if not outcome]
            await apply_rows(self._conn, accepted, self.replica)
        if self._announcer is not None:
            self._announcer.add(accepted)
        return outcomes

    async def _refuse_duplicate_keys(self, group: Sequence[Rows]) -> list[Exception | None]:
        """A refusal for each batch whose new executions reuse a key (stored, or earlier in the group)."""
        wanted = [key for rows in group for key in rows.idempotency_keys]
        if not wanted:
            return [None] * len(group)
        taken = await taken_keys(self._conn, wanted)
        outcomes: list[Exception | None] = []
        for rows in group:
            seen: set[str] = set()
            duplicate = None
            for key in rows.idempotency_keys:
                if key in taken or key in seen:
                    duplicate = key
                    break
                seen.add(key)
            if duplicate is None:
                taken.update(rows.idempotency_keys)
                outcomes.append(None)
            else:
                outcomes.append(DuplicateIdempotencyKey(duplicate))
        return outcomes

    # ---- reads

    async def recover(self) -> RecoveredState:
        """Active executions whole; cold ones only as their queue entries (see `RecoveredState`). A replica's: those
        it holds (and those no replica holds: `_recover_held`)."""
        if not self.replica:
            return await super().recover()
        return await self._recover_held()

    async def _read(self, read: Callable[..., Awaitable[_T]], *args: Any, snapshot: bool = True) -> _T:
        """`read(conn, *args)` on a reading connection, in one read-only REPEATABLE READ transaction (a consistent
        snapshot), or without one (`snapshot` False: a read of one statement, two round trips fewer)."""
        self._check_open("read")
        try:
            if not snapshot:
                async with self._pool.acquire() as conn:
                    return await read(conn, *args)
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                return await read(conn, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
            raise StoreError(f"reading the database {self} failed: {error}") from error


def _translate(error: Exception) -> Exception:
    if isinstance(error, StoreError | ValueError):
        return error
    translated = StoreError(f"the database refused the batch: {error}")
    translated.__cause__ = error
    return translated
