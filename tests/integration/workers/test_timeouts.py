"""Timeouts: a task run's own timeout (retried per its policy), the execution's deadline, and the
worker's local copy of a deadline, which stops a handler even while the server is unreachable.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

from taskwire.client import AttemptOutcome, Client, ReasonCode, RetryPolicy, State
from tests.harness import Cluster, ServerProcess, wait_for
from tests.integration.workers.support import (
    FINISH,
    SLACK_S,
    ended,
    ended_line,
    error_type,
    only_run,
    outcomes,
    reason_code,
    worker_named,
)

TIMEOUT = timedelta(seconds=0.5)
BACKOFF = timedelta(seconds=0.2)


def test_a_task_run_timeout_ends_the_attempt_and_retries_per_policy(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    worker = procs.worker(server, slots=1, name="sleeper")
    policy = RetryPolicy(max_attempts=2, initial_interval=BACKOFF)
    execution = client.submit("sleep", {"seconds": 30}, timeout=TIMEOUT, retry_policy=policy)
    done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.FAILED, done
    assert reason_code(done) is ReasonCode.TIMED_OUT, done.reason
    run = only_run(done)
    assert run.state is State.FAILED
    assert reason_code(run) is ReasonCode.TIMED_OUT, run.reason
    assert outcomes(run) == [AttemptOutcome.TIMED_OUT, AttemptOutcome.TIMED_OUT], run.attempts
    first, second = run.attempts
    for attempt in run.attempts:
        assert attempt.worker_id == "sleeper"
        assert error_type(attempt) == "TimeoutError", attempt
        lasted = (ended(attempt) - attempt.started_at).total_seconds()
        assert TIMEOUT.total_seconds() <= lasted < TIMEOUT.total_seconds() + SLACK_S, attempt
    assert second.started_at - ended(first) >= BACKOFF, run.attempts

    # Each handler was stopped on the worker, not left running: its slot is free again.
    for number in (1, 2):
        assert ended_line(worker, (run.id, number)) in ("failed (TimeoutError, timed out)", "cancelled (timed_out)")
    wait_for(lambda: (info := worker_named(client, "sleeper")) is not None and info.in_flight == 0, what="a free slot")


def test_an_execution_timeout_fails_the_execution_and_cancels_its_running_task(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    worker = procs.worker(server, slots=1)
    execution = client.submit("sleep", {"seconds": 30}, execution_timeout=TIMEOUT, max_attempts=3)
    done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.FAILED, done
    assert reason_code(done) is ReasonCode.EXECUTION_TIMED_OUT, done.reason
    run = only_run(done)
    assert run.state is State.CANCELLED, run
    assert reason_code(run) is ReasonCode.EXECUTION_TIMED_OUT, run.reason
    # Cancelled, not retried, although the policy allows three attempts.
    (attempt,) = run.attempts
    assert attempt.outcome is AttemptOutcome.CANCELLED, attempt
    assert attempt.error is None, "the worker should have acknowledged the cancel"
    assert done.execution.deadline is not None
    assert ended(attempt) >= done.execution.deadline
    assert (ended(attempt) - done.execution.deadline).total_seconds() < SLACK_S, attempt
    assert ended_line(worker, (run.id, 1)) == "cancelled (execution_timed_out)"


def test_the_worker_enforces_the_deadline_while_the_server_is_unreachable(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    worker = procs.worker(server, slots=1, name="on-its-own")
    # Shorter than the lease (2 s) less a heartbeat interval: when the server resumes, the attempt's own
    # timeout comes due before the worker's lease can, however late the server then reads what the worker
    # sent during the pause.
    timeout = timedelta(seconds=1.2)
    # `progress` logs a line every 0.1 s for 10 s: the worker's output shows when it is running.
    execution = client.submit("progress", {"steps": 100, "interval": 0.1}, timeout=timeout)
    ref = (worker.wait_for_line(r"\[progress (\w+)#1\] step 1 of 100").group(1), 1)

    server.process.signal(signal.SIGSTOP)  # the server's own timer cannot fire, nor can it hear the worker
    paused_at = time.time()
    try:
        outcome = ended_line(worker, ref)
        stopped_at = time.time()
    finally:
        server.process.signal(signal.SIGCONT)

    done = client.wait_finished(execution.id, FINISH)
    run = only_run(done)
    assert run.id == ref[0]
    dispatched = run.attempts[0].started_at.timestamp()
    assert paused_at - dispatched < timeout.total_seconds(), "the server was paused too late: this proves nothing"
    assert done.state is State.FAILED, done
    assert reason_code(run) is ReasonCode.TIMED_OUT, run.reason
    assert outcomes(run) == [AttemptOutcome.TIMED_OUT]
    # Only the worker's local deadline could have stopped the handler, and it did so on time.
    assert outcome == "failed (TimeoutError, timed out)"
    assert timeout.total_seconds() <= stopped_at - dispatched < timeout.total_seconds() + SLACK_S, stopped_at
    # The worker serves on once the server is back (reconnecting if its stream was dropped meanwhile).
    assert client.wait(client.submit("echo", {"after": "the pause"}).id, FINISH) == {"after": "the pause"}
