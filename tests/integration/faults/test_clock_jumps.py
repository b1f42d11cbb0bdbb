"""The wall clock jumps an hour forward and then back while work runs: leases and timers run on the
monotonic clock, so nothing expires or fires early, and every record stays in order.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.faults.checker import Outcome
from tests.faults.clock import FakeClock
from tests.faults.journal import journal_worker
from tests.faults.scenario import Load, final_report
from tests.harness import Cluster

HOUR = 3600


def _history_in_order(address: str, execution_id: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        events = [
            r.event for r in stub.WatchExecution(tpb.WatchExecutionRequest(execution_id=execution_id), timeout=10)
        ]
        execution = stub.GetExecution(tpb.GetExecutionRequest(execution_id=execution_id), timeout=10).execution
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    times = [e.time.ToNanoseconds() for e in events]
    assert times == sorted(times), f"history times go backwards: {times}"
    for task_run in execution.task_runs:
        for attempt in task_run.attempts:
            assert attempt.ended_at.ToNanoseconds() >= attempt.started_at.ToNanoseconds(), attempt
        assert task_run.ended_at.ToNanoseconds() >= task_run.created_at.ToNanoseconds(), task_run
    assert execution.ended_at.ToNanoseconds() >= execution.created_at.ToNanoseconds(), execution


@pytest.mark.slow
@pytest.mark.parametrize("jumps", [(HOUR, 0), (-HOUR, 0)], ids=["forward-then-back", "back-then-forward"])
def test_the_wall_clock_jumps_an_hour(procs: Cluster, tmp_path: Path, jumps: tuple[int, int]) -> None:
    journal = tmp_path / "journal.jsonl"
    clock = FakeClock(tmp_path)
    server = procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", env=clock.env)
    journal_worker(procs, server, journal, name="w", slots=8)
    load = Load(server.address, threads=4, per_thread=40, seconds=0.05).start()
    for index, offset in enumerate(jumps):
        load.wait_acknowledged(40 * (index + 1))
        clock.shift(offset)  # the server's next clock read sees it
    load.join()

    report = final_report(server.address, load, journal, ())
    assert report.ok, str(report)
    assert "lost its lease" not in server.process.output
    # A submit may end without an answer on a loaded machine (its outcome is then unknown, as the checker
    # allows); none is refused, and the history of every tenth acknowledged one is in order.
    assert not [s for s in load.submissions if s.outcome is Outcome.REFUSED], load.submissions
    acknowledged = [s for s in load.submissions if s.outcome is Outcome.ACKNOWLEDGED]
    for submission in acknowledged[::10]:
        _history_in_order(server.address, submission.execution_id)


@pytest.mark.slow
def test_no_call_is_refused_for_a_deadline_a_wall_clock_step_made_it_miss(procs: Cluster, tmp_path: Path) -> None:
    # gRPC gives the server a caller's deadline on the wall clock: a step forward between the call's arrival
    # and the servicer's reading of its time left made that reading zero, and the submit was refused with
    # DEADLINE_EXCEEDED though its caller had seconds left (about ten in 1,200 here). The clock flips an hour
    # either way every quarter of a millisecond while unary submits with a 5 s deadline arrive; each must be
    # acknowledged.
    journal = tmp_path / "journal.jsonl"
    clock = FakeClock(tmp_path)
    server = procs.server(env=clock.env)
    journal_worker(procs, server, journal, name="w", slots=16)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            clock.shift(HOUR)
            stop.wait(0.00025)
            clock.shift(0)
            stop.wait(0.00025)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        load = Load(server.address, threads=4, per_thread=300, seconds=0).start()
        load.join()
    finally:
        stop.set()
        flipper.join()

    report = final_report(server.address, load, journal, ())
    assert report.ok, str(report)
    missed = Counter(s.outcome for s in load.submissions if s.outcome is not Outcome.ACKNOWLEDGED)
    assert not missed, missed
