"""Deleting finished executions on a real server: `taskwire delete ID` (TaskService.DeleteExecution), and
retention: with a short `--retention`, under a steady load, the stored rows stay flat and the file stops
growing (SQLite reuses the pages that deletes free)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.client import Client, ExecutionSpec, InvalidTransition, NotFound, State, TaskSpec, to_payload
from tests.harness import BIN, BOTH_STORES, SQLITE_ONLY, Cluster, ServerProcess, wait_for
from tests.postgres import PostgresCluster

FINISH = timedelta(seconds=20)


@pytest.fixture
def sdk(server: ServerProcess) -> Iterator[Client]:
    with Client(server.address) as opened:
        yield opened


def taskwire(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `taskwire` CLI against `server`."""
    env = {**os.environ, "TASKWIRE_SERVER": server.address}
    return subprocess.run(
        [str(BIN / "taskwire"), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@BOTH_STORES
def test_delete_a_finished_execution_then_get_is_not_found(procs: Cluster, server: ServerProcess, sdk: Client) -> None:
    procs.worker(server, slots=2)
    submitted = sdk.submit("echo", {"keep": "no"}, key="delete-me")
    assert sdk.wait_finished(submitted.id, FINISH).state is State.SUCCESS

    deleted = taskwire(server, "delete", submitted.id)
    assert deleted.returncode == 0, deleted.stderr
    assert f"{submitted.id} deleted" in deleted.stdout

    got = taskwire(server, "get", submitted.id)
    assert got.returncode == 4, got.stdout
    assert submitted.id in got.stderr
    with pytest.raises(NotFound):
        sdk.get(submitted.id)
    again = taskwire(server, "delete", submitted.id)
    assert again.returncode == 4
    # Its idempotency key is free again: the same key makes a new execution.
    assert sdk.submit("echo", {"keep": "no"}, key="delete-me").id != submitted.id


@BOTH_STORES
def test_delete_of_a_running_execution_is_refused_naming_its_state(
    procs: Cluster, server: ServerProcess, sdk: Client
) -> None:
    procs.worker(server, slots=1)
    running = sdk.submit("sleep", {"seconds": 30})
    wait_for(lambda: sdk.get(running.id).state is State.RUNNING or None, what="the execution running")

    refused = taskwire(server, "delete", running.id)
    assert refused.returncode == 4, refused.stdout
    assert "RUNNING" in refused.stderr
    assert "cancel" in refused.stderr
    with pytest.raises(InvalidTransition, match="RUNNING"):
        sdk.delete(running.id)
    assert sdk.get(running.id).state is State.RUNNING


def _rows(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM executions").fetchone()[0])
    finally:
        conn.close()


def _bytes(db_path: Path) -> int:
    return sum(path.stat().st_size for path in db_path.parent.glob(db_path.name + "*") if path.is_file())


def _steady_load(procs: Cluster, sample: Callable[[ServerProcess], None]) -> int:
    """A server with a one-second retention under a steady load for 8 s; `sample(server)` after each second.
    Returns how many executions were submitted."""
    server = procs.server("--retention", "1", "--lease-timeout", "2", "--heartbeat-interval", "0.5")
    procs.worker(server, slots=8)
    specs = [ExecutionSpec(tasks=(TaskSpec("echo", input=to_payload(n)),)) for n in range(50)]
    with Client(server.address) as sdk:
        for _ in range(8):  # the load is a span of time: 50 executions every 0.25 s, for 8 s
            started = time.monotonic()
            for _ in range(4):
                results = sdk.submit_many(specs, wait_for_room=True)
                assert all(result.ok for result in results), results
                sdk.wait_finished(results[-1].execution_id, FINISH)
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))  # the load is a span of time
            sample(server)
    return 8 * 4 * len(specs)


def _assert_flat(rows: list[int], submitted: int) -> None:
    # Retention keeps about a second and a half of finished executions (1 s, plus a sweep every 0.25 s):
    # the rows stay flat, far below what was submitted.
    assert max(rows[3:]) < submitted / 3, rows
    assert max(rows[3:]) <= 3 * max(rows[1:3]) + 100, rows


@pytest.mark.slow
@SQLITE_ONLY
def test_with_a_short_retention_a_steady_load_keeps_the_rows_flat_and_the_file_from_growing(
    procs: Cluster,
) -> None:
    rows: list[int] = []
    sizes: list[int] = []

    def sample(server: ServerProcess) -> None:
        rows.append(_rows(server.db_path))
        sizes.append(_bytes(server.db_path))

    _assert_flat(rows, _steady_load(procs, sample))
    # Freed pages take the new rows: the file (with its WAL) stops growing once retention runs.
    assert sizes[-1] <= 1.25 * max(sizes[2:4]), sizes


@pytest.mark.slow
@pytest.mark.parametrize("procs", ["postgresql"], indirect=True)
def test_with_a_short_retention_a_steady_load_keeps_the_postgresql_rows_flat(
    procs: Cluster, postgres: PostgresCluster
) -> None:
    assert procs.store_url is not None
    database = procs.store_url("taskwire.db").rsplit("/", 1)[1]  # the database the server is given
    rows: list[int] = []
    tables = ("executions", "task_runs", "task_run_inputs", "events")

    def sample(server: ServerProcess) -> None:
        counts = postgres.psql(f"SELECT {', '.join(f'(SELECT count(*) FROM {t})' for t in tables)}", database)
        executions, task_runs, inputs, _events = (int(n) for n in counts.split("|"))
        assert executions == task_runs == inputs  # one task run each: deleted together
        rows.append(executions)

    _assert_flat(rows, _steady_load(procs, sample))
