"""A long queue leaves memory: executions waiting untouched are read back from the store at their turn.

`--hot-queue-size 0` makes every durable, untouched PENDING execution cold at once, so these tests
drive the cold path with a handful of executions: dispatch in queue order after a worker connects,
cancel, watch, and a restart that brings the queue back without loading the records.
"""

from __future__ import annotations

from collections.abc import Callable

from taskwire.v1 import types_pb2 as pb
from tests.harness import BOTH_STORES, Cluster, ServerProcess
from tests.integration.server.support import Client, assert_gapless, spec, task

pytestmark = BOTH_STORES

Connect = Callable[[ServerProcess], Client]


def _started_order(client: Client, execution_ids: list[str]) -> list[str]:
    executions = [client.wait_until_terminal(execution_id) for execution_id in execution_ids]
    for execution in executions:
        assert execution.state == pb.EXECUTION_STATE_SUCCESS, execution
    started = {e.id: e.task_runs[0].attempts[0].started_at.ToNanoseconds() for e in executions}
    return sorted(execution_ids, key=started.__getitem__)


def test_cold_executions_are_dispatched_in_queue_order_and_cancel_works(procs: Cluster, connect: Connect) -> None:
    server = procs.server("--hot-queue-size", "0")
    client = connect(server)
    submitted = [client.submit(spec(task("echo", input={"n": n}))).execution.id for n in range(30)]
    cancelled = submitted[7]
    response = client.cancel(cancelled, reason="not this one")
    assert response.execution.state == pb.EXECUTION_STATE_CANCELLED
    assert response.execution.task_runs[0].reason_code == pb.REASON_CODE_EXECUTION_CANCELLED
    assert client.stats().queue.size == 29

    procs.worker(server, slots=1)
    remaining = [execution_id for execution_id in submitted if execution_id != cancelled]
    assert _started_order(client, remaining) == remaining, "the queue lost its order on the way through the store"
    assert client.get(cancelled).state == pb.EXECUTION_STATE_CANCELLED
    history = client.history(remaining[-1])
    assert_gapless(history)
    assert history[0].WhichOneof("body") == "execution_transition"
    assert history[-1].execution_transition.to_state == pb.EXECUTION_STATE_SUCCESS


def test_a_restart_brings_a_cold_queue_back_in_order(procs: Cluster, connect: Connect) -> None:
    first = procs.server("--hot-queue-size", "0")
    before = connect(first)
    submitted = [before.submit(spec(task("echo", input={"n": n}))).execution.id for n in range(12)]
    dependent = before.submit(spec(task("echo", "a"), task("echo", "b", depends_on=["a"]))).execution.id
    assert first.process.stop() == 0, first.process.output

    second = procs.server("--hot-queue-size", "0")
    client = connect(second)
    stats = client.stats()
    assert stats.queue.size == 12 + 2
    assert [(h.handler, h.pending) for h in stats.handlers] == [("echo", 13)]
    procs.worker(second, slots=1)
    assert _started_order(client, submitted) == submitted
    assert client.wait_until_terminal(dependent).state == pb.EXECUTION_STATE_SUCCESS


def test_a_restart_keeps_flow_controlled_task_runs_out_of_the_cold_queue(procs: Cluster, connect: Connect) -> None:
    """A task run of another priority is never cold: after a restart it is back at its
    priority, ahead of the plain queue, not in the plain queue's order at the back."""
    first = procs.server("--hot-queue-size", "0")
    before = connect(first)
    plain = [before.submit(spec(task("echo", input={"n": n}))).execution.id for n in range(8)]
    urgent_task = task("echo", input={"urgent": True})
    urgent_task.priority = 9
    urgent = before.submit(spec(urgent_task)).execution.id
    assert first.process.stop() == 0, first.process.output

    second = procs.server("--hot-queue-size", "0")
    client = connect(second)
    assert client.stats().queue.size == 9
    procs.worker(second, slots=1)
    assert _started_order(client, [*plain, urgent]) == [urgent, *plain]
