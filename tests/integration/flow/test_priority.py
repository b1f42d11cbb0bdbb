"""Priority with real processes: a high-priority task submitted behind a long low-priority backlog starts
within one dispatch round, and the CLI carries --priority."""

from __future__ import annotations

import json
from datetime import datetime

from taskwire.client import Client, ExecutionSpec, State, TaskSpec
from taskwire.common import json_payload
from tests.harness import BOTH_STORES, Cluster, ServerProcess
from tests.integration.client.conftest import Cli
from tests.integration.workers.support import FINISH, only_run

BACKLOG = 1000
SLOTS = 4


def _started(client: Client, execution_id: str) -> datetime | None:
    attempts = only_run(client.get(execution_id)).attempts
    return attempts[0].started_at if attempts else None


@BOTH_STORES
def test_a_high_priority_task_behind_a_thousand_low_ones_starts_within_one_round(
    procs: Cluster, server: ServerProcess, client: Client
) -> None:
    procs.worker(server, slots=SLOTS)
    server.wait_for_workers(1)
    short = json_payload({"seconds": 0.05})
    low = [ExecutionSpec(tasks=(TaskSpec("sleep", input=short, priority=1),), name=f"low-{n}") for n in range(BACKLOG)]
    results = client.submit_many(low)
    assert all(result.ok for result in results), [r.error for r in results if not r.ok][:3]
    urgent = client.submit("sleep", {"seconds": 0.05}, priority=9)

    done = client.wait_finished(urgent.id, FINISH)
    assert client.stats().queue.size > BACKLOG // 2, "the backlog was gone: the test proved nothing"
    assert done.state is State.SUCCESS, done
    run = only_run(done)
    assert run.priority == 9
    submitted_at, started_at = run.created_at, run.attempts[0].started_at
    overtaking = [
        result.execution_id
        for result in results
        if (started := _started(client, result.execution_id)) is not None and submitted_at < started < started_at
    ]
    # Within one round: at most one task per slot may still start between the submit and the dispatch.
    assert len(overtaking) <= SLOTS, f"{len(overtaking)} low-priority tasks started after the urgent one was queued"


def test_the_cli_submits_with_a_priority_and_refuses_one_out_of_range(server: ServerProcess) -> None:
    cli = Cli(server.address)
    result = cli(
        "submit", "echo", "--priority", "8", "--concurrency-key", "c-1", "--concurrency-limit", "2",
        "--fairness-key", "tenant-a", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    (task_run,) = json.loads(result.stdout)["task_runs"]
    assert (task_run["priority"], task_run["concurrency_key"], task_run["concurrency_limit"]) == (8, "c-1", 2)
    assert (task_run["fairness_key"], task_run["rate_limit"]) == ("tenant-a", None)

    keyless = cli("submit", "echo", "--concurrency-limit", "2")
    assert keyless.returncode != 0, keyless
    assert "tasks[0].concurrency_limit: needs a concurrency_key" in keyless.stderr, keyless.stderr

    refused = cli("submit", "echo", "--priority", "10")
    assert refused.returncode != 0, refused
    assert "tasks[0].priority: must be between 1 and 9, got 10" in refused.stderr, refused.stderr


def test_a_low_priority_task_starts_once_aged_to_the_top_behind_a_stream_of_high_ones(procs: Cluster) -> None:
    aging_s, high = 0.5, 300
    server = procs.server("--priority-aging", str(aging_s))
    procs.worker(server, slots=1)
    server.wait_for_workers(1)
    with Client(server.address) as client:
        busy = client.submit("sleep", {"seconds": 0.3}, priority=9)  # keeps the one slot while the rest queue
        low = client.submit("sleep", {"seconds": 0.01}, priority=1)
        work = json_payload({"seconds": 0.02})
        results = client.submit_many([ExecutionSpec(tasks=(TaskSpec("sleep", input=work, priority=9),))] * high)
        assert all(result.ok for result in results)
        done = client.wait_finished(low.id, FINISH)
        assert client.stats().queue.size > high // 3, "the high-priority stream was gone: the test proved nothing"
        assert client.wait_finished(busy.id, FINISH).state is State.SUCCESS
    run = only_run(done)
    waited = (run.attempts[0].started_at - run.created_at).total_seconds()
    bound = (9 - 1) * aging_s  # docs/flow-control.md: after it, nothing queued later goes first
    assert bound - aging_s <= waited <= bound + 1.5, f"waited {waited:.2f}s; aged to the top after {bound}s"
