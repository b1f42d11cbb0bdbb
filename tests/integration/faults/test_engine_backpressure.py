"""A worker that heartbeats but never reads its stream: the server's memory stays bounded, the work is not
held hostage (a normal worker started alongside gets it: what the deaf one was sent and did not run is retried
there, never sent back to the deaf one), and the checker reports zeros."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from pathlib import Path

import grpc
import grpc.aio
import psutil
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc, worker_service_pb2_grpc
from taskwire.v1 import worker_service_pb2 as wpb
from tests.faults.checker import Outcome, Submission, check
from tests.faults.journal import journal_worker, read_journal
from tests.faults.observe import attempt_workers, slots_in_use, stored_executions
from tests.faults.scenario import journal_spec, quiesce
from tests.harness import Cluster, wait_for

LEASE = ("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")
TASKS = 600
PAD = "x" * (256 * 1024)  # 150 MiB of inputs in all
# Blocks of 128 KiB and more (each input, and what is made from it) mapped on their own and returned when freed,
# rather than kept in the heap by the allocator's rising threshold: the RSS then follows what the server holds.
MEASURED_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


async def _deaf_worker(address: str, stop: threading.Event) -> None:
    """Says hello with many slots, reads the welcome, then only heartbeats: it never reads again."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = worker_service_pb2_grpc.WorkerServiceStub(channel).Connect()
        hello = wpb.WorkerHello(name="deaf", instance_id=str(uuid.uuid4()), handlers=["journal.work"], slots=5000)
        await call.write(wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)]))
        await call.read()
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            while not stop.is_set():
                await call.write(wpb.ConnectRequest(messages=[wpb.WorkerMessage(heartbeat=wpb.Heartbeat())]))
                await asyncio.sleep(0.2)  # the heartbeat interval: a fault made of time
        call.cancel()


def _backlog(stub: task_service_pb2_grpc.TaskServiceStub) -> int:
    return stub.GetStats(tpb.GetStatsRequest(), timeout=10).queue.size


@pytest.mark.slow
def test_a_worker_that_never_reads_holds_no_work_hostage(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    server = procs.server(*LEASE, env=MEASURED_HEAP)
    rss = psutil.Process(server.process.popen.pid)
    stop = threading.Event()
    deaf = threading.Thread(target=asyncio.run, args=(_deaf_worker(server.address, stop),), daemon=True)
    deaf.start()
    before = rss.memory_info().rss
    journal_worker(procs, server, journal, name="normal", slots=8)
    peak = before
    submissions = []
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            for index in range(TASKS):
                op = f"op-{index}"
                spec = journal_spec(op)
                spec.tasks[0].input.data = f'{{"seconds": 0, "pad": "{PAD}"}}'.encode()
                response = stub.SubmitExecution(tpb.SubmitExecutionRequest(execution=spec), timeout=10)
                submissions.append(Submission(op, Outcome.ACKNOWLEDGED, response.execution.id))
                peak = max(peak, rss.memory_info().rss)
                # Paced by the normal worker, however slow the machine, so what the server holds is at most a
                # few queued inputs plus whatever it might buffer for the deaf one: the figure under test.
                wait_for(lambda: _backlog(stub) <= 8, what="the normal worker to keep up")
        quiesce(server.address)
        peak = max(peak, rss.memory_info().rss)
    finally:
        stop.set()
        deaf.join(10)

    # Far less than the inputs that went through it: what it holds is bounded, not what it was sent.
    assert peak - before < 80 * 1024 * 1024, f"the server grew by {(peak - before) / 2**20:.0f} MiB"
    stored = stored_executions(server.address)
    assert {execution.state for execution in stored} == {"SUCCESS"}
    sent_back = [workers for workers in attempt_workers(server.address).values() if workers.count("deaf") > 1]
    assert not sent_back, f"retries sent back to the worker that lost them: {sent_back[:3]}"
    report = check(
        submissions=submissions, stored=stored, runs=read_journal(journal), slots_in_use=slots_in_use(server.address)
    )
    assert report.ok, str(report)
