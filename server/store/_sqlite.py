"""`SqliteStore`: the default `Store`, one SQLite file written by one writer process.

Durability as shipped: WAL journal with `synchronous=FULL`, so a commit is fsynced before `commit`
returns. `commit(batches)` encodes each batch to rows on the caller's loop (a batch that cannot be
encoded fails alone, at once) and hands the group to the writer process (`_sqlite_writer`), which
alone holds the write connection and commits the group in one transaction. Should that process
die, every later commit fails with StoreError (and the server, which cannot keep what it would
serve, stops). This store does not gather groups itself: the committer above it does (see the
package).

Reads run on a small pool of read-only connections in their own threads, each read in one read
transaction (a consistent snapshot of committed data); WAL lets them run while the writer commits.
The event loop never touches the disk. The SQL of reads is in `_sqlite_queries`, the rows in
`_sqlite_codec`, the tables in `_sqlite_schema`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _sqlite_queries as queries
from ._lock import StoreLock
from ._protocol import (
    StoreClosed,
    StoreError,
    WriteBatch,
)
from ._query_reads import QueryReads
from ._sqlite_codec import Rows
from ._sqlite_schema import connect

if TYPE_CHECKING:
    from ._sqlite_writer import WriterProcess

__all__ = ["SqliteStore", "StoreStats"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of the write path since the store was opened (the writer process keeps most of them)."""

    commits: int = 0  # transactions committed that wrote something: one fsync each
    batches_committed: int = 0
    batches_failed: int = 0
    rows_written: int = 0  # rows inserted or updated, all tables
    largest_commit: int = 0  # the most batches one commit carried


