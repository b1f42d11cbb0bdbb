"""Server restarts under load: a SIGTERM (graceful), and a kill -9 with twenty workers connected. Nothing
acknowledged is lost, nothing runs twice beyond what the fault allows, nothing is stuck.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import HANDLERS, journal_env, journal_worker
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster, Process, ServerProcess, spawn, wait_for

LEASE = ("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


def _restart(procs: Cluster, stopped: ServerProcess) -> ServerProcess:
    return procs.server_at(stopped.address, *LEASE)


def _connections(worker: Process) -> int:
    return sum("taskwire.worker: connected to" in line for line in worker.output.splitlines())


@pytest.mark.slow
def test_sigterm_under_load_then_a_restart(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE, "--shutdown-grace", "2")
    workers = [journal_worker(procs, server, journal, name=f"w{index}") for index in range(2)]
    load = Load(server.address, threads=4, per_thread=30, seconds=0.2).start()
    load.wait_acknowledged(30)
    server.process.signal(signal.SIGTERM)
    assert server.process.wait(timeout_s=30) == 0, server.process.output
    going = [w.wait_for_line(r"the server is going away .*; (\d+) attempt") for w in workers]
    assert any(int(line[1]) > 0 for line in going), "no attempt was running at the SIGTERM"
    server = _restart(procs, server)
    # The workers stay: they were told the server was going away, kept their attempts and reconnect.
    wait_for(lambda: all(_connections(w) >= 2 for w in workers), timeout_s=30, what="the workers to reconnect")
    load.join()

    # A graceful restart is no crash: nothing may run twice, so the checker allows no fault at all.
    report = final_report(server.address, load, journal, set())
    assert report.ok, str(report)
    assert all(w.popen.poll() is None for w in workers), [w.output for w in workers]
    assert server.stats().connected_workers == 2


@pytest.mark.slow
def test_a_restart_with_twenty_workers(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    env = journal_env(journal)
    server = procs.server(*LEASE)
    # Started together, then waited for, so twenty interpreters start in parallel rather than in turn.
    workers = [
        spawn(
            [
                str(Path(server.process.args[0]).parent / "taskwire-worker"),
                "--server",
                server.address,
                "--handlers",
                HANDLERS,
                "--slots",
                "2",
                "--name",
                f"fleet{index}",
            ],
            env=env,
        )
        for index in range(20)
    ]
    procs.processes.extend(workers)
    wait_for(lambda: all(_connections(w) >= 1 for w in workers), timeout_s=60, what="twenty workers to connect")
    load = Load(server.address, threads=4, per_thread=40, seconds=0.1).start()
    load.wait_acknowledged(40)
    server.process.kill()
    server = _restart(procs, server)
    wait_for(lambda: all(_connections(w) >= 2 for w in workers), timeout_s=60, what="twenty workers to reconnect")
    load.join()

    report = final_report(server.address, load, journal, {Fault.SERVER_CRASH})
    assert report.ok, str(report)
    assert server.stats().connected_workers == 20
