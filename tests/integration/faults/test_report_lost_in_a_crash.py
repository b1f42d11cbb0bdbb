"""Defect: a task stuck RUNNING for a whole lease after a server crash. The worker's terminal report reaches
the server, which dies before the report is durable; the restarted server holds the attempt for the worker,
whose next hello leaves it out (the report went to the dead server). The attempt must be lost at once and
retried, not a lease later: the lease here is five minutes, longer than the checker waits.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import pytest

from taskwire.client import Client
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.faults.checker import Fault, Outcome, Submission
from tests.faults.journal import journal_worker, read_journal
from tests.faults.scenario import Load, final_report, journal_spec
from tests.harness import SQLITE_ONLY, Cluster, wait_for
from tests.integration.server.test_store_process import writer_of

pytestmark = SQLITE_ONLY

LEASE = ("--lease-timeout", "300", "--heartbeat-interval", "0.5")


@pytest.mark.slow
def test_a_report_that_died_with_the_server_is_retried_at_the_workers_return(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    journal_worker(procs, server, journal, name="w", slots=2)
    load = Load(server.address, threads=0)
    with grpc.insecure_channel(server.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)

        def submit(op: str, seconds: float) -> str:
            spec = journal_spec(op, seconds=seconds)
            execution_id = stub.SubmitExecution(tpb.SubmitExecutionRequest(execution=spec), timeout=10).execution.id
            load.submissions.append(Submission(op, Outcome.ACKNOWLEDGED, execution_id))
            return execution_id

        slow = submit("op-slow", 1.0)
        wait_for(lambda: any(run.execution_id == slow for run in read_journal(journal)), what="the handler to start")
        # Acknowledged means durable, and commits keep their order: the slow task's dispatch is durable now.
        submit("op-barrier", 0)
    # The writer stops committing: the slow task's end, reported from here on, is in memory only.
    writer = writer_of(server)
    os.kill(writer, signal.SIGSTOP)
    # Both slots free: the server read both terminal reports (a slot is held until its attempt's report).
    wait_for(lambda: server.stats().free_slots == 2, what="the reports to reach the server")
    server.process.kill()
    os.kill(writer, signal.SIGKILL)

    server = procs.server_at(server.address, *LEASE)
    report = final_report(server.address, load, journal, {Fault.SERVER_CRASH})
    assert report.ok, str(report)
    server.process.wait_for_line(r"worker w came back without attempt \S+#1: it is lost", timeout_s=1)
    with Client(server.address) as client:
        (task_run,) = client.get(slow).task_runs
    assert [attempt.outcome.name for attempt in task_run.attempts] == ["LOST", "SUCCEEDED"]
    lost = task_run.attempts[0].error
    assert lost is not None
    assert lost.message == "worker w reconnected without it: its report was lost with the stream or the server"
