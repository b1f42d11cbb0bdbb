"""Concurrency keys with real processes: 50 tasks of one key with a limit of 2 on 8 free slots never have
more than 2 handlers running, also when a worker is killed with SIGKILL mid-task and its attempt retried.

Two independent views are checked: the handlers' own journal (when each run started and ended, in the
worker processes; a run of a killed worker ends at the kill), and the server's count of the key sampled
from GetStats all along.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from taskwire.client import AttemptOutcome, Client, ExecutionSpec, State, TaskSpec
from taskwire.common import json_payload
from tests.faults.checker import HandlerRun
from tests.faults.journal import journal_worker, read_journal
from tests.harness import BOTH_STORES, Cluster, ServerProcess, wait_for
from tests.integration.workers.support import FINISH

KEY, LIMIT, TASKS = "customer-42", 2, 50


def _most_at_once(runs: list[HandlerRun], killed_at: float) -> int:
    """The most handler runs that overlapped in time (a run with no end died with its worker at `killed_at`)."""
    edges = sorted(
        [(run.started, 1) for run in runs] + [(run.ended if run.ended is not None else killed_at, -1) for run in runs],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


class _Sampler(threading.Thread):
    """Samples the server's count of the key's running attempts until stopped."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            keys = {k.key: k for k in self.client.stats().concurrency_keys}
            self.samples.append(keys[KEY].running if KEY in keys else 0)


@BOTH_STORES
def test_a_key_never_runs_more_than_its_limit_also_when_a_worker_is_killed(
    procs: Cluster, server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    doomed = journal_worker(procs, server, journal, name="doomed", slots=4)
    journal_worker(procs, server, journal, name="steady", slots=4)
    server.wait_for_workers(2)
    work = json_payload({"seconds": 0.2})
    spec = ExecutionSpec(
        tasks=(TaskSpec("journal.work", input=work, concurrency_key=KEY, concurrency_limit=LIMIT),),
    )
    sampler = _Sampler(client)
    sampler.start()
    try:
        results = client.submit_many([spec] * TASKS)
        assert all(result.ok for result in results)
        doomed_pid = str(doomed.popen.pid)

        def doomed_runs_one() -> bool:
            return any(run.worker == doomed_pid and run.ended is None for run in read_journal(journal))

        wait_for(doomed_runs_one, what="an attempt of the key on the worker to kill")
        doomed.popen.kill()
        doomed.popen.wait()
        killed_at = time.time()
        journal_worker(procs, server, journal, name="replacement", slots=4)
        done = [client.wait_finished(result.execution_id, FINISH) for result in results]
    finally:
        sampler.stopped.set()
        sampler.join()

    assert [d.state for d in done] == [State.SUCCESS] * TASKS
    lost = [d for d in done if any(a.outcome is AttemptOutcome.LOST for a in d.task_runs[0].attempts)]
    assert lost, "no attempt was lost with the killed worker: the test proved nothing"
    runs = read_journal(journal)
    assert _most_at_once(runs, killed_at) == LIMIT, "more runs at once than the limit, or never the limit"
    assert sampler.samples, "GetStats was never sampled"
    assert max(sampler.samples) <= LIMIT, max(sampler.samples)
    stats = client.stats()
    assert KEY not in {k.key for k in stats.concurrency_keys}, "the key's places were not all given back"
