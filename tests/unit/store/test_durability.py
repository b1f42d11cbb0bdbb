"""What a commit acknowledged survives a close, a new process, and a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.server.store import ExecutionSnapshot, SqliteStore, WriteBatch
from tests.unit.store import records
from tests.unit.store.records import T0, event, pending_execution, submit_batch
from tests.unit.store.support import write

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[3]


async def test_everything_written_is_read_back_by_a_new_store_on_the_same_file(db_path: Path) -> None:
    news = [pending_execution(handlers=("a:1", "b:2")) for _ in range(30)]
    first = news[0]
    started = records.execution_running(first.execution, T0 + timedelta(seconds=1))
    running = records.running(first.task_runs[0], T0 + timedelta(seconds=1))
    async with SqliteStore(db_path) as store:
        await asyncio.gather(*(write(store, submit_batch(new)) for new in news))
        await write(store, WriteBatch(executions=[started], task_runs=[running], events=[event(first.execution.id, 2)]))

    async with SqliteStore(db_path) as store:
        assert await store.get_execution(first.execution.id) == ExecutionSnapshot(
            started, (running, first.task_runs[1])
        )
        for new in news[1:]:
            assert await store.get_execution(new.execution.id) == ExecutionSnapshot(new.execution, tuple(new.task_runs))
        assert [e.sequence for e in await store.read_events(first.execution.id, 0)] == [1, 2]
        recovered = await store.recover()
        assert [s.execution.id for s in recovered.active] == [first.execution.id]  # the others are cold
        assert len(recovered.cold) == 2 * 29


# The child acknowledges 40 writes, says so, then keeps writing until it is killed mid-flight (it says when
# the first of those later writes is acknowledged: the ones after it are under way).
_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from taskwire.server.store import SqliteStore
    from tests.unit.store.records import pending_execution, submit_batch
    from tests.unit.store.support import write

    async def main(path: str) -> None:
        store = SqliteStore(path)
        await store.open()
        acknowledged = [pending_execution(execution_id=f"acked-{i}") for i in range(40)]
        await asyncio.gather(*(write(store, submit_batch(new)) for new in acknowledged))
        print("written", flush=True)
        n = 0
        while True:
            n += 1
            await asyncio.gather(*(write(store, submit_batch(pending_execution(execution_id=f"later-{n}-{i}")))
                                   for i in range(10)))
            if n == 1:
                print("writing", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_write_acknowledged_before_sigkill_survives(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db_path)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "written\n"
        assert child.stdout.readline() == "writing\n"  # unacknowledged writes are under way
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    async def read_back() -> None:
        async with SqliteStore(db_path) as store:
            for i in range(40):
                assert await store.get_execution(f"acked-{i}") is not None
                assert len(await store.read_events(f"acked-{i}", 0)) == 1

    asyncio.run(read_back())
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
