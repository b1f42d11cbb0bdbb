"""An output exactly as large as the server's payload limit, on a server whose message limit is the smallest it
allows (the payload limit and 64 KiB): the output is within the limit, its report is not. The attempt fails at
once, not retryable, with the cause; a report dropped instead would leave its attempt out of the next
heartbeat, and the server would run it again, each time the same."""

from __future__ import annotations

from taskwire.client import Client, RetryPolicy, State
from taskwire.worker import TaskContext, handler
from tests.harness import Cluster
from tests.integration.workers.support import FINISH, error_type, only_run

LIMIT = 100_000


@handler("sized_output")
async def sized_output(ctx: TaskContext) -> str:
    """Returns a string whose JSON text is ``ctx.input`` bytes."""
    assert isinstance(ctx.input, int)
    return "x" * (ctx.input - 2)


def test_an_output_at_the_payload_limit_whose_report_would_not_fit_fails_once_with_the_cause(procs: Cluster) -> None:
    server = procs.server(
        *("--max-payload-bytes", str(LIMIT), "--max-message-bytes", str(LIMIT + 64 * 1024)),
        *("--lease-timeout", "2", "--heartbeat-interval", "0.5"),
    )
    worker = procs.worker(server, handlers=__name__, slots=1)
    with Client(server.address) as client:
        execution = client.submit("sized_output", LIMIT, retry_policy=RetryPolicy(max_attempts=3))
        done = client.wait_finished(execution.id, FINISH)
        smaller = client.wait_finished(client.submit("sized_output", LIMIT - 1024).id, FINISH)

    assert done.state is State.FAILED, done
    (attempt,) = only_run(done).attempts
    assert error_type(attempt) == "OutputTooLarge", attempt
    assert attempt.error is not None
    assert not attempt.error.retryable
    assert f"output is {LIMIT} bytes" in attempt.error.message, attempt.error
    # The stream never broke, and an output a little smaller goes through.
    assert smaller.state is State.SUCCESS, smaller
    assert worker.output.count("taskwire.worker: connected to") == 1, worker.output
