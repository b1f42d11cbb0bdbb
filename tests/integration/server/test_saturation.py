"""The saturation harness: many submitters against a small queue, end to end.

Fail-fast submitters beyond capacity are refused; wait-for-room submitters are
admitted first come, first served as room frees (by cancels, then by a worker
taking work); and the queue, sampled all along, never holds more than its
capacity.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from types import TracebackType

import grpc

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.harness import Cluster, ServerProcess, wait_for
from tests.integration.server.support import WAIT_FOR_ROOM, Client, sleeper, spec, status_of

Connect = Callable[[ServerProcess], Client]

CAPACITY = 3
BURST = 24  # concurrent fail-fast submitters against the empty queue
SUBMITTER_CHANNELS = 4
WAITERS = 6
RACERS = 4  # fail-fast submitters racing each freed place
# How long each admitted execution runs: it spaces out the places a worker frees one by one.
HANDLER_S = 0.4


def has_waiting_submitters(count: int, stats: tpb.GetStatsResponse) -> bool:
    return stats.queue.waiting_submitters == count


class StatsSampler:
    """Samples GetStats on its own channel until stopped; remembers every sample."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-sampler", daemon=True)
        self.samples: list[tpb.QueueStats] = []
        self.errors: list[BaseException] = []

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(self._client.stats().queue)
            except BaseException as error:  # reported by the test, not lost in this thread
                self.errors.append(error)
                return
            if self._stop.wait(0.005):  # the pace of sampling, not a wait for a condition
                return

    def wait_for_sample(self, condition: Callable[[tpb.QueueStats], bool], *, what: str) -> None:
        """Until the sampler itself has seen a state, so that the samples cover that moment too."""
        wait_for(lambda: self.errors or any(condition(sample) for sample in list(self.samples)), what=what)

    def __enter__(self) -> StatsSampler:
        self._thread.start()
        wait_for(lambda: self.samples or self.errors, what="the first stats sample")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_many_submitters_against_a_small_queue(procs: Cluster, connect: Connect) -> None:
    server = procs.server("--queue-capacity", str(CAPACITY))
    client = connect(server)
    submitters = [connect(server) for _ in range(SUBMITTER_CHANNELS)]
    completed: list[int] = []  # waiter indexes, in the order their submits returned
    completed_lock = threading.Lock()

    def record(index: int) -> Callable[[grpc.Future[tpb.SubmitExecutionResponse]], None]:
        def done(_: grpc.Future[tpb.SubmitExecutionResponse]) -> None:
            with completed_lock:
                completed.append(index)

        return done

    def completed_now() -> list[int]:
        with completed_lock:
            return list(completed)

    def completed_at_least(count: int) -> bool:
        return len(completed_now()) >= count

    with StatsSampler(connect(server)) as sampler:
        # 1. A burst of concurrent fail-fast submits: exactly `capacity` get in, the rest are refused.
        burst = [
            submitters[i % SUBMITTER_CHANNELS].submit_future(sleeper(HANDLER_S, name=f"burst-{i}"))
            for i in range(BURST)
        ]
        fillers: list[str] = []
        for future in burst:
            error = future.exception(timeout=20)
            if error is None:
                fillers.append(future.result().execution.id)
            else:
                status = status_of(error)
                assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED, status
                assert f"of {CAPACITY}" in status.details, status.details
        assert len(fillers) == CAPACITY, f"{len(fillers)} of {BURST} fail-fast submits were admitted"

        # 2. Waiting submitters, started one at a time: each is queued before the next one starts.
        waiters: list[grpc.Future[tpb.SubmitExecutionResponse]] = []
        for index in range(WAITERS):
            future = client.submit_future(
                sleeper(HANDLER_S, name=f"waiter-{index}"), admission=WAIT_FOR_ROOM, timeout_s=60
            )
            future.add_done_callback(record(index))
            waiters.append(future)
            client.wait_for_stats(partial(has_waiting_submitters, index + 1), what=f"waiter {index} to be queued")
        assert completed_now() == [], "a waiter returned while the queue was full"
        sampler.wait_for_sample(lambda q: q.waiting_submitters == WAITERS, what="a sample with every waiter queued")

        # 3. Free one place at a time by cancelling a queued execution, with fail-fast submitters racing
        #    for it: the place goes to the longest-waiting submitter, never to a racer.
        for freed in range(CAPACITY):
            racers = [
                submitters[i % SUBMITTER_CHANNELS].submit_future(spec(name=f"racer-{freed}-{i}")) for i in range(RACERS)
            ]
            cancelled = client.tasks.CancelExecution.future(
                tpb.CancelExecutionRequest(execution_id=fillers[freed], reason="make room"), timeout=10
            )
            assert cancelled.result(timeout=10).execution.state == pb.EXECUTION_STATE_CANCELLED
            wait_for(partial(completed_at_least, freed + 1), what=f"a waiter to get place {freed}")
            assert completed_now() == list(range(freed + 1)), "waiters were not admitted first come, first served"
            for racer in racers:
                status = status_of(racer.exception(timeout=10))
                assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED, f"a racer took a waiter's place: {status}"
        assert client.stats().queue.waiting_submitters == WAITERS - CAPACITY

        # 4. A worker frees the rest: each task run it takes makes room for the next waiter.
        procs.worker(server, slots=1)
        responses = [future.result(timeout=30) for future in waiters]
        assert completed_now() == list(range(WAITERS)), "waiters were not admitted first come, first served"

    # The server's own record agrees: the waiters' executions were created in the order they waited.
    created = [(response.execution.created_at.ToNanoseconds(), index) for index, response in enumerate(responses)]
    assert [index for _, index in sorted(created)] == list(range(WAITERS))

    assert not sampler.errors, sampler.errors
    assert len(sampler.samples) >= 10, f"only {len(sampler.samples)} stats samples"
    over = [sample for sample in sampler.samples if sample.size > sample.capacity]
    assert not over, f"the queue went over its capacity: {over[:3]}"
    assert all(sample.capacity == CAPACITY for sample in sampler.samples)
    assert all(sample.full == (sample.size >= CAPACITY) for sample in sampler.samples)
    assert max(sample.waiting_submitters for sample in sampler.samples) == WAITERS
    assert any(sample.full for sample in sampler.samples)

    # Every waiter's execution runs to completion; nothing refused was stored.
    waiter_ids = [response.execution.id for response in responses]
    for execution_id in waiter_ids:
        assert client.wait_until_terminal(execution_id).state == pb.EXECUTION_STATE_SUCCESS
    assert client.stored_ids() == {*fillers, *waiter_ids}
    final = client.stats().queue
    assert (final.size, final.empty, final.waiting_submitters) == (0, True, 0), final
