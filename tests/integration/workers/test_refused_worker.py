"""A worker whose hello the server refuses as invalid stops at once with the server's words, rather than retry."""

from __future__ import annotations

from tests.harness import Cluster, spawn_worker


def test_a_worker_the_server_refuses_exits_2_with_its_reason(procs: Cluster) -> None:
    server = procs.server()
    worker = spawn_worker(server.address, slots=100_000_000)  # past the server's 10,000
    procs.processes.append(worker)
    assert worker.popen.wait(timeout=30) == 2
    line = worker.wait_for_line("refused this worker")
    assert "hello.slots: must be between 1 and 10000, got 100000000" in line.string
