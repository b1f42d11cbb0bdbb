"""The reconnect backoff is bounded by the lease the last Welcome announced: a worker that lost its stream
is back before the server gives up on its attempts, however long the outage has lasted."""

from __future__ import annotations

from unittest.mock import Mock

from tenacity import RetryCallState

from taskwire.conformance._scripted import ScriptedServer
from tests.integration.worker_agent.conftest import MakeWorker


def _after_failures(count: int) -> RetryCallState:
    state = Mock(spec=RetryCallState)
    state.attempt_number = count
    return state


async def test_the_backoff_never_outlasts_a_third_of_the_lease(
    scripted: ScriptedServer, make_worker: MakeWorker
) -> None:
    worker = make_worker(reconnect_initial_s=0.5, reconnect_max_s=30.0)
    await worker.start()
    session = await scripted.next_session()
    await session.next("hello")
    session.welcome(lease_timeout_s=0.9)
    await worker.wait_connected(timeout_s=10)

    delays = [worker._link.backoff(_after_failures(30)) for _ in range(200)]
    assert max(delays) <= 0.3
    assert min(delays) >= 0
