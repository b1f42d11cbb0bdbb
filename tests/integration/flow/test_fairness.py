"""Fairness with real processes: a tenant's 10 tasks submitted behind another tenant's 5,000 start within
a round, taking turns with the big backlog rather than waiting for it."""

from __future__ import annotations

from datetime import datetime

from taskwire.client import Client, ExecutionSpec, State, TaskSpec
from taskwire.common import json_payload
from tests.harness import Cluster, ServerProcess
from tests.integration.workers.support import FINISH, only_run

BIG, SMALL, SLOTS = 5000, 10, 4


def _specs(tenant: str, count: int) -> list[ExecutionSpec]:
    work = json_payload({"seconds": 0.02})
    return [ExecutionSpec(tasks=(TaskSpec("sleep", input=work, fairness_key=tenant),)) for _ in range(count)]


def _started(client: Client, execution_id: str) -> datetime | None:
    attempts = only_run(client.get(execution_id)).attempts
    return attempts[0].started_at if attempts else None


def test_a_small_tenant_starts_within_a_round_behind_a_big_backlog(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=SLOTS)
    server.wait_for_workers(1)
    big = [r.execution_id for _ in range(BIG // 1000) for r in client.submit_many(_specs("big", 1000))]
    assert len(big) == BIG
    small = [r.execution_id for r in client.submit_many(_specs("small", SMALL))]
    done = [client.wait_finished(execution_id, FINISH) for execution_id in small]
    assert client.stats().queue.size > BIG // 2, "the backlog was gone: the test proved nothing"
    assert [d.state for d in done] == [State.SUCCESS] * SMALL

    queued_at = min(only_run(d).created_at for d in done)
    last_small = max(only_run(d).attempts[0].started_at for d in done)
    # A big-tenant task that started before the last small one did is no longer PENDING now.
    begun = {snapshot.execution.id for snapshot in client.list(states=[s for s in State if s is not State.PENDING])}
    overtaking = [
        execution_id
        for execution_id in big
        if execution_id in begun
        and (started := _started(client, execution_id)) is not None
        and queued_at < started < last_small
    ]
    # In turns: one task of the big tenant per task of the small one, and at most one round of slots more.
    assert len(overtaking) <= SMALL + SLOTS, f"{len(overtaking)} big-tenant tasks started before the small one's"
