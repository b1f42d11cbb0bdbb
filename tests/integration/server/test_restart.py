"""A restart on the same SQLite file loses nothing acknowledged, and queued work runs afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable

from taskwire.v1 import types_pb2 as pb
from tests.harness import BOTH_STORES, Cluster, ServerProcess, wait_for
from tests.integration.server.support import Client, Watcher, assert_gapless, diamond, serialized, spec, task

pytestmark = BOTH_STORES

Connect = Callable[[ServerProcess], Client]


def assert_ran_in_dependency_order(events: list[pb.ExecutionEvent]) -> None:
    """In a diamond a → (b, c) → d, each task started only after the ones it depends on succeeded."""
    position: dict[tuple[str, int], int] = {}
    for index, event in enumerate(events):
        if event.WhichOneof("body") == "task_run_transition":
            change = event.task_run_transition
            position.setdefault((change.task_id, change.to_state), index)
    started = {task_id: position[(task_id, pb.TASK_RUN_STATE_RUNNING)] for task_id in "abcd"}
    succeeded = {task_id: position[(task_id, pb.TASK_RUN_STATE_SUCCESS)] for task_id in "abcd"}
    for before, after in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert succeeded[before] < started[after], f"{after} started before {before} succeeded: {events}"


def test_a_graceful_restart_keeps_every_execution_and_its_history(procs: Cluster, connect: Connect) -> None:
    first = procs.server()
    before_client = connect(first)

    # Half done: "a" ran on a worker, "b" waits for a handler that no worker serves.
    worker = procs.worker(first, slots=1)
    half_done = before_client.submit(
        spec(task("echo", "a"), task("nobody-serves-this", "b", depends_on=["a"]), name="half-done")
    ).execution.id
    wait_for(
        lambda: before_client.get(half_done).task_runs[1].state == pb.TASK_RUN_STATE_PENDING, what="'a' to succeed"
    )
    worker.kill()
    before_client.wait_for_stats(lambda s: s.connected_workers == 0, what="the worker to be gone")
    watcher = Watcher(before_client, half_done)
    # accepted, a RUNNING, execution RUNNING, a SUCCESS, b PENDING
    half_done_history = watcher.wait_for_events(5)
    watcher.close()
    assert half_done_history[-1].task_run_transition.to_state == pb.TASK_RUN_STATE_PENDING

    # Queued: never dispatched, so their history is only their acceptance.
    queued = [
        before_client.submit(spec(task("echo", input={"n": n}), name=f"single-{n}")).execution.id for n in range(3)
    ]
    dags = [before_client.submit(diamond(f"dag-{n}")).execution.id for n in range(2)]
    batch = before_client.submit_batch([spec(name="batched"), diamond("batched-dag")]).results
    queued.append(batch[0].execution_id)
    dags.append(batch[1].execution_id)
    # Finished: its whole history is stored.
    cancelled = before_client.submit(diamond("cancelled")).execution.id
    before_client.cancel(cancelled, reason="not needed")
    cancelled_history = before_client.history(cancelled)
    assert len(cancelled_history) > 1
    everything = [half_done, *queued, *dags, cancelled]
    before = {execution_id: before_client.get(execution_id) for execution_id in everything}
    assert first.process.stop() == 0, first.process.output

    second = procs.server()  # the same database file
    assert second.db_path == first.db_path
    client = connect(second)
    assert client.stored_ids() == set(everything)
    for execution_id, execution in before.items():
        assert client.get(execution_id) == execution, f"{execution.name} changed across the restart"
    assert serialized(client.history(cancelled)) == serialized(cancelled_history), "the replayed history differs"
    watcher = Watcher(client, half_done)
    assert serialized(watcher.wait_for_events(len(half_done_history))) == serialized(half_done_history)

    # The queue was rebuilt: every queued task run counts, PENDING ones by handler.
    stats = client.stats()
    assert stats.queue.size == 1 + len(queued) + 4 * len(dags), stats
    pending = [(h.handler, h.pending) for h in stats.handlers]
    assert pending == [("echo", len(queued) + len(dags)), ("nobody-serves-this", 1)], stats

    # And it is dispatchable again.
    procs.worker(second, slots=4)
    for execution_id in [*queued, *dags]:
        assert client.wait_until_terminal(execution_id).state == pb.EXECUTION_STATE_SUCCESS
        history = client.history(execution_id)
        assert_gapless(history)
        if execution_id in dags:
            assert_ran_in_dependency_order(history)
    for execution_id in queued:
        (run,) = client.get(execution_id).task_runs
        echoed = json.loads(run.attempts[0].output.data)
        assert echoed == json.loads(before[execution_id].task_runs[0].input.data), "echo returned another input"

    # The half-done one goes on from where it was: its history continues without a gap.
    client.cancel(half_done)
    continued = watcher.join()
    assert_gapless(continued)
    assert serialized(continued[: len(half_done_history)]) == serialized(half_done_history)
    assert continued[-1].execution_transition.to_state == pb.EXECUTION_STATE_CANCELLED
    assert client.stats().queue.size == 0


def test_a_kill_right_after_the_acknowledgements_loses_nothing(procs: Cluster, connect: Connect) -> None:
    first = procs.server()
    before_client = connect(first)
    singles = [before_client.submit_future(spec(task("echo", input={"n": n}))) for n in range(25)]
    dags = [before_client.submit_future(diamond(f"dag-{n}")) for n in range(4)]
    batch = before_client.submit_batch_future([spec(name=f"batched-{n}") for n in range(15)])
    acknowledged = {
        response.execution.id: response.execution for response in (f.result(timeout=30) for f in singles + dags)
    }
    batch_ids = [result.execution_id for result in batch.result(timeout=30).results]
    assert all(batch_ids)
    first.process.kill()  # SIGKILL: no chance to flush anything

    second = procs.server()
    client = connect(second)
    assert client.stored_ids() == {*acknowledged, *batch_ids}
    for execution_id, execution in acknowledged.items():
        assert client.get(execution_id) == execution, "an acknowledged execution differs after the crash"

    procs.worker(second, slots=8)
    for execution_id in [*acknowledged, *batch_ids]:
        assert client.wait_until_terminal(execution_id).state == pb.EXECUTION_STATE_SUCCESS
