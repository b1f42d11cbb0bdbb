"""A server killed and restarted while a worker runs an attempt: the worker reconnects and the new
server adopts the running attempt instead of running it again.
"""

from __future__ import annotations

from taskwire.client import AttemptOutcome, Client, ReasonCode, RetryPolicy, State
from tests.harness import Cluster, Process, wait_for
from tests.integration.workers.support import FINISH, json_output, only_run, reason_code, wait_until_running

# The recovered attempt waits this long for its worker to come back; the worker's reconnect backoff is
# randomised, so this is generous: what is tested is adoption, not the lease.
RESTARTED_LEASE = ("--lease-timeout", "15", "--heartbeat-interval", "0.5")


def connections(worker: Process) -> list[str]:
    """The worker's "connected to ..." lines, one per session."""
    return [line for line in worker.output.splitlines() if "taskwire.worker: connected to" in line]


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

    sessions = wait_for(lambda: connections(worker)[1:], what="the worker to reconnect")
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
