"""An output larger than the server accepts: the worker checks it against the limit the Welcome announced
and fails the attempt at once with a clear, non-retryable error, instead of a frame that breaks the stream
on every resend until the lease expires and hides the cause."""

from __future__ import annotations

from taskwire.client import Client, RetryPolicy, State
from taskwire.worker import TaskContext, handler
from tests.harness import Cluster
from tests.integration.workers.support import FINISH, error_type, only_run

LIMIT = 4096


@handler("big_output")
async def big_output(ctx: TaskContext) -> str:
    """Returns a string of ``ctx.input`` bytes (for this test's worker)."""
    assert isinstance(ctx.input, int)
    return "x" * ctx.input


def test_an_output_over_the_payload_limit_fails_the_attempt_with_the_cause(procs: Cluster) -> None:
    server = procs.server("--max-payload-bytes", str(LIMIT), "--lease-timeout", "2", "--heartbeat-interval", "0.5")
    worker = procs.worker(server, handlers=__name__, slots=1, name="verbose")
    with Client(server.address) as client:
        # Retries would be allowed: the error is not retryable, so there must be none.
        execution = client.submit("big_output", 2 * LIMIT, retry_policy=RetryPolicy(max_attempts=3))
        done = client.wait_finished(execution.id, FINISH)
        fits = client.wait_finished(client.submit("big_output", LIMIT // 2).id, FINISH)

    assert done.state is State.FAILED, done
    (attempt,) = only_run(done).attempts
    assert error_type(attempt) == "OutputTooLarge"
    assert attempt.error is not None
    assert not attempt.error.retryable
    assert f"over the server's limit of {LIMIT} bytes" in attempt.error.message, attempt.error
    # The stream never broke: one session, and the next task on it succeeded.
    assert fits.state is State.SUCCESS, fits
    assert worker.output.count("taskwire.worker: connected to") == 1, worker.output
