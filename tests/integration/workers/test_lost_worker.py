"""A worker killed with SIGKILL mid-task: its attempt is LOST once the lease times out, then retried elsewhere."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskwire.client import AttemptOutcome, Client, ReasonCode, RetryPolicy, State
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import (
    FINISH,
    HEARTBEAT_INTERVAL_S,
    LEASE_TIMEOUT_S,
    SLACK_S,
    ended,
    error_type,
    json_output,
    only_run,
    outcomes,
    reason_code,
    utc_now,
    wait_until_running,
)


# None: the default policy, a single attempt for the handler. A crashed worker is not the handler's fault,
# so its attempt is retried all the same (one of the three infrastructure retries).
@pytest.mark.parametrize(
    "sent", [RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=0.1)), None], ids=["retries", "default"]
)
def test_a_killed_workers_attempt_is_lost_after_the_lease_and_succeeds_on_another(
    procs: Cluster, server: ServerProcess, client: Client, sent: RetryPolicy | None
) -> None:
    # At DEBUG the worker also logs the attempts that complete: its output shows whether attempt 1 did.
    doomed = procs.worker(server, "--log-level", "debug", slots=1, name="doomed")
    policy = sent or RetryPolicy()
    execution = client.submit("sleep", {"seconds": 2}, retry_policy=sent)
    run = wait_until_running(client, execution.id)
    assert run.retry_policy == policy
    doomed.kill()
    killed_at = utc_now()
    assert f"{run.id}#1" not in doomed.output, "attempt 1 ended before the kill: the test proves nothing"
    # Started only now, so that attempt 1 surely went to the doomed worker; the lease is still running.
    procs.worker(server, slots=1, name="survivor")
    done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert outcomes(run) == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED], run.attempts
    lost, retried = run.attempts
    assert lost.worker_id == "doomed"
    assert error_type(lost) == "LeaseExpired", lost
    # The lease counts from the last heartbeat, at most one heartbeat interval before the kill.
    silent_for = (ended(lost) - killed_at).total_seconds()
    assert LEASE_TIMEOUT_S - HEARTBEAT_INTERVAL_S - 0.1 <= silent_for < LEASE_TIMEOUT_S + SLACK_S, silent_for
    assert retried.worker_id == "survivor"
    assert retried.started_at >= ended(lost) + policy.initial_interval
    assert json_output(retried) == {"slept_s": 2.0}
    assert reason_code(run) is ReasonCode.COMPLETED
