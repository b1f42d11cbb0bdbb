"""A cancel reaches the running handler: async, sync in a thread, and CPU-bound in a child process.

The attempt must end CANCELLED because the worker acknowledged the cancel (no error recorded), well
before the server's cancel grace would have fenced it (`CancelNotAcknowledged`).
"""

from __future__ import annotations

import psutil
import pytest

from taskwire.client import AttemptOutcome, Client, Reason, ReasonCode, State
from tests.harness import Cluster, ServerProcess, handler_processes, wait_for
from tests.integration.workers.support import (
    CANCEL_GRACE_S,
    FINISH,
    ended,
    ended_line,
    only_run,
    other_than_resource_tracker,
    reason_code,
    utc_now,
    wait_until_running,
)


def cancel_and_check(client: Client, execution_id: str) -> None:
    run = wait_until_running(client, execution_id)
    asked = utc_now()
    client.cancel(execution_id, reason="the test cancels it")
    done = client.wait_finished(execution_id, FINISH)

    assert done.state is State.CANCELLED, done
    assert done.reason == Reason(ReasonCode.CANCEL_REQUESTED, "the test cancels it"), done.reason
    run = only_run(done)
    assert run.state is State.CANCELLED, run
    assert reason_code(run) is ReasonCode.EXECUTION_CANCELLED, run.reason
    (attempt,) = run.attempts
    assert attempt.outcome is AttemptOutcome.CANCELLED, attempt
    # Acknowledged by the worker, not fenced after the grace period.
    assert attempt.error is None, attempt.error
    assert (ended(attempt) - asked).total_seconds() < CANCEL_GRACE_S, attempt


@pytest.mark.parametrize("handler", ["sleep", "sync_sleep"])
def test_a_cancel_stops_a_running_handler_through_its_abort_signal(
    procs: Cluster, server: ServerProcess, client: Client, handler: str
) -> None:
    worker = procs.worker(server, slots=1)
    execution = client.submit(handler, {"seconds": 60})
    cancel_and_check(client, execution.id)

    run = only_run(client.get(execution.id))
    assert ended_line(worker, (run.id, 1)) == "cancelled (cancelled)"


def test_process_isolation_stops_a_cpu_bound_handler_that_ignores_its_signal(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    # The handler is stopped by force after --stop-grace: well inside the server's 2 s cancel grace.
    worker = procs.worker(server, "--isolation", "process", "--stop-grace", "0.3", slots=1, name="isolating")
    execution = client.submit("spin", {"seconds": 60})
    run = wait_until_running(client, execution.id)
    (spinner_pid,) = wait_for(lambda: handler_processes(worker.popen.pid), what="the handler's child process")
    spinner = psutil.Process(spinner_pid)
    assert spinner.is_running()

    cancel_and_check(client, execution.id)
    assert ended_line(worker, (run.id, 1)) == "cancelled (cancelled)"
    assert "ignored its abort signal" in worker.output
    # The worker reports the cancel only once the child has been reaped.
    assert not spinner.is_running(), spinner
    assert other_than_resource_tracker(worker) == []

    # And the worker goes on taking work in its freed slot.
    again = client.submit("spin", {"seconds": 0.1})
    done = client.wait_finished(again.id, FINISH)
    assert done.state is State.SUCCESS, done
    assert only_run(done).attempts[0].worker_id == "isolating"
    assert client.wait(client.submit("echo", {"still": "here"}).id, FINISH) == {"still": "here"}
