"""A half-open worker stream: a proxy between worker and server stops forwarding without closing. The
server expires the silent worker's lease and retries its work elsewhere; the worker notices the silence,
reconnects, and its late reports change nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import HANDLERS, journal_env, journal_worker
from tests.faults.proxy import StallingProxy
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster, ServerProcess, start_worker, wait_for

LEASE = ("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


def _connections(output: str) -> int:
    return sum("taskwire.worker: connected to" in line for line in output.splitlines())


@pytest.mark.slow
def test_a_stream_that_stops_forwarding_without_closing(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    env = journal_env(journal)
    server: ServerProcess = procs.server(*LEASE)
    with StallingProxy(server.address) as proxy:
        behind = start_worker(proxy.address, handlers=HANDLERS, slots=4, name="behind", env=env)
        procs.processes.append(behind)
        journal_worker(procs, server, journal, name="direct", slots=4)
        load = Load(server.address, threads=4, per_thread=30, seconds=0.2).start()
        load.wait_acknowledged(20)
        assert proxy.stall() >= 1
        server.process.wait_for_line(r"worker behind lost its lease", timeout_s=20)
        # The worker hears nothing either: it must notice, drop the dead stream and connect again.
        wait_for(lambda: _connections(behind.output) >= 2, timeout_s=40, what="the worker to reconnect")
        load.join()

        report = final_report(server.address, load, journal, {Fault.PARTITION})
    assert report.ok, str(report)
