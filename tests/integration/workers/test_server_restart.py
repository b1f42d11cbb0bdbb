"""A server killed and restarted while a worker runs an attempt: the worker reconnects and the new
server adopts the running attempt instead of running it again.
"""

from __future__ import annotations

import functools

from taskwire.client import AttemptOutcome, Client, ReasonCode, RetryPolicy, State
from tests.harness import Cluster, Process, wait_for
from tests.integration.workers.support import FINISH, json_output, only_run, reason_code, wait_until_running

# The recovered attempt waits this long for its worker to come back; the worker's reconnect backoff is
# randomised, so this is generous: what is tested is adoption, not the lease.
RESTARTED_LEASE = ("--lease-timeout", "15", "--heartbeat-interval", "0.5")


def connections(worker: Process) -> list[str]:
    """The worker's "connected to ..." lines, one per session."""
    return [line for line in worker.output.splitlines() if "taskwire.worker: connected to" in line]


def _reconnections(worker: Process) -> list[str]:
    return connections(worker)[1:]


def test_a_running_attempt_is_adopted_after_a_server_crash_and_restart(procs: Cluster) -> None:
    first = procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5")
    worker = procs.worker(first, slots=1, name="steadfast")
    with Client(first.address) as client:
        # A retry policy that would allow a second attempt: there must be none.
        execution = client.submit("sleep", {"seconds": 4}, retry_policy=RetryPolicy(max_attempts=3))
        wait_until_running(client, execution.id)

    first.process.kill()  # SIGKILL: a crash (a SIGTERM is test_shutdown.py's)
    worker.wait_for_line("disconnected from")
    port = first.address.rsplit(":", 1)[1]
    second = procs.server("--listen", f"127.0.0.1:{port}", *RESTARTED_LEASE)
    assert second.address == first.address
    assert second.db_path == first.db_path

    sessions = wait_for(functools.partial(_reconnections, worker), what="the worker to reconnect")
    assert "1 attempt(s) adopted, 0 rejected" in sessions[0], sessions
    with Client(second.address) as client:
        done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert reason_code(run) is ReasonCode.COMPLETED
    (attempt,) = run.attempts
    assert (attempt.number, attempt.worker_id, attempt.outcome) == (1, "steadfast", AttemptOutcome.SUCCEEDED)
    assert json_output(attempt) == {"slept_s": 4.0}
    assert "worker steadfast connected" in second.process.output
    assert "1 adopted, 0 rejected" in second.process.output


def test_workers_sharing_a_name_each_get_their_own_attempt_back_after_a_restart(procs: Cluster) -> None:
    """A fleet started under one `--name`: after a crash, each worker's hello speaks for its own process, so
    neither gives up the other's running attempt."""
    first = procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5")
    fleet = [procs.worker(first, slots=1, name="fleet") for _ in range(2)]
    with Client(first.address) as client:
        executions = [client.submit("sleep", {"seconds": 4}, retry_policy=RetryPolicy(max_attempts=3)) for _ in fleet]
        for execution in executions:
            wait_until_running(client, execution.id)

    first.process.kill()
    for worker in fleet:
        worker.wait_for_line("disconnected from")
    port = first.address.rsplit(":", 1)[1]
    second = procs.server("--listen", f"127.0.0.1:{port}", *RESTARTED_LEASE)

    for worker in fleet:
        sessions = wait_for(functools.partial(_reconnections, worker), what="the worker to reconnect")
        assert "1 attempt(s) adopted, 0 rejected" in sessions[0], sessions
    with Client(second.address) as client:
        done = [client.wait_finished(execution.id, FINISH) for execution in executions]
    for snapshot in done:
        assert snapshot.state is State.SUCCESS, snapshot
        (attempt,) = only_run(snapshot).attempts
        assert (attempt.number, attempt.outcome) == (1, AttemptOutcome.SUCCEEDED)
