"""Slots are never exceeded, and never left idle while work is queued.

Concurrency is measured twice: from the attempts' start and end times as the server recorded them,
and from GetStats / ListWorkers sampled while the backlog drains.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from taskwire.client import Attempt, AttemptOutcome, Client, ExecutionSpec, State, TaskSpec, to_payload
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import (
    FINISH,
    Sample,
    Sampler,
    ended,
    max_overlap,
    only_run,
    wait_until_running,
)

TASK_S = 0.3
# A slot freed while work is queued must be refilled at once, not on some later tick (a heartbeat is 0.5 s).
MAX_IDLE_SLOT_S = 0.25


def sleeps(count: int) -> list[ExecutionSpec]:
    spec = ExecutionSpec(tasks=(TaskSpec(handler="sleep", input=to_payload({"seconds": TASK_S})),))
    return [spec] * count


def run_all(client: Client, server: ServerProcess, count: int) -> tuple[list[Attempt], list[Sample]]:
    """Submit `count` short sleeps in one batch, sampling stats until all are done; returns every attempt."""
    sampler = Sampler(server)
    try:
        results = client.submit_many(sleeps(count))
        assert all(result.ok for result in results), results
        done = [client.wait_finished(result.execution_id, FINISH) for result in results]
    finally:
        samples = sampler.stop()
    attempts: list[Attempt] = []
    for execution in done:
        run = only_run(execution)
        assert execution.state is State.SUCCESS, execution
        assert [attempt.outcome for attempt in run.attempts] == [AttemptOutcome.SUCCEEDED], run
        attempts.extend(run.attempts)
    return attempts, samples


def idle_gaps(attempts: Sequence[Attempt], slots: int) -> list[tuple[datetime, timedelta]]:
    """Stretches, between the moment all slots first filled and the last dispatch, with fewer than `slots` running."""
    edges = sorted([(a.started_at, 1) for a in attempts] + [(ended(a), -1) for a in attempts])
    last_start = max(a.started_at for a in attempts)
    running = 0
    filled = False
    below_since: datetime | None = None
    gaps = []
    for when, step in edges:
        if when > last_start:
            break
        running += step
        if running >= slots:
            filled = True
            if below_since is not None:
                gaps.append((below_since, when - below_since))
                below_since = None
        elif filled and below_since is None:
            below_since = when
    assert filled, f"the {slots} slots never filled"
    return gaps


def assert_samples(samples: list[Sample], slots: dict[str, int]) -> None:
    total = sum(slots.values())
    assert samples, "no stats were sampled"
    for sample in samples:
        stats = sample.stats
        assert stats.in_flight <= total, stats
        (sleep,) = [h for h in stats.handlers if h.handler == "sleep"]
        assert sleep.in_flight == stats.in_flight, stats
        # One answer, one moment: what runs and what is free add up to the declared slots.
        assert stats.in_flight + stats.free_slots == total, stats
        by_name = {info.name: info for info in sample.workers}
        assert set(by_name) == set(slots), sample.workers
        for name, declared in slots.items():
            assert by_name[name].slots == declared
            assert 0 <= by_name[name].in_flight <= declared, by_name[name]
    assert max(sample.stats.in_flight for sample in samples) == total
    backlog = [sample.stats for sample in samples if sample.stats.queue.size > 0]
    assert len(backlog) >= 5, f"too few samples while work was queued: {len(backlog)}"
    full = [stats for stats in backlog if stats.in_flight == total]
    # A sample may fall between a completion and the dispatch it frees a slot for: a few may be short.
    assert len(full) >= 0.9 * len(backlog), [stats.in_flight for stats in backlog]


def test_one_worker_runs_exactly_its_slots_at_once(procs: Cluster, server: ServerProcess, client: Client) -> None:
    procs.worker(server, slots=3, name="three-slots")
    attempts, samples = run_all(client, server, 30)

    assert {attempt.worker_id for attempt in attempts} == {"three-slots"}
    assert max_overlap(attempts) == 3
    gaps = idle_gaps(attempts, 3)
    assert all(length.total_seconds() < MAX_IDLE_SLOT_S for _, length in gaps), gaps
    assert_samples(samples, {"three-slots": 3})


def test_two_workers_each_run_exactly_their_own_slots(procs: Cluster, server: ServerProcess, client: Client) -> None:
    procs.worker(server, slots=1, name="one-slot")
    procs.worker(server, slots=3, name="three-slots")
    attempts, samples = run_all(client, server, 28)

    by_worker: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_worker.setdefault(attempt.worker_id, []).append(attempt)
    assert set(by_worker) == {"one-slot", "three-slots"}
    assert max_overlap(by_worker["one-slot"]) == 1
    assert max_overlap(by_worker["three-slots"]) == 3
    assert max_overlap(attempts) == 4
    gaps = idle_gaps(attempts, 4)
    assert all(length.total_seconds() < MAX_IDLE_SLOT_S for _, length in gaps), gaps
    assert_samples(samples, {"one-slot": 1, "three-slots": 3})


def test_a_task_that_arrives_while_one_runs_goes_to_the_idle_worker(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=3, name="first")
    procs.worker(server, slots=3, name="second")
    running = client.submit("sleep", {"seconds": 30})
    busy = wait_until_running(client, running.id).attempts[-1].worker_id
    arriving = client.submit("sleep", {"seconds": 0})
    done = client.wait_finished(arriving.id, FINISH)
    assert done.state is State.SUCCESS, done
    # The busy worker has two free slots of three, the other all three: the task goes to the idle one.
    assert only_run(done).attempts[-1].worker_id == ({"first", "second"} - {busy}).pop()
    client.cancel(running.id)
