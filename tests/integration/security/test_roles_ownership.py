"""A submitter sees and touches only its own executions: another's is NOT_FOUND for get, watch, wait and cancel
(as an id that does not exist: an id reveals nothing to whom it does not belong), and absent from its
listing; readers and admins see all. Who submitted an execution is stored with it and survives a restart."""

from __future__ import annotations

import asyncio

import pytest

from taskwire.client import (
    AsyncClient,
    ExecutionSpec,
    IdempotencyConflict,
    NotFound,
    PermissionDenied,
    State,
    TaskSpec,
    to_payload,
)
from tests.harness import Cluster
from tests.integration.security.auth_support import NO_RETRY, Secured, start_secured


@pytest.fixture
def secured(procs: Cluster) -> Secured:
    return start_secured(procs)


def test_a_submitter_cannot_see_or_cancel_another_submitters_execution(secured: Secured) -> None:
    with secured.client("alice") as alice, secured.client("bob") as bob, secured.client("reader") as reader:
        mine = alice.submit("echo", {"who": "alice"}, name="alice's")
        theirs = bob.submit("echo", {"who": "bob"}, name="bob's")
        for call in (
            lambda: bob.get(mine.id),
            lambda: bob.cancel(mine.id, reason="not mine"),
            lambda: list(bob.watch(mine.id)),
            lambda: bob.wait_many([theirs.id, mine.id]),
        ):
            with pytest.raises(NotFound, match=f"no execution with id '{mine.id}'"):
                call()
        assert alice.get(mine.id).state is State.PENDING  # untouched by bob's cancel
        assert [s.id for s in alice.list()] == [mine.id]
        assert [s.id for s in bob.list()] == [theirs.id]
        assert [s.id for s in reader.list()] == [theirs.id, mine.id]
        assert reader.get(mine.id).name == "alice's"
        with pytest.raises(PermissionDenied, match="DeleteExecution; it needs admin"):
            alice.delete(mine.id)
        assert alice.cancel(mine.id).id == mine.id  # its own
        assert alice.wait_finished(mine.id).state is State.CANCELLED
    secured.server.process.wait_for_line(
        rf"audit action=denied identity=bob method=CancelExecution target={mine.id} role=submitter code=NOT_FOUND"
    )


def test_an_idempotency_key_is_not_a_way_into_another_submitters_execution(secured: Secured) -> None:
    with secured.client("alice") as alice, secured.client("bob") as bob:
        first = alice.submit("echo", {"n": 1}, key="nightly")
        assert alice.submit("echo", {"n": 1}, key="nightly").id == first.id  # a repeat by alice
        with pytest.raises(IdempotencyConflict):
            bob.submit("echo", {"n": 1}, key="nightly")
        assert [s.id for s in bob.list()] == []


def test_a_batch_is_recorded_as_its_submitters(secured: Secured) -> None:
    with secured.client("alice") as alice, secured.client("bob") as bob:
        results = alice.submit_many([_spec(n) for n in range(3)])
        ids = [result.execution_id for result in results]
        assert all(result.ok for result in results)
        assert sorted(s.id for s in alice.list()) == sorted(ids)
        assert list(bob.list()) == []


async def test_the_async_client_sends_its_token_on_every_kind_of_call(secured: Secured) -> None:
    async with (
        AsyncClient(secured.address, token=secured.tokens["alice"], retry=NO_RETRY) as alice,
        AsyncClient(secured.address, token=secured.tokens["bob"], retry=NO_RETRY) as bob,
    ):
        mine = await alice.submit("echo", {"n": 1})
        assert (await alice.get(mine.id)).id == mine.id
        assert [s.id async for s in alice.list()] == [mine.id]
        await alice.cancel(mine.id)
        events = [event async for event in alice.watch(mine.id)]  # a server stream, with the token
        assert events[-1].execution_id == mine.id
        with pytest.raises(NotFound):
            await bob.get(mine.id)
        with pytest.raises(NotFound):
            await asyncio.wait_for(_drain(bob, mine.id), 10)


async def _drain(client: AsyncClient, execution_id: str) -> None:
    async for _ in client.watch(execution_id):
        pass


def test_the_submitter_is_kept_across_a_restart(secured: Secured, procs: Cluster) -> None:
    with secured.client("alice") as alice:
        mine = alice.submit("echo", {"n": 1})
    secured.server.process.stop()
    restarted = procs.server_at(secured.address, "--auth-file", str(secured.auth_file))
    again = Secured(restarted, secured.tokens, secured.auth_file)
    with again.client("alice") as alice, again.client("bob") as bob:
        assert alice.get(mine.id).id == mine.id
        assert [s.id for s in alice.list()] == [mine.id]
        with pytest.raises(NotFound):
            bob.get(mine.id)
        assert list(bob.list()) == []


def _spec(n: int) -> ExecutionSpec:
    return ExecutionSpec(tasks=(TaskSpec("echo", input=to_payload({"n": n})),))
