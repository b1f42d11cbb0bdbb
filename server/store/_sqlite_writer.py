"""The SQLite store's writer process, both sides: the process that commits, and the server's handle on it.

The writer process alone holds the write connection. It receives a group of encoded batches
(`Rows`), applies them in one transaction and commits once (one fsync), and answers with the
refusal of each batch, if any: a batch whose new execution reuses an idempotency key is refused
before the transaction; when the transaction as a whole fails, each batch is retried alone, so a
bad batch fails only itself. A process rather than a thread: SQLite's work, and the Python around
every row, never competes with the server's event loop for the interpreter lock.

Run as ``python -P -m taskwire.server.store._sqlite_writer FD PATH BUSY_TIMEOUT_S``; `SqliteStore.open()`
starts it through `WriterProcess.start`. The package does not import this module when it is imported
itself (the store imports it on open), so that running it with `-m` finds it not loaded yet.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sqlite3
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ._protocol import DuplicateIdempotencyKey, StoreError
from ._sqlite import StoreStats
from ._sqlite_codec import EXECUTION_COLUMNS, TASK_RUN_COLUMNS, Rows, last_schedules
from ._sqlite_queries import select_in
from ._sqlite_schema import INLINE_INPUT_MAX, connect, migrate, write_transaction

_INSERT_EXECUTION: Final = (
    f"INSERT INTO executions ({', '.join(EXECUTION_COLUMNS)}, request_fingerprint) "
    f"VALUES ({', '.join(':' + c for c in EXECUTION_COLUMNS)}, :request_fingerprint)"
)
_UPDATE_EXECUTION: Final = (
    f"UPDATE executions SET {', '.join(f'{c} = :{c}' for c in EXECUTION_COLUMNS if c != 'id')} WHERE id = :id"
)
# A small input in the task run's row; a large one (NULL there) in task_run_inputs.
_INSERT_TASK_RUN: Final = (
    f"INSERT INTO task_runs ({', '.join(TASK_RUN_COLUMNS)}, position, input) "
    f"VALUES ({', '.join(':' + c for c in TASK_RUN_COLUMNS)}, :position, "
    f"CASE WHEN length(:input) <= {INLINE_INPUT_MAX} THEN :input END)"
)
_UPDATE_TASK_RUN: Final = (
    f"UPDATE task_runs SET {', '.join(f'{c} = :{c}' for c in TASK_RUN_COLUMNS if c not in ('id', 'execution_id'))} "
    "WHERE id = :id AND execution_id = :execution_id"
)
_INSERT_INPUT: Final = "INSERT INTO task_run_inputs (task_run_id, data) VALUES (?, ?)"
_INSERT_EVENT: Final = (
    "INSERT INTO events (execution_id, sequence, time, kind, body) "
    "VALUES (:execution_id, :sequence, :time, :kind, :body)"
)
# Deleting an execution: children first (foreign keys are on). Each by an index: the events' primary key,
# task_runs (execution_id, position), the inputs' primary key.
_DELETE_EXECUTION: Final = (
    "DELETE FROM events WHERE execution_id = ?",
    "DELETE FROM task_run_inputs WHERE task_run_id IN (SELECT id FROM task_runs WHERE execution_id = ?)",
    "DELETE FROM task_runs WHERE execution_id = ?",
    "DELETE FROM executions WHERE id = ?",
)
_UPSERT_SCHEDULE: Final = (
    "INSERT INTO schedules (name, body) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET body = excluded.body"
)
_UPDATE_SCHEDULE: Final = "UPDATE schedules SET body = ? WHERE name = ?"
_DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE name = ?"
_EXISTING_EXECUTIONS: Final = "SELECT id FROM executions WHERE id IN ({marks})"
_EXISTING_TASK_RUNS: Final = "SELECT id, execution_id FROM task_runs WHERE id IN ({marks})"
_TAKEN_KEYS: Final = (
    "SELECT idempotency_key FROM executions WHERE idempotency_key IN ({marks}) AND idempotency_key != ''"
)


def _translate(error: Exception) -> StoreError:
    if isinstance(error, StoreError):
        return error
    if isinstance(error, sqlite3.IntegrityError):
        translated = StoreError(f"the database refused the batch: {error}")
    elif isinstance(error, sqlite3.Error):
        translated = StoreError(f"the write failed: {error}")
    else:
        translated = StoreError(f"the write failed: {error!r}")
    translated.__cause__ = error
    return translated


# Why a batch was refused, as it crosses from the writer process: ("duplicate", key) or ("error", message).
_Refusal = tuple[str, str]


class _Writer:
    """The writer process's side: owns the write connection, commits groups of encoded batches.

    Runs in its own process (see `WriterProcess`), so the Python work around every row it writes never
    takes the interpreter lock from the server's event loop.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.commits = 0
        self.batches_committed = 0
        self.batches_failed = 0
        self.rows_written = 0
        self.largest_commit = 0

    def commit_isolating(self, group: Sequence[Rows]) -> list[_Refusal | None]:
        """Commit the group in one transaction; per batch None (committed) or why it alone was refused."""
        try:
            return self._commit(group)
        except Exception as error:
            if len(group) == 1:
                return [self._fail(error)]
        # The group failed as a whole: retry each batch alone, so a bad one fails only itself.
        outcomes: list[_Refusal | None] = []
        for rows in group:
            try:
                outcomes.extend(self._commit([rows]))
            except Exception as error:
                outcomes.append(self._fail(error))
        return outcomes

    def _fail(self, error: Exception) -> _Refusal:
        self.batches_failed += 1
        return ("error", str(_translate(error)))

    def _commit(self, group: Sequence[Rows]) -> list[_Refusal | None]:
        """Apply the group in one transaction; per batch None (committed) or the refusal of it alone.

        Raises when the transaction as a whole failed (nothing of it is committed).
        """
        with write_transaction(self.conn):
            outcomes = self._refuse_duplicate_keys(group)
            accepted = [rows for rows, outcome in zip(group, outcomes, strict=True) if outcome is None]
            written = self._apply(accepted)
        if accepted:
            self.commits += 1
            self.batches_committed += len(accepted)
            self.rows_written += written
            self.largest_commit = max(self.largest_commit, len(accepted))
        self.batches_failed += len(group) - len(accepted)
        return outcomes

    def _refuse_duplicate_keys(self, group: Sequence[Rows]) -> list[_Refusal | None]:
        """A refusal for each batch whose new executions reuse a key (stored, or earlier in the group)."""
        wanted = [key for rows in group for key in rows.idempotency_keys]
        if not wanted:
            return [None] * len(group)
        taken = {row[0] for row in select_in(self.conn, _TAKEN_KEYS, wanted)}
        outcomes: list[_Refusal | None] = []
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
                outcomes.append(("duplicate", duplicate))
        return outcomes

    def _apply(self, batches: Sequence[Rows]) -> int:
        """Write the batches in their order; return the rows written."""
        conn = self.conn
        written = 0
        new_executions = [row for rows in batches for row in rows.new_executions]
        new_task_runs = [row for rows in batches for row in rows.new_task_runs]
        # Updates: the last version of each record wins, exactly as if applied one after the other.
        executions = {row["id"]: row for rows in batches for row in rows.executions}
        task_runs = {row["id"]: row for rows in batches for row in rows.task_runs}
        events = [row for rows in batches for row in rows.events]
        if new_executions:
            conn.executemany(_INSERT_EXECUTION, new_executions)
            written += len(new_executions)
        if new_task_runs:
            conn.executemany(_INSERT_TASK_RUN, new_task_runs)
            written += len(new_task_runs)
            apart = [(row["id"], row["input"]) for row in new_task_runs if len(row["input"]) > INLINE_INPUT_MAX]
            if apart:
                conn.executemany(_INSERT_INPUT, apart)
                written += len(apart)
        if executions:
            self._update(_UPDATE_EXECUTION, list(executions.values()), "executions")
            written += len(executions)
        if task_runs:
            self._update(_UPDATE_TASK_RUN, list(task_runs.values()), "task_runs")
            written += len(task_runs)
        if events:
            conn.executemany(_INSERT_EVENT, events)
            written += len(events)
        deleted = [(execution_id,) for rows in batches for execution_id in rows.deleted]
        if deleted:
            for sql in _DELETE_EXECUTION:
                written += max(conn.executemany(sql, deleted).rowcount, 0)
        schedules = last_schedules(batches)
        if inserted := [(name, body) for name, (body, new) in schedules.items() if body is not None and new]:
            conn.executemany(_UPSERT_SCHEDULE, inserted)
            written += len(inserted)
        if updated := [(body, name) for name, (body, new) in schedules.items() if body is not None and not new]:
            written += max(conn.executemany(_UPDATE_SCHEDULE, updated).rowcount, 0)
        if deleted_schedules := [(name,) for name, (body, _) in schedules.items() if body is None]:
            written += max(conn.executemany(_DELETE_SCHEDULE, deleted_schedules).rowcount, 0)
        return written

    def _update(self, sql: str, rows: list[dict[str, Any]], table: str) -> None:
        """Run the UPDATEs; StoreError naming the records that do not exist when fewer rows changed."""
        cursor = self.conn.executemany(sql, rows)
        if cursor.rowcount == len(rows):
            return
        ids = [row["id"] for row in rows]
        if table == "executions":
            found = {row[0] for row in select_in(self.conn, _EXISTING_EXECUTIONS, ids)}
            missing = [row["id"] for row in rows if row["id"] not in found]
            raise StoreError(f"cannot update executions that do not exist: {', '.join(missing)}")
        pairs = {(row[0], row[1]) for row in select_in(self.conn, _EXISTING_TASK_RUNS, ids)}
        missing = [
            f"{row['id']} of {row['execution_id']}" for row in rows if (row["id"], row["execution_id"]) not in pairs
        ]
        raise StoreError(f"cannot update task runs that do not exist: {', '.join(missing)}")

    def stats(self) -> StoreStats:
        return StoreStats(
            commits=self.commits,
            batches_committed=self.batches_committed,
            batches_failed=self.batches_failed,
            rows_written=self.rows_written,
            largest_commit=self.largest_commit,
        )


