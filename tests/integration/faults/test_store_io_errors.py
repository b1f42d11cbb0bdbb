"""I/O errors from the store under load, injected by a faulty store wrapper around the real SQLite store
in an in-process server: the server stops rather than serve state it cannot keep, and a server restarted
on the same file loses nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import pytest

from taskwire.server import ServerConfig, TaskwireServer
from taskwire.server.store import SqliteStore
from tests.faults.checker import Fault
from tests.faults.faulty_store import FaultyStore
from tests.faults.journal import HANDLERS, journal_env
from tests.faults.scenario import Load, final_report
from tests.harness import SQLITE_ONLY, Cluster, start_worker

pytestmark = SQLITE_ONLY

LEASE = ("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


class InProcessServer:
    """A real taskwire server on 127.0.0.1:0, on its own event loop in a thread, over a given store."""

    def __init__(self, db_path: Path, store: FaultyStore) -> None:
        from datetime import timedelta

        self.config = ServerConfig(
            listen="127.0.0.1:0",
            db_path=db_path,
            heartbeat_interval=timedelta(seconds=0.5),
            lease_timeout=timedelta(seconds=3),
        )
        self.store = store
        self.address = ""
        self.failure: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the in-process server did not start"

    async def _serve(self) -> None:
        server = TaskwireServer(self.config, store=self.store)
        self.address = await server.start()
        self._ready.set()
        await server.wait_stopped()
        self.failure = server.failure

    def wait_stopped(self, timeout_s: float = 30) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the server did not stop after its store failed"


@pytest.mark.slow
@pytest.mark.parametrize("reads_fail", [False, True], ids=["commits", "commits-and-reads"])
def test_io_errors_from_the_store_under_load(procs: Cluster, tmp_path: Path, reads_fail: bool) -> None:
    journal = tmp_path / "journal.jsonl"
    db = tmp_path / "taskwire.db"
    store = FaultyStore(SqliteStore(db))
    server = InProcessServer(db, store)
    for index in range(2):
        worker = start_worker(server.address, handlers=HANDLERS, slots=6, name=f"w{index}", env=journal_env(journal))
        procs.processes.append(worker)
    load = Load(server.address, threads=4, per_thread=40, seconds=0.05).start()
    load.wait_acknowledged(30)
    store.fail_reads = reads_fail
    store.fail_with = OSError(errno.EIO, "Input/output error")
    server.wait_stopped()
    assert server.failure is not None

    restarted = procs.server_at(server.address, *LEASE)
    load.join()

    report = final_report(restarted.address, load, journal, {Fault.STORE_ERROR})
    assert report.ok, str(report)
