"""Workers crash (kill -9) or freeze (SIGSTOP past the lease, then SIGCONT) under load: their attempts are
retried elsewhere, late reports from the frozen one are fenced, and the checker reports zeros. Under process
isolation the handlers' own processes are killed too: their attempts fail as retryable and run again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import journal_worker, read_journal, running_in
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster, Process, ServerProcess, handler_processes, wait_for

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


@pytest.mark.slow
@HANDLERS
def test_handler_processes_killed_under_load(procs: Cluster, tmp_path: Path, handler: str) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    isolating = journal_worker(procs, server, journal, "--isolation", "process", name="isolating", slots=4)
    journal_worker(procs, server, journal, "--isolation", "process", name="steady", slots=4)
    load = Load(server.address, threads=4, per_thread=40, seconds=0.2, handlers=(handler,)).start()
    killed: set[int] = set()
    for round_ in range(1, 4):
        load.wait_acknowledged(30 * round_)
        victim = wait_for(
            lambda: running_in(journal, handler_processes(isolating.popen.pid) - killed),
            timeout_s=30,
            what="a handler running in one of the worker's processes",
        )
        os.kill(victim, signal.SIGKILL)
        killed.add(victim)
    load.join()

    # A handler process's death fails its attempt, and the retry is a new one; the checker allows the killed
    # run's missing end only where the worker reported that attempt failed.
    report = final_report(server.address, load, journal, {Fault.HANDLER_CRASH})
    assert report.ok, str(report)
    assert isolating.popen.poll() is None  # the worker itself carried on
    cut_short = [run for run in read_journal(journal) if run.ended is None]
    assert cut_short, "no kill landed on a running handler"
