"""The worker side of a server going away: a drain leaves room for the reports, and a worker that lost
its stream comes back within the lease the server announced, so its attempts are adopted, not lost."""

from __future__ import annotations

import signal
import time

import pytest

from taskwire.client import AttemptOutcome, Client, RetryPolicy, State
from tests.harness import Cluster, Process, wait_for
from tests.integration.workers.support import FINISH, json_output, only_run, wait_until_running

LEASE = ("--lease-timeout", "2", "--heartbeat-interval", "0.5")


def _connections(worker: Process) -> int:
    return sum("taskwire.worker: connected to" in line for line in worker.output.splitlines())


@pytest.mark.slow
def test_a_handler_that_succeeds_during_an_outage_is_adopted_by_the_restarted_server(procs: Cluster) -> None:
    first = procs.server(*LEASE)
    worker = procs.worker(first, slots=1, name="patient")
    with Client(first.address) as client:
        execution = client.submit("sleep", {"seconds": 2}, retry_policy=RetryPolicy(max_attempts=3))
        wait_until_running(client, execution.id)

    first.process.kill()
    worker.wait_for_line("disconnected from")
    # A long outage: the handler finishes meanwhile, and an unbounded backoff grows past the lease.
    worker.wait_for_line(r"connection to .* failed", timeout_s=10)
    time.sleep(8)  # the fault is this span of time
    port = first.address.rsplit(":", 1)[1]
    second = procs.server("--listen", f"127.0.0.1:{port}", *LEASE)
    wait_for(lambda: _connections(worker) >= 2 or None, timeout_s=10, what="the worker to reconnect")

    with Client(second.address) as client:
        done = client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, done
    (attempt,) = only_run(done).attempts
    assert (attempt.worker_id, attempt.outcome) == ("patient", AttemptOutcome.SUCCEEDED)
    assert json_output(attempt) == {"slept_s": 2.0}


@pytest.mark.slow
def test_a_stopping_server_leaves_room_to_report_a_handler_that_ignores_its_abort(procs: Cluster) -> None:
    server = procs.server(*LEASE, "--shutdown-grace", "4")
    worker = procs.worker(server, slots=1, name="stubborn")
    with Client(server.address) as client:
        # A thread handler that never looks at its abort signal: it cannot be stopped, only waited for.
        execution = client.submit("spin", {"seconds": 5})
        wait_until_running(client, execution.id)

    server.process.signal(signal.SIGTERM)
    worker.wait_for_line("the server is going away")
    assert server.process.wait() == 0, server.process.output
    port = server.address.rsplit(":", 1)[1]

    # Not aborted at a grace, not lost to a lease: the handler goes on, and its report reaches the next server.
    again = procs.server("--listen", f"127.0.0.1:{port}", *LEASE)
    with Client(again.address) as client:
        done = client.wait_finished(execution.id, FINISH)
    assert done.state is State.SUCCESS, (done, worker.output)
    (attempt,) = only_run(done).attempts
    assert (attempt.worker_id, attempt.outcome) == ("stubborn", AttemptOutcome.SUCCEEDED), attempt
    assert worker.popen.poll() is None, "the worker exited"
