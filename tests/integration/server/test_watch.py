"""WatchExecution: stored events after after_sequence, then live ones, ending after the terminal event."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from taskwire.v1 import types_pb2 as pb
from tests.harness import BOTH_STORES, Cluster, ServerProcess, wait_for
from tests.integration.server.support import (
    TERMINAL_STATES,
    Client,
    Watcher,
    assert_gapless,
    serialized,
    sleeper,
    spec,
    task,
)

pytestmark = BOTH_STORES

Connect = Callable[[ServerProcess], Client]


def is_terminal(event: pb.ExecutionEvent) -> bool:
    return event.WhichOneof("body") == "execution_transition" and event.execution_transition.to_state in TERMINAL_STATES


def test_concurrent_watchers_get_the_same_live_history(procs: Cluster, connect: Connect) -> None:
    server = procs.server("--cancel-grace", "5")
    client = connect(server)
    procs.worker(server, slots=1)
    execution_id = client.submit(sleeper(120, name="long")).execution.id
    wait_for(lambda: client.get(execution_id).state == pb.EXECUTION_STATE_RUNNING, what="the execution to be RUNNING")

    watchers = [Watcher(connect(server), execution_id) for _ in range(2)]
    # Both have the acceptance and dispatch events (execution PENDING, task run RUNNING, execution RUNNING)
    # and are waiting for more.
    wait_for(lambda: all(len(w.events) >= 3 for w in watchers), what="both watchers to replay the history")
    late = Watcher(connect(server), execution_id, after_sequence=1)
    wait_for(lambda: len(late.events) >= 1, what="the late watcher to replay from sequence 2")
    assert not any(w.ended.is_set() for w in [*watchers, late]), "a watch ended before the execution did"
    seen_before_cancel = [len(w.events) for w in watchers]

    # Everything from here on happens after the streams were open: it can only arrive live.
    client.cancel(execution_id, reason="stop watching")
    first, second = (w.join() for w in watchers)

    assert serialized(first) == serialized(second), "two watchers saw different histories"
    assert_gapless(first)
    assert len(first) > max(seen_before_cancel), "no event arrived live"
    assert is_terminal(first[-1]), first[-1]
    assert first[-1].execution_transition.to_state == pb.EXECUTION_STATE_CANCELLED
    assert not any(is_terminal(event) for event in first[:-1]), "events after the terminal one"
    kinds = [event.WhichOneof("body") for event in first]
    assert kinds[:3] == ["execution_transition", "task_run_transition", "execution_transition"], kinds
    accepted = first[0].execution_transition
    assert (accepted.from_state, accepted.to_state) == (pb.EXECUTION_STATE_UNSPECIFIED, pb.EXECUTION_STATE_PENDING)
    assert all(event.execution_id == execution_id for event in first)
    times = [event.time.ToNanoseconds() for event in first]
    assert times == sorted(times), "event times go backwards"

    assert serialized(late.join()) == serialized(first[1:]), "after_sequence=1 should skip exactly the first event"
    # A watcher that comes after the end replays the same history from the store, then ends.
    assert serialized(client.history(execution_id)) == serialized(first)


def test_replay_after_a_sequence_number(procs: Cluster, connect: Connect) -> None:
    server = procs.server()
    client = connect(server)
    procs.worker(server, slots=2)
    execution = spec(
        task("progress", "steps", input={"steps": 3, "interval": 0.01}),
        task("echo", "after", input={"done": True}, depends_on=["steps"]),
    )
    execution_id = client.submit(execution).execution.id
    assert client.wait_until_terminal(execution_id).state == pb.EXECUTION_STATE_SUCCESS

    full = client.history(execution_id)
    assert_gapless(full)
    kinds = {event.WhichOneof("body") for event in full}
    assert kinds == {"execution_transition", "task_run_transition", "progress", "log"}, kinds
    assert is_terminal(full[-1])
    assert not any(is_terminal(event) for event in full[:-1])
    last = full[-1].sequence
    for after in (1, 2, len(full) // 2, last - 1):
        tail = client.history(execution_id, after_sequence=after)
        assert serialized(tail) == serialized(full[after:]), f"after_sequence={after}"
        assert tail[0].sequence == after + 1
    # Nothing after the last event: the stream ends at once, empty.
    assert client.history(execution_id, after_sequence=last) == []
    assert client.history(execution_id, after_sequence=last + 10) == []


def test_a_watch_opened_before_the_first_event_follows_to_the_end(client: Client) -> None:
    execution_id = client.submit(spec(task("echo", "a"), task("echo", "b", depends_on=["a"]))).execution.id
    watcher = Watcher(client, execution_id)  # nothing has happened yet: no worker is connected
    assert not watcher.ended.is_set()
    client.cancel(execution_id)
    events = watcher.join()
    assert_gapless(events)
    assert is_terminal(events[-1])
    assert events[-1].execution_transition.to_state == pb.EXECUTION_STATE_CANCELLED
    cancelled_runs = {
        event.task_run_transition.task_id
        for event in events
        if event.WhichOneof("body") == "task_run_transition"
        and event.task_run_transition.to_state == pb.TASK_RUN_STATE_CANCELLED
    }
    assert cancelled_runs == {"a", "b"}


def test_watches_opened_as_executions_finish_always_end_with_the_terminal_event(
    procs: Cluster, connect: Connect
) -> None:
    # Each watch opens right after its submit, while a worker is already finishing the echo: the
    # terminal event lands during the watch's own replay from the store, live, or just between the
    # two, and in every case the stream must deliver it before it ends.
    server = procs.server()
    procs.worker(server, slots=8)

    def submit_and_watch(_: int) -> list[pb.ExecutionEvent]:
        client = connect(server)
        return client.history(client.submit(spec()).execution.id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        histories = list(pool.map(submit_and_watch, range(160)))
    for history in histories:
        assert history, "an empty history"
        assert is_terminal(history[-1]), f"a watch ended without its terminal event: {history[-1]}"
        assert_gapless(history)
