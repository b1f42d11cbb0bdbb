"""Worker shutdown, graceful (SIGTERM: drain) and forced (a second SIGTERM, or SIGINT); and a server's
SIGTERM, which does not stop its workers: they keep their tasks and hand them to the next server.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest

from taskwire.client import AttemptOutcome, Client, ReasonCode, RetryPolicy, State
from tests.harness import Cluster, Process, ServerProcess, wait_for
from tests.integration.workers.support import (
    FINISH,
    ended_line,
    json_output,
    only_run,
    outcomes,
    reason_code,
    wait_until_handler_reports,
    wait_until_running,
    worker_named,
)


def wait_draining(client: Client, name: str) -> None:
    """Until the server knows the worker is draining (and so sends it nothing new)."""
    wait_for(lambda: (info := worker_named(client, name)) is not None and info.draining, what=f"{name} to drain")


def test_sigterm_drains_the_worker_running_work_finishes_and_nothing_new_is_taken(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    worker = procs.worker(server, slots=1, name="drainer")
    running = client.submit("sleep", {"seconds": 3})
    wait_until_handler_reports(client, running.id)
    queued = client.submit("echo", {"queued": True})  # no free slot: it waits in the queue

    worker.signal(signal.SIGTERM)
    worker.wait_for_line("draining: no new work")
    wait_draining(client, "drainer")  # while the 3 s attempt still runs
    assert worker.wait() == 0, worker.output

    done = client.wait_finished(running.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert outcomes(only_run(done)) == [AttemptOutcome.SUCCEEDED]
    assert only_run(done).attempts[0].worker_id == "drainer"
    # The slot the finished attempt freed was not refilled: the queued task was never sent to the worker
    # (which would have refused it, and said so in its log).
    queued_run = only_run(queued)
    assert queued_run.id not in worker.output
    assert "rejected attempt" not in worker.output
    waiting = client.get(queued.id)
    assert waiting.state is State.PENDING, waiting
    assert only_run(waiting).attempts == ()

    # Nothing was lost: another worker takes it.
    procs.worker(server, slots=1, name="successor")
    after = client.wait_finished(queued.id, FINISH)
    assert after.state is State.SUCCESS
    assert only_run(after).attempts[0].worker_id == "successor"


@pytest.mark.parametrize("how", ["a-second-sigterm", "sigint"])
def test_a_forced_shutdown_reports_the_running_attempt_which_is_retried_elsewhere(
    procs: Cluster, server: ServerProcess, client: Client, how: str
) -> None:
    victim = procs.worker(server, slots=1, name="victim")
    # A single attempt for the handler: a worker shutdown is not its fault, so it is retried all the same.
    policy = RetryPolicy(initial_interval=timedelta(seconds=0.1))
    execution = client.submit("sleep", {"seconds": 3}, retry_policy=policy)
    run = wait_until_handler_reports(client, execution.id)

    if how == "sigint":
        victim.signal(signal.SIGINT)
    else:
        victim.signal(signal.SIGTERM)
        wait_draining(client, "victim")  # while the 3 s attempt still runs
        victim.signal(signal.SIGTERM)
    forced_at = time.monotonic()
    assert victim.wait() == 0, victim.output
    # It did not wait out its 30 s drain timeout (and the outcome below shows it did not wait for the handler).
    assert time.monotonic() - forced_at < 10, victim.output
    assert ended_line(victim, (run.id, 1)) == "failed (WorkerShutdown)"

    # The retry waits in the queue for a worker; started only now, so attempt 1 surely ran on the victim.
    procs.worker(server, slots=1, name="rescuer")
    done = client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert outcomes(run) == [AttemptOutcome.FAILED, AttemptOutcome.SUCCEEDED], run.attempts
    shut_down, retried = run.attempts
    assert shut_down.worker_id == "victim"
    assert shut_down.error is not None, shut_down
    assert (shut_down.error.type, shut_down.error.retryable) == ("WorkerShutdown", True)
    assert retried.worker_id == "rescuer"
    assert json_output(retried) == {"slept_s": 3.0}


def connections(worker: Process) -> int:
    return sum("taskwire.worker: connected to" in line for line in worker.output.splitlines())


def test_a_server_sigterm_and_restart_keeps_the_workers_and_their_running_tasks(procs: Cluster) -> None:
    lease = ("--lease-timeout", "2", "--heartbeat-interval", "0.5")
    server = procs.server(*lease, "--shutdown-grace", "20")
    workers = [procs.worker(server, slots=2, name=f"steadfast{index}") for index in range(2)]
    server.wait_for_workers(2)
    with Client(server.address) as client:
        # The default policy: one attempt, so an attempt lost to the restart would fail its task.
        executions = [client.submit("sleep", {"seconds": 3}) for _ in range(4)]
        for execution in executions:
            wait_until_running(client, execution.id)

    server.process.signal(signal.SIGTERM)
    asked = time.monotonic()
    for worker in workers:
        worker.wait_for_line("the server is going away")
    assert server.process.wait() == 0, server.process.output
    # The server stopped once its workers had hung up, well before its 20 s grace.
    assert time.monotonic() - asked < 10, server.process.output

    port = server.address.rsplit(":", 1)[1]
    again = procs.server("--listen", f"127.0.0.1:{port}", *lease)
    wait_for(lambda: all(connections(worker) >= 2 for worker in workers), what="the workers to reconnect")
    with Client(again.address) as client:
        for execution in executions:
            done = client.wait_finished(execution.id, FINISH)
            assert done.state is State.SUCCESS, done
            assert reason_code(done) is ReasonCode.COMPLETED
            (attempt,) = only_run(done).attempts
            assert attempt.outcome is AttemptOutcome.SUCCEEDED
            assert attempt.worker_id.startswith("steadfast")
            assert json_output(attempt) == {"slept_s": 3.0}
    for worker in workers:
        assert worker.popen.poll() is None, worker.output  # never exited
        assert "draining" not in worker.output
