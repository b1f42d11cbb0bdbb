"""Workers crash (kill -9) or freeze (SIGSTOP past the lease, then SIGCONT) under load: their attempts are
retried elsewhere, late reports from the frozen one are fenced, and the checker reports zeros.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import journal_worker
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster, Process, ServerProcess

LEASE_S = 2.0
LEASE = ("--lease-timeout", str(LEASE_S), "--heartbeat-interval", "0.5", "--cancel-grace", "2")


def _worker(procs: Cluster, server: ServerProcess, journal: Path, name: str) -> Process:
    return journal_worker(procs, server, journal, name=name, slots=6)


# Each fault both ways: handlers as coroutines on the worker's handler loop, and as plain functions in its threads.
HANDLERS = pytest.mark.parametrize("handler", ["journal.work", "journal.work_sync"])


@pytest.mark.slow
@HANDLERS
def test_a_worker_killed_under_load(procs: Cluster, tmp_path: Path, handler: str) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    doomed = _worker(procs, server, journal, "doomed")
    _worker(procs, server, journal, "steady")
    load = Load(server.address, threads=4, per_thread=40, seconds=0.2, handlers=(handler,)).start()
    load.wait_acknowledged(30)
    doomed.kill()
    _worker(procs, server, journal, "replacement")
    load.join()

    report = final_report(server.address, load, journal, {Fault.WORKER_CRASH})
    assert report.ok, str(report)


@pytest.mark.slow
@HANDLERS
def test_a_worker_frozen_past_its_lease_then_resumed(procs: Cluster, tmp_path: Path, handler: str) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    frozen = _worker(procs, server, journal, "frozen")
    _worker(procs, server, journal, "steady")
    load = Load(server.address, threads=4, per_thread=30, seconds=0.2, handlers=(handler,)).start()
    load.wait_acknowledged(20)
    frozen.signal(signal.SIGSTOP)
    server.process.wait_for_line(r"worker frozen lost its lease", timeout_s=20)
    frozen.signal(signal.SIGCONT)
    load.join()

    report = final_report(server.address, load, journal, {Fault.WORKER_PAUSE})
    assert report.ok, str(report)
