"""The store's writer process: its death stops the server (fail-stop), and it never outlives the server."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.harness import SQLITE_ONLY, Cluster, ServerProcess, wait_for
from tests.integration.server.support import Client, spec, task

pytestmark = SQLITE_ONLY

Connect = Callable[[ServerProcess], Client]


def writer_of(server: ServerProcess) -> int:
    """The pid of the server's store writer process (its child running taskwire.server.store._sqlite_writer)."""
    pid = server.process.popen.pid
    children = [
        int(child)
        for thread in Path(f"/proc/{pid}/task").iterdir()
        for child in (thread / "children").read_text().split()
    ]
    writers = [
        child
        for child in children
        if b"taskwire.server.store._sqlite_writer" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    assert len(writers) == 1, f"expected one writer process among {children}"
    return writers[0]


def is_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_a_dead_writer_process_stops_the_server_and_loses_nothing_acknowledged(
    procs: Cluster, connect: Connect
) -> None:
    first = procs.server()
    client = connect(first)
    acknowledged = [client.submit(spec(task("echo", input={"n": n}))).execution.id for n in range(5)]

    os.kill(writer_of(first), signal.SIGKILL)
    # The next write finds the store gone: the server refuses to serve state it cannot keep, and stops.
    with pytest.raises(grpc.RpcError) as refused:
        client.submit(spec(task("echo", input={"n": "after"})))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert first.process.wait(timeout_s=30) == 1
    assert "stopped after a store failure" in first.process.output
    assert "writer process exited unexpectedly" in first.process.output

    second = procs.server(db_name=first.db_path.name)
    assert set(acknowledged) <= connect(second).stored_ids()


def test_the_writer_process_ends_with_a_killed_server(procs: Cluster) -> None:
    server = procs.server()
    writer = writer_of(server)
    server.process.kill()  # SIGKILL: the server has no chance to stop it
    wait_for(lambda: is_gone(writer), what="the writer process to exit after its server")
