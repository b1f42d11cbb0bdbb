"""One server per store and per port: a second server on the same database file, or on a port in use,
refuses to start with one line that says why, exits non-zero, and changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.harness import BIN, SQLITE_ONLY, Cluster, ServerProcess, spawn
from tests.integration.server.support import Client, spec, task


def _rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        executions = conn.execute("SELECT COUNT(*) FROM executions").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return int(executions), int(events)


def _second_server(*args: str) -> tuple[int, list[str]]:
    process = spawn([str(BIN / "taskwire-server"), *args])
    code = process.wait(timeout_s=30)
    return code, [line for line in process.lines if line.strip()]


@SQLITE_ONLY
def test_a_second_server_on_the_same_store_refuses_and_writes_nothing(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    client.submit(spec(task("echo", input={"n": 1})))
    before = _rows(server.db_path)
    size = server.db_path.stat().st_size

    code, lines = _second_server("--listen", "127.0.0.1:0", "--db", str(server.db_path))
    assert code != 0
    assert len(lines) == 1, lines
    assert str(server.db_path) in lines[0]
    assert f"pid {server.process.popen.pid}" in lines[0]
    assert _rows(server.db_path) == before
    assert server.db_path.stat().st_size == size
    client.submit(spec(task("echo", input={"n": 2})))  # the first server serves on


@SQLITE_ONLY
def test_the_store_is_free_again_once_its_server_is_gone(procs: Cluster) -> None:
    first = procs.server()
    first.process.kill()  # the writer process follows it; the lock goes with both
    second = procs.server(db_name=first.db_path.name)
    assert second.process.popen.poll() is None


def test_a_second_server_on_a_used_port_refuses(procs: Cluster, server: ServerProcess, tmp_path: Path) -> None:
    code, lines = _second_server("--listen", server.address, "--db", str(tmp_path / "other.db"))
    assert code != 0
    assert len(lines) == 1, lines
    assert "in use" in lines[0]
    assert not (tmp_path / "other.db").exists()
