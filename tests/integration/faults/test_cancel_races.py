"""Cancel raced against every stage of a task: while queued, as it is dispatched, while it runs, as it
finishes, and after it ended. Every execution ends (CANCELLED, or SUCCESS when the handler won the race),
a cancelled handler saw its abort, and the checker reports zeros.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc, types_pb2
from tests.faults.checker import Outcome, Submission, check
from tests.faults.journal import journal_worker, read_journal
from tests.faults.observe import stored_executions
from tests.faults.scenario import journal_spec, quiesce
from tests.harness import Cluster, wait_for

COUNT = 160
HANDLER_S = 0.04
ENDED = {types_pb2.EXECUTION_STATE_SUCCESS, types_pb2.EXECUTION_STATE_FAILED, types_pb2.EXECUTION_STATE_CANCELLED}


def ended(stub: task_service_pb2_grpc.TaskServiceStub, execution_id: str) -> bool:
    execution = stub.GetExecution(tpb.GetExecutionRequest(execution_id=execution_id), timeout=10).execution
    return execution.state in ENDED


@pytest.mark.slow
def test_cancel_at_every_stage(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")
    journal_worker(procs, server, journal, name="racer", slots=4)
    submissions: list[Submission] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        op = f"op-{index}"
        # Delays from 0 to about 2.5 handler durations: some cancels find the task queued (four slots for
        # many submits), some as it starts, some mid-run, some as it ends, some after.
        delay_s = (index % 40) * HANDLER_S / 16
        with grpc.insecure_channel(server.address) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            response = stub.SubmitExecution(
                tpb.SubmitExecutionRequest(execution=journal_spec(op, seconds=HANDLER_S, max_attempts=1)), timeout=10
            )
            with lock:
                submissions.append(Submission(op, Outcome.ACKNOWLEDGED, response.execution.id))
            if index % 40 == 39:
                # The last stage without timing: the cancel comes after the execution ended, however slow the
                # machine, so a handler that won its race is always among the outcomes.
                wait_for(lambda: ended(stub, response.execution.id), what="the execution to end")
            time.sleep(delay_s)  # the race itself: a cancel sent this long after the submit was acknowledged
            stub.CancelExecution(
                tpb.CancelExecutionRequest(execution_id=response.execution.id, reason="race"), timeout=10
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(race, range(COUNT)))
    quiesce(server.address)

    stored = stored_executions(server.address)
    runs = read_journal(journal)
    report = check(submissions=submissions, stored=stored, runs=runs)
    assert report.ok, str(report)
    states = {execution.state for execution in stored}
    assert states <= {"CANCELLED", "SUCCESS"}, states
    cancelled = [e for e in stored if e.state == "CANCELLED"]
    never_ran = [e for e in cancelled if e.task_runs[0].task_run_id not in {run.task_run_id for run in runs}]
    # The delays cover every stage: some cancels found the task queued, some running, and some came too late.
    assert never_ran, "no cancel found its task still queued"
    assert len(never_ran) < len(cancelled), "no cancel reached a running handler"
    assert "SUCCESS" in states, "no handler finished before its cancel"
    by_task_run = {run.task_run_id: run for run in runs}
    for execution in stored:
        (task_run,) = execution.task_runs
        run = by_task_run.get(task_run.task_run_id)
        if execution.state == "CANCELLED" and run is not None:
            assert run.result in {"aborted", "ok"}, run  # started: aborted, or finished as the cancel arrived
        if execution.state == "SUCCESS":
            assert run is not None, task_run
            assert run.result == "ok", run
