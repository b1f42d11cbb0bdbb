"""Idempotency keys: concurrent duplicates make one execution; a key never serves two different requests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import grpc

from tests.harness import BOTH_STORES, Cluster, ServerProcess
from tests.integration.server.support import WAIT_FOR_ROOM, Client, diamond, fails, spec, task

pytestmark = BOTH_STORES

Connect = Callable[[ServerProcess], Client]
DUPLICATES = 50
T = TypeVar("T")


def test_concurrent_duplicates_make_exactly_one_execution(server: ServerProcess, connect: Connect) -> None:
    clients = [connect(server) for _ in range(5)]
    request = spec(task("echo", input={"order": 42}), name="order-42", key="order-42", metadata={"shop": "a"})

    futures = [clients[i % len(clients)].submit_future(request) for i in range(DUPLICATES)]
    responses = [future.result(timeout=30) for future in futures]

    ids = {response.execution.id for response in responses}
    assert len(ids) == 1, f"{len(ids)} executions for one idempotency key"
    created = [response for response in responses if not response.deduplicated]
    assert len(created) == 1, f"{len(created)} responses claim to have created the execution"
    (execution_id,) = ids
    assert all(response.execution.idempotency_key == "order-42" for response in responses)

    listed = clients[0].list_all()
    assert [execution.id for execution in listed] == [execution_id], "one key must make one stored execution"
    assert listed[0].idempotency_key == "order-42"

    # A later identical submit is deduplicated too; the key with another request is a conflict.
    again = clients[0].submit(request)
    assert (again.execution.id, again.deduplicated) == (execution_id, True)
    status = fails(lambda: clients[0].submit(spec(task("echo", input={"order": 43}), key="order-42")))
    assert status.code is grpc.StatusCode.ALREADY_EXISTS, status
    assert "order-42" in status.details, status.details
    assert clients[0].stored_ids() == {execution_id}


def test_duplicates_within_one_batch_share_the_execution(client: Client) -> None:
    results = client.submit_batch(
        [spec(name="x", key="batch-key"), spec(name="x", key="batch-key"), spec(name="y", key="batch-key")]
    ).results
    first, repeat, conflict = results
    assert first.execution_id, first
    assert (first.deduplicated, first.error_code) == (False, ""), first
    assert (repeat.execution_id, repeat.deduplicated, repeat.error_code) == (first.execution_id, True, ""), repeat
    assert (conflict.execution_id, conflict.error_code) == ("", "ALREADY_EXISTS"), conflict
    assert client.stored_ids() == {first.execution_id}


def test_keys_survive_a_restart(procs: Cluster, connect: Connect) -> None:
    before = connect(procs.server())
    active = diamond("keyed-active")
    active.idempotency_key = "active-key"
    finished = spec(name="keyed-finished", key="finished-key")
    active_id = before.submit(active).execution.id
    finished_id = before.submit(finished).execution.id
    before.cancel(finished_id)  # terminal before the restart; the other one is still queued
    assert procs.processes[-1].stop() == 0

    after = connect(procs.server())
    for request, execution_id in ((active, active_id), (finished, finished_id)):
        response = after.submit(request)
        assert (response.execution.id, response.deduplicated) == (execution_id, True), response
    for key in ("active-key", "finished-key"):
        status = fails(partial(after.submit, spec(task("sleep"), key=key)))
        assert status.code is grpc.StatusCode.ALREADY_EXISTS, f"{key}: {status}"
    assert after.stored_ids() == {active_id, finished_id}


def test_a_duplicate_that_waited_for_room_is_deduplicated(procs: Cluster, connect: Connect) -> None:
    """The original is made, finished and gone from memory while its duplicates still wait for room."""
    server = procs.server("--queue-capacity", "1")
    client = connect(server)
    filler = client.submit(spec(name="filler")).execution.id
    keyed = spec(name="keyed", key="waited-key")

    def enqueue_waiter(submit: Callable[[], grpc.Future[T]], position: int) -> grpc.Future[T]:
        future = submit()
        client.wait_for_stats(lambda s: s.queue.waiting_submitters == position, what=f"waiter {position}")
        return future

    original = enqueue_waiter(partial(client.submit_future, keyed, admission=WAIT_FOR_ROOM, timeout_s=60), 1)
    other = enqueue_waiter(partial(client.submit_future, spec(name="other"), admission=WAIT_FOR_ROOM, timeout_s=60), 2)
    duplicate = enqueue_waiter(partial(client.submit_future, keyed, admission=WAIT_FOR_ROOM, timeout_s=60), 3)
    in_batch = enqueue_waiter(partial(client.submit_batch_future, [keyed], admission=WAIT_FOR_ROOM, timeout_s=60), 4)

    client.cancel(filler)
    original_id = original.result(timeout=10).execution.id
    client.cancel(original_id)  # terminal: the server keeps it only in the store from now on
    other_id = other.result(timeout=10).execution.id
    client.cancel(other_id)  # room for the duplicates

    response = duplicate.result(timeout=10)
    assert (response.execution.id, response.deduplicated) == (original_id, True), response
    (result,) = in_batch.result(timeout=10).results
    assert (result.execution_id, result.deduplicated, result.error_code) == (original_id, True, ""), result
    assert server.process.popen.poll() is None, f"the server stopped:\n{server.process.output}"
    assert client.stored_ids() == {filler, original_id, other_id}
    stats = client.stats()
    assert (stats.queue.size, stats.queue.waiting_submitters) == (0, 0), stats
