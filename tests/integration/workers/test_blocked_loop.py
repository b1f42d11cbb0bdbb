"""A handler that blocks its event loop cannot cost the worker its lease: async handlers run on a loop of
their own, so the worker's heartbeats go on, and the worker names the handler in a warning.
"""

from __future__ import annotations

from taskwire.client import AttemptOutcome, Client, State
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import FINISH, only_run, outcomes

BLOCKING = "tests.integration.worker_agent.blocking"


def test_an_async_handler_that_blocks_its_loop_keeps_its_lease_and_is_named(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    # The server's lease is 2 s, heartbeats every 0.5 s: a 5 s block on the worker's loop would lose it.
    worker = procs.worker(server, handlers=BLOCKING, slots=1, name="blocker")
    execution = client.submit("blocks.loop", {"seconds": 5}, max_attempts=3)
    done = client.wait_finished(execution.id, FINISH)

    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert outcomes(run) == [AttemptOutcome.SUCCEEDED], run.attempts
    # Named while the stall lasts, and again with its length once it is over.
    worker.wait_for_line(r"handler 'blocks\.loop' has blocked its event loop for \d+\.\d s and still does")
    line = worker.wait_for_line(r"handler 'blocks\.loop' blocked its event loop for (\d+\.\d) s")
    assert 4.5 <= float(line.group(1)) < 10, line.group(0)
