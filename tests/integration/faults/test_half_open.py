"""A half-open worker stream: a proxy between worker and server stops forwarding without closing. The
server expires the silent worker's lease and retries its work elsewhere; the worker notices the silence,
reconnects, and its late reports change nothing.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from taskwire.client import Client
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


@pytest.mark.slow
def test_a_worker_that_notices_first_gets_its_work_on_the_new_stream_not_a_lease_later(procs: Cluster) -> None:
    """The worker notices the dead stream (keepalive, 1 s) long before the server would (its lease, 60 s): its hello
    on a new stream ends the old session, so that new work does not go down the dead one for a lease."""
    server: ServerProcess = procs.server("--lease-timeout", "60", "--heartbeat-interval", "0.5")
    with StallingProxy(server.address) as proxy:
        behind = start_worker(proxy.address, "--keepalive", "1", slots=4, name="behind")
        procs.processes.append(behind)
        assert proxy.stall() == 1
        wait_for(lambda: _connections(behind.output) >= 2, timeout_s=30, what="the worker to reconnect")
        server.process.wait_for_line(r"worker behind came back on a new stream: its session \S+ ends", timeout_s=10)
        with Client(server.address) as client:
            ids = [client.submit("echo", {"n": n}).id for n in range(8)]
            for n, execution_id in enumerate(ids):
                assert client.wait(execution_id, timedelta(seconds=20)) == {"n": n}


@pytest.mark.slow
def test_a_drain_sent_down_a_stream_that_went_half_open_reaches_the_worker_on_its_next(procs: Cluster) -> None:
    """The operator drains a worker whose stream has just stopped forwarding: the Drain is lost on the way. The
    worker's next stream is told again, so the worker still drains and exits 0."""
    server: ServerProcess = procs.server("--lease-timeout", "60", "--heartbeat-interval", "0.5")
    with StallingProxy(server.address) as proxy:
        behind = start_worker(proxy.address, "--keepalive", "3", slots=4, name="behind")
        procs.processes.append(behind)
        assert proxy.stall() == 1
        with Client(server.address) as client:
            (told,) = client.drain_worker("behind", grace=timedelta(seconds=20), reason="moving to new hardware")
            assert told.draining
        server.process.wait_for_line(r"worker behind came back on a new stream: its session \S+ ends", timeout_s=30)
        assert behind.wait(timeout_s=30) == 0
    assert _connections(behind.output) == 2
    assert "moving to new hardware" in behind.output
