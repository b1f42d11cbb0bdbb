"""Defect: tasks stuck RUNNING forever after a server crash. The server dies after sending an invocation
but before that dispatch is durable; the restarted server dispatches the task again with the same attempt
number while the worker is still stopping its first copy. The task must end SUCCESS, the worker's slot
must come back, and the checker must report zeros.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.faults.checker import Fault, Outcome, Submission
from tests.faults.journal import journal_worker
from tests.faults.scenario import Load, final_report, journal_spec
from tests.harness import SQLITE_ONLY, Cluster, wait_for
from tests.integration.server.test_store_process import writer_of

pytestmark = SQLITE_ONLY

LEASE = ("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--cancel-grace", "2")


def _started(journal: Path, task_run_id: str) -> int:
    if not journal.exists():
        return 0
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    return sum(1 for line in lines if line["t"] == task_run_id and line["ev"] == "start")


@pytest.mark.slow
def test_a_dispatch_lost_in_a_crash_is_run_again_and_ends(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    with grpc.insecure_channel(server.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        submitted = stub.SubmitExecution(
            tpb.SubmitExecutionRequest(execution=journal_spec("op-0", seconds=1.5, max_attempts=1)), timeout=10
        ).execution
    task_run_id = submitted.task_runs[0].id
    # The writer process stops committing: what the server does from here is in memory only.
    writer = writer_of(server)
    os.kill(writer, signal.SIGSTOP)
    worker = journal_worker(procs, server, journal, name="w", slots=1)
    wait_for(lambda: _started(journal, task_run_id) >= 1, what="the handler to start")
    server.process.kill()
    os.kill(writer, signal.SIGKILL)

    server = procs.server_at(server.address, *LEASE)
    load = Load(server.address, threads=0)
    load.submissions.append(Submission("op-0", Outcome.ACKNOWLEDGED, submitted.id))
    report = final_report(server.address, load, journal, {Fault.SERVER_CRASH})
    assert report.ok, str(report)
    assert server.stats().free_slots == 1, "the worker's slot did not come back"
    assert worker.popen.poll() is None