def writer_process_main(argv: Sequence[str]) -> int:
    """The writer process (`python -P -m taskwire.server.store._sqlite_writer FD PATH BUSY_TIMEOUT_S`).

    Opens and migrates the database, says ("ready", "") or ("failed", message) on the connection FD,
    then commits each group it receives and answers (refusals, stats), until it receives None or the
    server's end of the connection closes. Interrupts are the server's to handle: a Ctrl-C that reaches
    the whole process group must not cut a commit short.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = multiprocessing.connection.Connection(int(argv[0]))
    path, busy_timeout_s = Path(argv[1]), float(argv[2])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path, busy_timeout_s=busy_timeout_s, read_only=False)
    except Exception as error:
        channel.send(("failed", str(_translate(error))))
        return 1
    try:
        try:
            migrate(conn)
        except Exception as error:
            channel.send(("failed", str(_translate(error))))
            return 1
        writer = _Writer(conn)
        channel.send(("ready", ""))
        while True:
            try:
                group = channel.recv()
            except EOFError:  # the server is gone; whatever it had not sent is not ours to write
                return 0
            if group is None:
                return 0
            channel.send((writer.commit_isolating(group), writer.stats()))
    finally:
        conn.close()


class _Lost(ConnectionError):
    """The connection to the writer process is gone (its exit status says why)."""


class _Answers(asyncio.Protocol):
    """The event loop's end of the connection to the writer process: each message that arrives (the framing of
    `multiprocessing.connection`) resolves the oldest future still waiting, right in the read callback, so the
    caller awaiting it resumes on the loop's next turn."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.lost: BaseException | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from("!i", buffer)
            start = 4
            if size == -1:
                if len(buffer) < 12:
                    return
                (size,) = struct.unpack_from("!Q", buffer, 4)
                start = 12
            end = start + size
            if len(buffer) < end:
                return
            message = pickle.loads(bytes(buffer[start:end]))
            del buffer[:end]
            if self.waiting:
                future = self.waiting.popleft()  # the answer is this one's even if its caller stopped waiting
                if not future.done():
                    future.set_result(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = _Lost(f"the connection to the writer process closed: {exc or 'end of file'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def next_message(self) -> asyncio.Future[Any]:
        """A future for the next message that has no future yet."""
        future = asyncio.get_running_loop().create_future()
        if self.lost is not None:
            future.set_exception(self.lost)
        else:
            self.waiting.append(future)
        return future


class WriterProcess:
    """The server's handle on the writer process: start it, hand it groups, stop it.

    A process rather than a thread: SQLite's work, and the Python around every row, never holds the
    interpreter lock the event loop needs. The event loop talks to it directly over a socket pair (the
    framing of `multiprocessing.connection`, which the process uses), so a commit costs no thread
    hand-offs, and its answer resolves the waiting future in the loop's read callback. Should the process
    die, every write from then on fails with StoreError, which stops the server (fail-stop: it never serves
    state it cannot keep).
    """

    def __init__(self, popen: asyncio.subprocess.Process, transport: asyncio.Transport, answers: _Answers) -> None:
        self._popen = popen
        self._transport = transport
        self._answers = answers
        self._broken: StoreError | None = None
        self.stats = StoreStats()

    @classmethod
    async def start(cls, path: Path, busy_timeout_s: float, inherit_fds: tuple[int, ...] = ()) -> WriterProcess:
        """Start the process; returns once it has opened and migrated the database (StoreError if it could not).

        `inherit_fds` stay open in the process for its whole life (the store's lock)."""
        ours, theirs = socket.socketpair()
        try:
            popen = await asyncio.create_subprocess_exec(
                # -P: the working directory does not go first on the import path, where a folder named
                # `server` (common in the projects that run taskwire) would shadow this package.
                sys.executable,
                "-P",
                "-m",
                "taskwire.server.store._sqlite_writer",
                str(theirs.fileno()),
                str(path),
                str(busy_timeout_s),
                pass_fds=(theirs.fileno(), *inherit_fds),
                stdin=asyncio.subprocess.DEVNULL,
                env=_writer_environment(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        transport, answers = await asyncio.get_running_loop().create_unix_connection(_Answers, sock=ours)
        process = cls(popen, transport, answers)
        try:
            status, message = await process._receive(answers.next_message())
        except BaseException:
            await process.stop()
            raise
        if status != "ready":
            await process.stop()
            raise StoreError(message)
        return process

    @property
    def pid(self) -> int:
        return self._popen.pid

    def send(self, group: Sequence[Rows]) -> asyncio.Future[Any]:
        """Hand the group to the process now, before the caller next yields to the event loop: the writer
        starts its commit while the loop goes on with other work. Returns the future of its answer, for
        `answer()`; it is done once the process has answered, or cancelled if its caller stopped waiting
        (the group is committed all the same, and the answers of later groups go to their own futures)."""
        future = self._answers.next_message()
        if self._answers.lost is None:
            self._send(list(group))
        return future

    async def answer(self, sent: asyncio.Future[Any]) -> list[StoreError | None]:
        """The outcome of the group `send` handed over, committed in one transaction: per batch None or the
        error that refused it alone.

        Raises StoreError, now and on every later call, once the process is gone.
        """
        if self._broken is not None and sent.done() and not sent.cancelled():
            sent.exception()  # the connection's loss, known already: retrieved, so that asyncio does not report it
        if self._broken is None:
            try:
                refusals, self.stats = await self._receive(sent)
            except StoreError as error:
                self._broken = error
            else:
                return [_refusal_error(refusal) for refusal in refusals]
        raise self._broken

    def _send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        # multiprocessing.connection's framing: a signed 32-bit length, or -1 and an unsigned 64-bit one.
        header = struct.pack("!i", len(data)) if len(data) < 0x7FFFFFFF else struct.pack("!iQ", -1, len(data))
        self._transport.writelines((header, data))

    async def _receive(self, message: asyncio.Future[Any]) -> Any:
        try:
            return await message
        except _Lost as error:
            raise await self._exited(error) from error

    async def _exited(self, error: BaseException) -> StoreError:
        status = await self._popen.wait()
        exited = StoreError(f"the store's writer process exited unexpectedly (exit status {status})")
        exited.__cause__ = error
        return exited

    async def stop(self) -> None:
        """Ask the process to finish and wait for it to exit (it has committed everything it was sent)."""
        if self._answers.lost is None:
            self._send(None)
        self._transport.close()  # after what is buffered has gone out
        await self._popen.wait()


def _writer_environment() -> dict[str, str]:
    """This environment, with the folder that holds the `server` folder first on the import path."""
    root = str(Path(__file__).resolve().parents[2])
    search_path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not search_path else f"{root}{os.pathsep}{search_path}"}


def _refusal_error(refusal: _Refusal | None) -> StoreError | None:
    if refusal is None:
        return None
    kind, detail = refusal
    return DuplicateIdempotencyKey(detail) if kind == "duplicate" else StoreError(detail)


if __name__ == "__main__":
    sys.exit(writer_process_main(sys.argv[1:]))
