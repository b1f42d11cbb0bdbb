"""A server paused longer than the lease (SIGSTOP, then SIGCONT) does not expire healthy workers: the
heartbeats that queued meanwhile are read before any lease is judged.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.faults.journal import journal_worker
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster

LEASE_S = 3.0
LEASE = ("--lease-timeout", str(LEASE_S), "--heartbeat-interval", "0.5", "--cancel-grace", "2")


@pytest.mark.slow
def test_a_server_paused_past_the_lease_keeps_its_workers(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    for index in range(2):
        journal_worker(procs, server, journal, name=f"w{index}", slots=4)
    load = Load(server.address, threads=2, per_thread=8, seconds=1.5).start()
    load.wait_acknowledged(4)
    server.process.signal(signal.SIGSTOP)
    time.sleep(LEASE_S * 1.5)  # the fault itself is a span of time with the server stopped
    server.process.signal(signal.SIGCONT)
    load.join()

    report = final_report(server.address, load, journal, ())
    assert report.ok, str(report) + "\n" + server.process.output[-4000:]
    assert "lost its lease" not in server.process.output
