"""The long run: steady load for TASKWIRE_SOAK_SECONDS (an hour in `make soak`) with faults injected at
random — the server killed and restarted, its writer process killed, workers killed and replaced, a worker
frozen past its lease and resumed, a running handler's own process killed — then the checker over everything.
Every other task's handler is a plain function, run in the worker's handler threads; the rest are coroutines.
One worker in three runs its handlers in child processes (process isolation). Skipped unless the variable is
set.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.journal import journal_worker, running_in
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster, Process, ServerProcess, handler_processes, wait_for
from tests.integration.server.test_store_process import writer_of

SECONDS = float(os.environ.get("TASKWIRE_SOAK_SECONDS", "0"))
LEASE = ("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--cancel-grace", "2")

pytestmark = pytest.mark.skipif(not SECONDS, reason="set TASKWIRE_SOAK_SECONDS (make soak)")


class Fleet:
    def __init__(self, procs: Cluster, journal: Path) -> None:
        self.procs = procs
        self.journal = journal
        self.server: ServerProcess = procs.server(*LEASE)
        self.workers: list[Process] = [self._worker(index) for index in range(3)]
        self.started = 3

    def _worker(self, index: int) -> Process:
        isolation = ("--isolation", "process") if index % 3 == 2 else ()
        return journal_worker(self.procs, self.server, self.journal, *isolation, name=f"soak{index}", slots=8)

    def restart_server(self) -> None:
        self.server.process.wait(timeout_s=60)
        self.server = self.procs.server_at(self.server.address, *LEASE)

    def kill_server(self) -> None:
        self.server.process.kill()
        self.restart_server()

    def kill_writer(self) -> None:
        os.kill(writer_of(self.server), signal.SIGKILL)
        self.restart_server()

    def kill_worker(self, rng: random.Random) -> None:
        victim = self.workers.pop(rng.randrange(len(self.workers)))
        victim.kill()
        self.workers.append(self._worker(self.started))
        self.started += 1

    def kill_handler_process(self) -> None:
        def running() -> int | None:
            children = {child for worker in self.workers for child in handler_processes(worker.popen.pid)}
            return running_in(self.journal, children)

        os.kill(wait_for(running, timeout_s=30, what="a running handler process"), signal.SIGKILL)

    def freeze_worker(self, rng: random.Random) -> None:
        victim = rng.choice(self.workers)
        victim.signal(signal.SIGSTOP)
        time.sleep(5)  # the fault is the span: longer than the 3 s lease
        victim.signal(signal.SIGCONT)


def test_an_hour_of_load_with_faults(procs: Cluster, tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("TASKWIRE_SOAK_SEED", "taskwire"))
    journal = tmp_path / "journal.jsonl"
    fleet = Fleet(procs, journal)
    load = Load(
        fleet.server.address,
        threads=4,
        per_thread=None,
        seconds=0.05,
        pace_s=0.01,
        handlers=("journal.work", "journal.work_sync"),
    ).start()
    faults: dict[Fault, Callable[[], None]] = {
        Fault.SERVER_CRASH: fleet.kill_server,
        Fault.STORE_ERROR: fleet.kill_writer,
        Fault.WORKER_CRASH: lambda: fleet.kill_worker(rng),
        Fault.WORKER_PAUSE: lambda: fleet.freeze_worker(rng),
        Fault.HANDLER_CRASH: fleet.kill_handler_process,
    }
    injected: list[Fault] = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(10, 30))  # steady load between faults
        fault = rng.choice(list(faults))
        faults[fault]()
        injected.append(fault)
    load.stop()
    load.join()

    report = final_report(fleet.server.address, load, journal, set(injected), quiesce_s=300)
    print(f"soak: {SECONDS:.0f}s, faults {', '.join(injected)}\n{report}")
    assert report.ok, str(report)
