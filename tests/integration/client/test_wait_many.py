"""Waiting for many executions with the SDK (`as_completed`, `wait_many`, sync and asyncio) and the CLI
(`taskwire wait ID ID…`), against a real server and worker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from taskwire.client import (
    AsyncClient,
    Client,
    ExecutionSnapshot,
    ExecutionSpec,
    NotFound,
    State,
    TaskSpec,
    ValidationError,
    WaitTimeout,
    to_payload,
)
from tests.harness import ServerProcess
from tests.integration.client.conftest import Cli

UNSERVED = "wait.unserved"  # no worker serves it: its executions wait until cancelled


def finished_echo(client: Client, n: int) -> ExecutionSnapshot:
    submitted = client.submit("echo", {"n": n})
    return client.wait_finished(submitted.id)


def test_as_completed_yields_each_as_it_finishes(shared: ServerProcess) -> None:
    with Client(shared.address) as client:
        done = finished_echo(client, 1)
        waiting = client.submit(UNSERVED)
        sleeping = client.submit("sleep", {"seconds": 60})
        finishing = client.as_completed([waiting.id, done.id, sleeping.id, done.id])
        first = next(finishing)
        assert (first.id, first.state, first.output) == (done.id, State.SUCCESS, {"n": 1})
        client.cancel(sleeping.id, "stop sleeping")
        second = next(finishing)
        assert (second.id, second.state) == (sleeping.id, State.CANCELLED)
        client.cancel(waiting.id)
        assert [(s.id, s.state) for s in finishing] == [(waiting.id, State.CANCELLED)]


def test_wait_many_returns_them_in_the_order_given(shared: ServerProcess) -> None:
    with Client(shared.address) as client:
        results = client.submit_many([client_spec(n) for n in range(20)])
        execution_ids = [result.execution_id for result in results]
        finished = client.wait_many(reversed(execution_ids), timeout=timedelta(seconds=60))
    assert [s.id for s in finished] == execution_ids[::-1]
    assert [s.output for s in finished] == [{"n": n} for n in reversed(range(20))]


def client_spec(n: int) -> ExecutionSpec:
    return ExecutionSpec(tasks=(TaskSpec("echo", input=to_payload({"n": n})),))


async def test_the_async_client_waits_for_many_too(shared: ServerProcess) -> None:
    async with AsyncClient(shared.address) as client:
        ran = await client.submit("echo", {"n": 2})
        waiting = await client.submit(UNSERVED)
        seen: list[tuple[str, State]] = []
        async for done in client.as_completed([ran.id, waiting.id], timeout=timedelta(seconds=60)):
            seen.append((done.id, done.state))
            if done.id == ran.id:
                await client.cancel(waiting.id)
        assert seen == [(ran.id, State.SUCCESS), (waiting.id, State.CANCELLED)]
        assert [s.id for s in await client.wait_many([waiting.id, ran.id])] == [waiting.id, ran.id]
        other = await client.submit(UNSERVED)
        with pytest.raises(WaitTimeout, match=rf"execution {other.id} did not finish within 0.5s") as caught:
            await client.wait_many([ran.id, other.id], timeout=timedelta(seconds=0.5))
        assert caught.value.unfinished == (other.id,)
        await client.cancel(other.id)


def test_mistakes_are_refused_before_anything_is_yielded(shared: ServerProcess) -> None:
    with Client(shared.address) as client:
        done = finished_echo(client, 3)
        with pytest.raises(NotFound, match=f"no execution with id '{'f' * 32}'"):
            next(client.as_completed([done.id, "f" * 32]))
        with pytest.raises(ValidationError, match=r"execution_ids\[1\]: 'x' is not an execution id"):
            client.wait_many([done.id, "x"])


def test_the_cli_waits_for_many_and_prints_each_as_it_ends(shared: ServerProcess, cli: Cli) -> None:
    with Client(shared.address) as client:
        ok = finished_echo(client, 4)
        failed = client.submit("fail", {"retryable": False})
        cancelled = client.submit(UNSERVED)
        client.cancel(cancelled.id)
        client.wait_many([failed.id, cancelled.id])

    people = cli("wait", ok.id, failed.id, cancelled.id)
    assert people.returncode == 1, people.stderr  # the worst end: FAILED
    by_id = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in people.stdout.splitlines()}
    assert len(by_id) == 3, people.stdout
    assert by_id[ok.id] == 'SUCCESS {"n": 4}'
    assert by_id[failed.id].startswith("FAILED (NON_RETRYABLE_ERROR: task 'main' failed"), by_id
    assert by_id[cancelled.id] == "CANCELLED (CANCEL_REQUESTED: cancellation requested)"

    scripts = cli("wait", ok.id, cancelled.id, "--json")
    assert scripts.returncode == 3, scripts.stderr  # CANCELLED, nothing failed
    views = [json.loads(line) for line in scripts.stdout.splitlines()]
    assert {view["id"]: view["state"] for view in views} == {ok.id: "SUCCESS", cancelled.id: "CANCELLED"}

    single = cli("wait", ok.id)
    assert (single.returncode, json.loads(single.stdout)) == (0, {"n": 4})

    unknown = cli("wait", ok.id, "0" * 32)
    assert unknown.returncode == 4
    assert f"taskwire: wait {ok.id} (and 1 more): no execution with id '{'0' * 32}'" in unknown.stderr


def test_the_cli_times_out_naming_how_many_had_not_finished(shared: ServerProcess, cli: Cli) -> None:
    with Client(shared.address) as client:
        ok = finished_echo(client, 5)
        waiting = [client.submit(UNSERVED) for _ in range(2)]
        result = cli("wait", ok.id, *(w.id for w in waiting), "--timeout", "0.5")
        for execution in waiting:
            client.cancel(execution.id)
    assert result.returncode == 6, result.stderr
    assert result.stdout.splitlines() == [f'{ok.id} SUCCESS {{"n": 5}}']
    assert f"2 executions did not finish within 0.5s (the first: {waiting[0].id})" in result.stderr
