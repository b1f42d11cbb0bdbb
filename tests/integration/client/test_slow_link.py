"""Clients and workers over a slow link (every byte 150 ms late each way, as across an ocean): a connection takes
longer than gRPC's quickest attempts, and nothing fails for it."""

from __future__ import annotations

import pytest

from taskwire.client import AsyncClient, Client
from tests.faults.proxy import StallingProxy
from tests.harness import Cluster, ServerProcess

pytestmark = pytest.mark.timeout(60)

LATENCY_S = 0.15


def test_the_sync_client_connects_over_a_slow_link(shared: ServerProcess) -> None:
    with StallingProxy(shared.address, latency_s=LATENCY_S) as proxy, Client(proxy.address) as client:
        execution = client.submit("echo", {"far": "away"})  # the first call: the connection is made for it
        assert client.wait(execution.id) == {"far": "away"}


async def test_the_async_client_connects_over_a_slow_link(shared: ServerProcess) -> None:
    with StallingProxy(shared.address, latency_s=LATENCY_S) as proxy:
        async with AsyncClient(proxy.address) as client:
            execution = await client.submit("echo", {"far": "away"})
            assert await client.wait(execution.id) == {"far": "away"}


def test_a_worker_connects_over_a_slow_link_and_runs_tasks(procs: Cluster) -> None:
    server = procs.server()
    with StallingProxy(server.address, latency_s=LATENCY_S) as proxy:
        procs.worker(proxy.address, slots=2, name="far-away")  # returns once the worker says it is connected
        with Client(server.address) as client:
            execution = client.submit("echo", {"n": 1})
            assert client.wait(execution.id) == {"n": 1}
