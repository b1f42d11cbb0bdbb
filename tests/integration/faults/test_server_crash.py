"""kill -9 of the server under concurrent submits, and again during recovery: nothing acknowledged is
lost, nothing runs twice beyond what the crash allows, nothing is stuck, no slot leaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import journal_worker
from tests.faults.scenario import Load, final_report
from tests.harness import BOTH_STORES, Cluster, ServerProcess

pytestmark = BOTH_STORES

LEASE = ("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


def _restart(procs: Cluster, crashed: ServerProcess) -> ServerProcess:
    return procs.server_at(crashed.address, *LEASE)


@pytest.mark.slow
@pytest.mark.parametrize("crashes", [1, 2], ids=["once", "again-during-recovery"])
def test_server_killed_under_concurrent_submits(procs: Cluster, tmp_path: Path, crashes: int) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    for index in range(2):
        journal_worker(procs, server, journal, name=f"w{index}", slots=8)
    load = Load(server.address, threads=4, per_thread=60, seconds=0.02).start()
    load.wait_acknowledged(40)
    server.process.kill()
    for _ in range(crashes - 1):
        server = _restart(procs, server)
        server.process.kill()  # as soon as it listens: recovery has just run, workers are reconnecting
    server = _restart(procs, server)
    load.join()

    report = final_report(server.address, load, journal, {Fault.SERVER_CRASH})
    assert report.ok, str(report)
    assert report.acknowledged >= 40


@pytest.mark.slow
def test_server_killed_under_streamed_submits(procs: Cluster, tmp_path: Path) -> None:
    """The same through the SDK, whose submits from every thread share one stream: the crash breaks it with
    submits in flight, the SDK opens another to the restarted server and resends those with a key."""
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    for index in range(2):
        journal_worker(procs, server, journal, name=f"w{index}", slots=8)
    load = Load(server.address, threads=8, per_thread=40, seconds=0.02, streamed=True).start()
    load.wait_acknowledged(60)
    server.process.kill()
    server = _restart(procs, server)
    load.join()

    report = final_report(server.address, load, journal, {Fault.SERVER_CRASH})
    assert report.ok, str(report)
    assert report.acknowledged >= 60