class SqliteStore(QueryReads):
    """The `Store` on one SQLite file. Create it, `await open()` (or `async with`), `await close()`.

    `commit` raises `StoreClosed` before `open()` and after `close()`, and
    `StoreError` once the writer process is gone. Otherwise it answers for
    each batch: `DuplicateIdempotencyKey` when a new execution reuses a key,
    `StoreError` when the database refuses the batch (an update of a record
    that does not exist, a duplicate id or event sequence, an event of an
    unknown execution) or the disk fails, and `ValueError` for a record it
    cannot encode (a naive datetime). A refused batch writes nothing; the
    other batches of its group commit all the same. A `commit` cancelled
    while waiting does not withdraw its group once it is under way.

    Groups are committed one at a time, in the order `commit` was called
    (each is encoded before the first await).
    """

    _queries: ClassVar[ModuleType] = queries

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 5.0,
        readers: int = 2,
    ) -> None:
        """`path` is the database file (its parent folders are created); `readers` is the size of the read pool."""
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SqliteStore needs a file path: readers and the writer share the database through it")
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._reader_count = readers
        self._lock = threading.Lock()  # guards the list of reader connections
        self._owner = StoreLock(self.path)  # one server per store (see _lock)
        # One group at a time goes to the writer process; tests hold it to keep a commit waiting.
        self._commit_lock = asyncio.Lock()
        self._state = "new"  # new → opening → open → closing → closed
        self._opening: asyncio.Future[None] | None = None
        self._process: WriterProcess | None = None
        self._encode_failures = 0  # batches refused before the writer process saw them: they could not be encoded
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._closed: asyncio.Event | None = None

    # ---- lifecycle

    async def open(self) -> None:
        """Create or migrate the schema and start the writer and the readers. A second call does nothing."""
        if self._state == "open":
            return
        if self._state == "new":
            self._state = "opening"
            self._opening = asyncio.ensure_future(self._start_writer())
        if self._state == "opening" and self._opening is not None:
            try:
                await asyncio.shield(self._opening)
            except BaseException:
                if self._opening.done():  # the start failed: nothing is left to close
                    self._state = "closed"
                # Otherwise this caller gave up while the writer still starts: close() waits for it and stops it.
                raise
        if self._state == "opening":
            self._readers = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._reader_count,
                thread_name_prefix="taskwire-store-reader",
                initializer=self._open_reader,
            )
            self._state = "open"
        elif self._state != "open":  # closed before it was ready, or closed already
            raise StoreClosed(f"the store at {self.path} is closed; make a new SqliteStore to open it again")

    async def close(self) -> None:
        """Finish the commits under way, stop the writer, close every connection. Idempotent."""
        if self._closed is None and self._state in ("new", "closed"):  # never opened, or open() failed
            self._state = "closed"
            return
        if self._closed is not None:  # closing or closed already
            await self._closed.wait()
            return
        self._closed = asyncio.Event()
        self._state = "closing"
        try:
            if self._opening is not None:
                with contextlib.suppress(Exception):  # open() reports a failed start
                    await asyncio.shield(self._opening)
            async with self._commit_lock:  # after the commits already waiting for it
                if self._process is not None:
                    await self._process.stop()
            if self._readers is not None:
                await asyncio.to_thread(self._readers.shutdown, wait=True)
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        finally:
            self._owner.release()
            self._state = "closed"
            self._closed.set()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def writer_pid(self) -> int | None:
        """The process id of the writer process while the store is open, else None."""
        process = self._process
        return process.pid if process is not None and self._state == "open" else None

    def stats(self) -> StoreStats:
        """Counters of the write path (commits, batches, rows) since open()."""
        stats = self._process.stats if self._process is not None else StoreStats()
        return replace(stats, batches_failed=stats.batches_failed + self._encode_failures)

    # ---- writes

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        """Durably apply the batches in one transaction; per batch None (committed) or why it alone was refused.

        Returns once the group is committed and fsynced (see the class for errors).
        """
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
                self._encode_failures += 1
                outcomes[place] = error
            else:
                places.append(place)
        if encoded:
            await self._commit_lock.acquire()  # in call order; a caller that leaves before its turn withdraws
            assert self._process is not None
            # Sent now, not from a task that starts on the loop's next round: the writer process begins the
            # commit (and its fsync) while the loop runs whatever else is ready, such as a dispatch.
            try:
                sent = self._process.send(encoded)
            except BaseException:
                self._commit_lock.release()
                raise
            # The next group waits for this one's answer, or (should this caller stop waiting: the group is
            # committed all the same) goes after it in the process's order.
            sent.add_done_callback(lambda _: self._commit_lock.release())
            for place, refusal in zip(places, await self._process.answer(sent), strict=True):
                outcomes[place] = refusal
        return outcomes

    async def _start_writer(self) -> None:
        # Imported here: the module is also the writer process's `-m` entry point, which the package must
        # not have imported before it runs.
        from ._sqlite_writer import WriterProcess

        await self._owner.acquire()
        try:
            self._process = await WriterProcess.start(
                self.path.resolve(), self._busy_timeout_s, inherit_fds=(self._owner.fd,)
            )
        except BaseException:
            self._owner.release()
            raise

    # ---- reads

    def _open_reader(self) -> None:
        conn = connect(self.path, busy_timeout_s=self._busy_timeout_s, read_only=True)
        self._reader_local.conn = conn
        with self._lock:
            self._reader_connections.append(conn)

    def _in_read_transaction(self, read: Callable[..., _T], *args: Any) -> _T:
        conn: sqlite3.Connection = self._reader_local.conn
        conn.execute("BEGIN")  # one snapshot of committed data for the whole read
        try:
            return read(conn, *args)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    async def _read(self, read: Callable[..., _T], *args: Any) -> _T:
        self._check_open("read")
        assert self._readers is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._in_read_transaction, read, *args)
        except (sqlite3.Error, concurrent.futures.BrokenExecutor) as error:
            raise StoreError(f"reading {self.path} failed: {error}") from error

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            if self._state in ("closing", "closed"):
                raise StoreClosed(f"cannot {what}: the store at {self.path} is closed")
            raise StoreClosed(f"cannot {what}: the store at {self.path} is not open yet (await open() first)")
