"""Admission to the bounded queue: fail-fast refuses at once, wait-for-room waits for room or its deadline.

No worker is connected unless a test says so, so submitted task runs stay queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import grpc

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.harness import Cluster, ServerProcess
from tests.integration.server.support import (
    FAIL_FAST,
    WAIT_FOR_ROOM,
    Client,
    diamond,
    fails,
    spec,
    status_of,
    task,
)

Connect = Callable[[ServerProcess], Client]
# A refused fail-fast submit answers at once; a call that took this long waited for something.
AT_ONCE_S = 3.0


def test_fail_fast_beyond_capacity_is_refused_at_once_and_nothing_is_stored(procs: Cluster, connect: Connect) -> None:
    client = connect(procs.server("--queue-capacity", "3"))
    admitted = [client.submit(spec(name="first")).execution.id]
    # ADMISSION_MODE_UNSPECIFIED means fail-fast.
    admitted.append(client.submit(spec(name="second"), admission=tpb.ADMISSION_MODE_UNSPECIFIED).execution.id)
    # Two task runs do not fit in the one free place: the whole execution is refused.
    status = fails(lambda: client.submit(spec(task("echo", "x"), task("echo", "y"), key="too-big")))
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED, status
    assert "2 of 3" in status.details, f"the message should give the size and the capacity: {status.details!r}"
    admitted.append(client.submit(spec(name="third")).execution.id)

    for mode in (FAIL_FAST, tpb.ADMISSION_MODE_UNSPECIFIED):
        for attempt in range(3):
            started = time.monotonic()
            refused = spec(name="refused", key=f"refused-{attempt}")
            status = fails(partial(client.submit, refused, admission=mode))
            elapsed = time.monotonic() - started
            assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED, status
            assert "3 of 3" in status.details, f"the message should give the size and the capacity: {status.details!r}"
            assert elapsed < AT_ONCE_S, f"a fail-fast submit took {elapsed:.2f}s to be refused"

    assert client.stored_ids() == set(admitted), "only the admitted executions may be stored"
    for execution_id in admitted:
        assert client.get(execution_id).state == pb.EXECUTION_STATE_PENDING
    stats = client.stats()
    assert (stats.queue.size, stats.queue.capacity, stats.queue.full) == (3, 3, True), stats
    assert stats.queue.waiting_submitters == 0

    # The refused submits left no trace: their idempotency keys are still free for another request.
    client.cancel(admitted[0])
    fresh = client.submit(spec(task("sleep", input={"seconds": 1}), key="refused-0"))
    assert not fresh.deduplicated
    assert fresh.execution.id not in admitted
    assert client.stored_ids() == {*admitted, fresh.execution.id}


def test_wait_for_room_resumes_when_a_cancel_frees_room(procs: Cluster, connect: Connect) -> None:
    client = connect(procs.server("--queue-capacity", "2"))
    queued = [client.submit(spec(name=f"queued-{i}")).execution.id for i in range(2)]

    waiter = client.submit_future(spec(name="waiter", key="waiter"), admission=WAIT_FOR_ROOM, timeout_s=30)
    client.wait_for_stats(lambda s: s.queue.waiting_submitters == 1, what="the submit to wait for room")
    assert not waiter.done(), "a wait-for-room submit returned although the queue was full"
    assert client.stored_ids() == set(queued), "a waiting submit must store nothing yet"

    client.cancel(queued[0], reason="make room")
    response = waiter.result(timeout=10)
    assert not response.deduplicated
    assert response.execution.state == pb.EXECUTION_STATE_PENDING
    assert client.stored_ids() == {*queued, response.execution.id}
    stats = client.stats()
    assert (stats.queue.size, stats.queue.waiting_submitters) == (2, 0), stats


def test_wait_for_room_resumes_when_a_worker_takes_work(procs: Cluster, connect: Connect) -> None:
    server = procs.server("--queue-capacity", "1")
    client = connect(server)
    first = client.submit(spec(task("echo", input={"n": 1}))).execution.id

    waiter = client.submit_future(spec(task("echo", input={"n": 2})), admission=WAIT_FOR_ROOM, timeout_s=30)
    client.wait_for_stats(lambda s: s.queue.waiting_submitters == 1, what="the submit to wait for room")
    assert not waiter.done()

    procs.worker(server, slots=1)
    second = waiter.result(timeout=20).execution.id
    for execution_id in (first, second):
        assert client.wait_until_terminal(execution_id).state == pb.EXECUTION_STATE_SUCCESS
    assert client.stored_ids() == {first, second}


def test_wait_for_room_fails_with_deadline_exceeded_and_stores_nothing(procs: Cluster, connect: Connect) -> None:
    client = connect(procs.server("--queue-capacity", "1"))
    queued = client.submit(spec()).execution.id

    started = time.monotonic()
    future = client.submit_future(spec(name="late", key="late"), admission=WAIT_FOR_ROOM, timeout_s=1.5)
    status = status_of(future.exception(timeout=20))
    elapsed = time.monotonic() - started
    assert status.code is grpc.StatusCode.DEADLINE_EXCEEDED, status
    assert elapsed >= 1.0, f"the submit gave up after {elapsed:.2f}s instead of waiting for its deadline"

    stats = client.stats()
    assert (stats.queue.size, stats.queue.waiting_submitters) == (1, 0), stats
    assert client.stored_ids() == {queued}
    # Its idempotency key was not taken either.
    client.cancel(queued)
    fresh = client.submit(spec(task("sleep"), key="late"))
    assert not fresh.deduplicated
    assert client.stored_ids() == {queued, fresh.execution.id}


def test_a_batch_is_admitted_whole_or_not_at_all(procs: Cluster, connect: Connect) -> None:
    client = connect(procs.server("--queue-capacity", "4"))
    filler = client.submit(spec(name="filler")).execution.id

    # 1 + 4 task runs need five places; three are free: nothing of the batch is admitted.
    status = fails(lambda: client.submit_batch([spec(name="small"), diamond()]))
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED, status
    assert "1 of 4" in status.details, status.details
    assert client.stored_ids() == {filler}

    # A batch whose valid items fit: each item is validated on its own, the valid ones are admitted.
    response = client.submit_batch([spec(name="ok-1"), spec(task("")), spec(name="ok-2")])
    ok_1, bad, ok_2 = response.results
    assert (bad.execution_id, bad.error_code) == ("", "INVALID_ARGUMENT"), bad
    assert bad.error_message.startswith("executions[1].tasks[0].handler:"), bad.error_message
    for ok in (ok_1, ok_2):
        assert ok.execution_id, ok
        assert not ok.error_code, ok
    admitted = {filler, ok_1.execution_id, ok_2.execution_id}
    assert client.stored_ids() == admitted
    assert client.stats().queue.size == 3

    # A waiting batch of two needs two places; one is free, and it must not be admitted in part.
    waiter = client.submit_batch_future(
        [spec(name="wait-1"), spec(name="wait-2")], admission=WAIT_FOR_ROOM, timeout_s=30
    )
    client.wait_for_stats(lambda s: s.queue.waiting_submitters == 1, what="the batch to wait for room")
    assert not waiter.done()
    assert client.stored_ids() == admitted, "a batch was stored in part while it waited for room"
    assert client.stats().queue.size == 3

    client.cancel(filler)
    results = waiter.result(timeout=10).results
    assert [r.error_code for r in results] == ["", ""], results
    admitted |= {r.execution_id for r in results}
    assert client.stored_ids() == admitted
    assert client.stats().queue.size == 4

    # A waiting batch whose deadline passes stores nothing.
    future = client.submit_batch_future([spec(name="late")], admission=WAIT_FOR_ROOM, timeout_s=1.0)
    assert status_of(future.exception(timeout=20)).code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.stored_ids() == admitted
    assert client.stats().queue.waiting_submitters == 0
