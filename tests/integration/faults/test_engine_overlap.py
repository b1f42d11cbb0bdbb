"""A handler that ignores its abort outlives its attempt's timeout: the retry never runs beside it on the
same worker, and no refusal costs the user an attempt.

The worker serves this module's `engine.stubborn` (with `--handlers tests.integration.faults.test_engine_overlap`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from taskwire.worker import TaskContext, handler
from tests.faults.checker import Outcome, Submission, check
from tests.faults.journal import JOURNAL_ENV, read_journal
from tests.faults.observe import OP_KEY, slots_in_use, stored_executions
from tests.faults.scenario import quiesce
from tests.harness import Cluster

LEASE = ("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")
STUBBORN_S = 2.5  # attempt 1 runs this long, past its 1 s timeout, whatever the abort says


def _journal(entry: dict[str, object]) -> None:
    with open(os.environ[JOURNAL_ENV], "a") as journal:
        journal.write(json.dumps(entry) + "\n")


@handler("engine.stubborn")
def stubborn(ctx: TaskContext) -> str:
    """Attempt 1 sleeps through its abort (a plain function in a thread: nothing can stop it); later ones
    return at once. Both record their runs in the checker's journal."""
    key = {"e": ctx.execution_id, "t": ctx.task_run_id, "a": ctx.attempt, "w": str(os.getpid())}
    _journal({**key, "ev": "start", "at": time.time()})
    if ctx.attempt == 1:
        time.sleep(STUBBORN_S)
    result = "aborted" if ctx.abort.is_set() else "ok"
    _journal({**key, "ev": "end", "at": time.time(), "result": result})
    ctx.abort.raise_if_aborted()
    return "done"


def _spec(op: str) -> tpb.ExecutionSpec:
    spec = tpb.ExecutionSpec(name=op, metadata={OP_KEY: op}, idempotency_key=op)
    task = spec.tasks.add(task_id="main", handler="engine.stubborn")
    task.timeout.FromSeconds(1)
    task.retry_policy.CopyFrom(pb.RetryPolicy(max_attempts=2))
    task.retry_policy.initial_interval.FromMilliseconds(50)
    return spec


@pytest.mark.slow
def test_the_retry_after_a_server_side_timeout_waits_for_the_stubborn_first_attempt(
    procs: Cluster, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE)
    procs.worker(
        server,
        handlers="tests.integration.faults.test_engine_overlap",
        slots=2,
        name="only",
        env={JOURNAL_ENV: str(journal)},
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        response = stub.SubmitExecution(
            tpb.SubmitExecutionRequest(execution=_spec("op-0")), timeout=10, wait_for_ready=True
        )
    submissions = [Submission("op-0", Outcome.ACKNOWLEDGED, response.execution.id)]

    quiesce(server.address)
    (stored,) = stored_executions(server.address)
    assert stored.state == "SUCCESS", stored
    report = check(
        submissions=submissions,
        stored=[stored],
        runs=read_journal(journal),
        slots_in_use=slots_in_use(server.address),
    )
    assert report.ok, str(report)
    # Attempt 2 waited for attempt 1 to end on the worker, instead of being refused there.
    assert stored.task_runs[0].attempts == ((1, "TIMED_OUT"), (2, "SUCCEEDED"))
