"""The store fails under load — its writer process killed, the disk full — and the server stops rather
than serve state it cannot keep; after a restart nothing acknowledged is lost and everything finishes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import journal_worker
from tests.faults.scenario import Load, final_report
from tests.harness import SQLITE_ONLY, Cluster, ServerProcess
from tests.integration.server.test_store_process import writer_of

pytestmark = SQLITE_ONLY

LEASE = ("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


def _workers(procs: Cluster, server: ServerProcess, journal: Path) -> None:
    for index in range(2):
        journal_worker(procs, server, journal, name=f"w{index}", slots=8)


def _restart_on_the_same_port(procs: Cluster, stopped: ServerProcess) -> ServerProcess:
    assert stopped.process.wait(timeout_s=30) == 1, stopped.process.output
    assert "stopped after a store failure" in stopped.process.output
    return procs.server_at(stopped.address, *LEASE)


@pytest.mark.slow
def test_the_writer_process_killed_under_load(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    _workers(procs, server, journal)
    load = Load(server.address, threads=4, per_thread=40).start()
    load.wait_acknowledged(30)
    os.kill(writer_of(server), signal.SIGKILL)
    server = _restart_on_the_same_port(procs, server)
    load.join()

    report = final_report(server.address, load, journal, {Fault.STORE_ERROR})
    assert report.ok, str(report)


@pytest.mark.slow
def test_a_full_disk_under_load(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    # Files the server writes stop growing past this size: the database or its WAL fills up under load.
    server = procs.server(*LEASE, max_file_bytes=256 * 1024)
    _workers(procs, server, journal)
    load = Load(server.address, threads=4, per_thread=200).start()
    server = _restart_on_the_same_port(procs, server)
    load.join()

    report = final_report(server.address, load, journal, {Fault.STORE_ERROR})
    assert report.ok, str(report)
    assert report.acknowledged > 0
