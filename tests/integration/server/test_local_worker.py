"""`make run`'s local worker is supervised: restarted when it dies; SIGHUP, SIGINT and SIGTERM to the server
stop both."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from tests.harness import BIN, READY, Process, ServerProcess, spawn, wait_for


def _local_workers(server: Process) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server.popen.pid).children(recursive=True):
        try:
            if any(part.endswith("taskwire-worker") for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _start(tmp_path: Path) -> tuple[Process, ServerProcess]:
    process = spawn(
        [str(BIN / "taskwire-server"), "--listen", "127.0.0.1:0", "--db", str(tmp_path / "db"), "--with-local-worker"]
    )
    address = process.wait_for_line(READY).group(1)
    server = ServerProcess(process=process, address=address, db_path=tmp_path / "db")
    server.wait_for_workers(1)
    return process, server


def test_a_dead_local_worker_comes_back(tmp_path: Path) -> None:
    process, server = _start(tmp_path)
    try:
        (first,) = wait_for(lambda: _local_workers(process), what="the local worker")
        first.kill()
        process.wait_for_line("the local worker exited")
        wait_for(
            lambda: [w for w in _local_workers(process) if w.pid != first.pid and w.is_running()],
            what="a new local worker",
        )
        wait_for(lambda: server.stats().connected_workers == 1 and server.stats().free_slots == 4, what="it to connect")
    finally:
        process.stop()
    assert process.popen.returncode == 0, process.output


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM], ids=["hup", "int", "term"])
def test_a_signal_to_the_server_stops_both(tmp_path: Path, signum: int) -> None:
    process, _ = _start(tmp_path)
    (worker,) = wait_for(lambda: _local_workers(process), what="the local worker")
    process.signal(signum)
    assert process.wait(timeout_s=30) == 0, process.output
    worker.wait(timeout=30)
    assert not worker.is_running()
    assert "taskwire-server stopped" in process.output
