"""GetStats: queue occupancy, waiting submitters, per-handler figures and worker slots."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from taskwire.v1 import task_service_pb2 as tpb
from tests.harness import Cluster, ServerProcess
from tests.integration.server.support import WAIT_FOR_ROOM, Client, sleeper, spec, status_of, task

Connect = Callable[[ServerProcess], Client]
DEMO_HANDLERS = ["echo", "fail", "progress", "sleep", "spin", "sync_sleep"]


def handler_figures(stats: tpb.GetStatsResponse) -> dict[str, tuple[int, int, int, int]]:
    """handler -> (pending, in_flight, free_slots, workers), checking the list is sorted by name."""
    names = [h.handler for h in stats.handlers]
    assert names == sorted(names), f"handlers are not sorted by name: {names}"
    return {h.handler: (h.pending, h.in_flight, h.free_slots, h.workers) for h in stats.handlers}


def test_queue_figures_without_workers(procs: Cluster, connect: Connect) -> None:
    client = connect(procs.server("--queue-capacity", "6"))
    empty = client.stats()
    assert (empty.queue.size, empty.queue.capacity, empty.queue.full, empty.queue.empty) == (0, 6, False, True)
    assert (empty.queue.waiting_submitters, empty.in_flight, empty.connected_workers, empty.free_slots) == (0, 0, 0, 0)
    assert list(empty.handlers) == []

    client.submit(spec(task("echo")))
    client.submit(spec(task("echo")))
    client.submit(sleeper(1))
    # "first" is PENDING; "then" WAITING for it: both are queued, only the first is pending for its handler.
    client.submit(spec(task("fail", "first"), task("echo", "then", depends_on=["first"])))
    stats = client.stats()
    assert (stats.queue.size, stats.queue.full, stats.queue.empty) == (5, False, False), stats.queue
    assert handler_figures(stats) == {"echo": (2, 0, 0, 0), "fail": (1, 0, 0, 0), "sleep": (1, 0, 0, 0)}

    client.submit(spec(task("progress")))
    full = client.stats()
    assert (full.queue.size, full.queue.full, full.queue.empty) == (6, True, False), full.queue
    assert handler_figures(full)["progress"] == (1, 0, 0, 0)

    waiters = [client.submit_future(spec(name=f"waiter-{n}"), admission=WAIT_FOR_ROOM, timeout_s=60) for n in range(2)]
    client.wait_for_stats(lambda s: s.queue.waiting_submitters == 2, what="two waiting submitters")
    # A waiting submitter that gives up (its call is cancelled) is no longer counted, and stored nothing.
    for waiter in waiters:
        waiter.cancel()
    client.wait_for_stats(lambda s: s.queue.waiting_submitters == 0, what="the cancelled waiters to leave")
    for waiter in waiters:
        assert waiter.cancelled() or status_of(waiter.exception()).code is grpc.StatusCode.CANCELLED
    assert len(client.stored_ids()) == 5
    assert client.stats().queue.size == 6


def test_worker_and_in_flight_figures(procs: Cluster, connect: Connect) -> None:
    server = procs.server()
    client = connect(server)
    procs.worker(server, slots=3)
    idle = client.wait_for_stats(lambda s: s.connected_workers == 1, what="the worker to connect")
    assert (idle.free_slots, idle.in_flight) == (3, 0)
    assert handler_figures(idle) == dict.fromkeys(DEMO_HANDLERS, (0, 0, 3, 1))

    ids = [client.submit(sleeper(120, name=f"sleep-{n}")).execution.id for n in range(4)]
    busy = client.wait_for_stats(lambda s: s.in_flight == 3, what="three attempts in flight")
    assert (busy.connected_workers, busy.free_slots, busy.queue.size) == (1, 0, 1), busy
    figures = handler_figures(busy)
    assert figures["sleep"] == (1, 3, 0, 1), figures
    assert figures["echo"] == (0, 0, 0, 1), figures

    for execution_id in ids:
        client.cancel(execution_id)
    for execution_id in ids:
        client.wait_until_terminal(execution_id)
    settled = client.wait_for_stats(lambda s: s.free_slots == 3, what="the slots to be free again")
    assert (settled.in_flight, settled.queue.size, settled.queue.empty) == (0, 0, True), settled
    assert handler_figures(settled)["sleep"] == (0, 0, 3, 1)
