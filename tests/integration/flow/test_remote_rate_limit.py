"""A handler rate limited by the remote side (`raise RateLimited(retry_after=...)`) waits as long as it was
told and is tried again without spending its retry budget."""

from __future__ import annotations

from datetime import timedelta

from taskwire.client import AttemptOutcome, Client, RetryPolicy, State
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import FINISH, only_run

RETRY_AFTER_S = 0.5


def test_a_remote_rate_limit_is_retried_after_its_wait_without_spending_an_attempt(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, handlers="tests.integration.flow.handlers", slots=2)
    server.wait_for_workers(1)
    submitted = client.submit(
        "flow.remote", {"limited": 2, "retry_after": RETRY_AFTER_S}, retry_policy=RetryPolicy(max_attempts=1)
    )
    done = client.wait_finished(submitted.id, FINISH)
    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert [a.outcome for a in run.attempts] == [AttemptOutcome.FAILED, AttemptOutcome.FAILED, AttemptOutcome.SUCCEEDED]
    for limited, following in zip(run.attempts, run.attempts[1:], strict=False):
        assert limited.error is not None
        assert limited.error.retry_after == timedelta(seconds=RETRY_AFTER_S)
        assert limited.ended_at is not None
        assert following.started_at - limited.ended_at >= timedelta(seconds=RETRY_AFTER_S)
