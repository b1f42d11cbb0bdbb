"""WatchEvents and GetIdentity over the wire: the SDKs (sync and async), the CLI, and bad filters."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from taskwire.client import (
    AsyncClient,
    Client,
    ExecutionTransition,
    Identity,
    PermissionDenied,
    State,
    TaskProgress,
    Unauthenticated,
    WatchEvent,
)
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.harness import BIN, Cluster, ServerProcess, spawn
from tests.integration.security.auth_support import start_secured


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with a demo worker for the module: every test watches from its own now."""
    running = Cluster(tmp_path_factory.mktemp("events"))
    try:
        server = running.server()
        running.worker(server, name="events-worker")
        yield server
    finally:
        running.close()


class Collected:
    """A sync watch_events read in a thread; `done` once the executions in `wanted` have all ended."""

    def __init__(self, client: Client, **filters: object) -> None:
        self.events: list[WatchEvent] = []
        self.wanted: set[str] | None = None
        self.done = threading.Event()
        self._stream = client.watch_events(**filters)  # type: ignore[arg-type]
        self._ends: set[str] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for event in self._stream:
            self.events.append(event)
            if isinstance(event, ExecutionTransition) and event.is_terminal:
                self._ends.add(event.execution_id)
                if self.wanted is not None and self.wanted <= self._ends:
                    self.done.set()
                    return

    def of(self, execution_id: str) -> list[WatchEvent]:
        return [event for event in self.events if event.execution_id == execution_id]


def subscribed(client: Client, *watchers: Collected) -> None:
    """Each stream is live from its call on: run small executions until every watcher has seen one."""
    for _ in range(20):
        warmup = client.submit("progress", {"steps": 1, "interval": 0.01})
        client.wait(warmup.id, timeout=timedelta(seconds=10))
        if all(watcher.events for watcher in watchers):
            return
    raise AssertionError("the watchers never received an event")


@pytest.fixture
def sdk(served: ServerProcess) -> Iterator[Client]:
    with Client(served.address) as client:
        yield client


def test_watch_events_follows_every_execution_and_filters_by_handler_and_state(sdk: Client) -> None:
    everything = Collected(sdk)
    progress_only = Collected(sdk, handler="progress")
    running_only = Collected(sdk, states=["RUNNING"])
    subscribed(sdk, everything, progress_only, running_only)
    echo = sdk.submit("echo", {"n": 1})
    progress = sdk.submit("progress", {"steps": 3, "interval": 0.05})
    everything.wanted = {echo.id, progress.id}
    progress_only.wanted = {progress.id}
    running_only.wanted = {echo.id, progress.id}
    for collected in (everything, progress_only, running_only):
        assert collected.done.wait(20), "every watcher saw the ends it waits for"

    assert [e.sequence for e in everything.of(progress.id)] == list(range(1, len(everything.of(progress.id)) + 1))
    assert echo.id in {e.execution_id for e in everything.events}
    assert echo.id not in {e.execution_id for e in progress_only.events}
    assert progress_only.of(progress.id) == everything.of(progress.id)
    assert sum(isinstance(e, TaskProgress) for e in progress_only.of(progress.id)) == 3
    # RUNNING: from the start to the end, not the creation nor the dispatch made while PENDING.
    running = running_only.of(progress.id)
    first = running[0]
    assert isinstance(first, ExecutionTransition)
    assert (first.from_state, first.to_state) == (State.PENDING, State.RUNNING)
    assert isinstance(running[-1], ExecutionTransition)
    assert running[-1].to_state is State.SUCCESS


def test_an_unknown_state_is_refused_naming_the_field(sdk: Client, served: ServerProcess) -> None:
    with pytest.raises(ValueError, match="unknown state"):
        next(sdk.watch_events(states=["SOMETIMES"]))
    with grpc.insecure_channel(served.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stub.WatchEvents(tpb.WatchEventsRequest(states=[pb.ExecutionState.ValueType(99)]), timeout=5)))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "states" in (refused.value.details() or "")


async def test_the_async_sdk_watches_events_and_asks_who_it_is(served: ServerProcess) -> None:
    async with AsyncClient(served.address) as client:
        identity = await client.identity()
        assert (identity.name, identity.role) == ("", "admin")  # no authentication configured
        stream = client.watch_events(handler="echo")
        first = asyncio.ensure_future(anext(stream))
        submitted: set[str] = set()
        while not first.done():  # live from the call: submit until the stream has one
            submitted.add((await client.submit("echo", {})).id)
            await asyncio.wait({first}, timeout=0.2)
        assert first.result().execution_id in submitted
        ignored = await client.submit("progress", {"steps": 1, "interval": 0.01})
        mine = await client.submit("echo", {"last": True})
        async for event in stream:
            assert event.execution_id != ignored.id, "the handler filter holds"
            if event.execution_id == mine.id and isinstance(event, ExecutionTransition) and event.is_terminal:
                break
        await stream.aclose()


def test_the_cli_prints_events_as_lines(served: ServerProcess, sdk: Client) -> None:
    cli = spawn([str(BIN / "taskwire"), "--server", served.address, "events", "--handler", "echo"])
    try:
        for _ in range(40):
            done = sdk.submit("echo", {"cli": True})
            sdk.wait(done.id, timeout=timedelta(seconds=10))
            try:
                line = cli.wait_for_line(rf"{done.id} #\d+ .* execution SUCCESS .*", timeout_s=0.5)
                break
            except TimeoutError:
                continue  # it subscribed after that one ended: a later one shows
        else:
            raise AssertionError(f"taskwire events printed no execution's end:\n{cli.output}")
        assert "COMPLETED" in line.group(0)
    finally:
        cli.kill()


def test_with_authentication_get_identity_names_the_caller_and_watch_events_needs_a_reader(procs: Cluster) -> None:
    secured = start_secured(procs)
    for name, role in (("alice", "submitter"), ("reader", "reader"), ("worker-a", "worker"), ("admin", "admin")):
        with secured.client(name) as client:
            assert client.identity() == Identity(name=name, role=role)
    with secured.client("alice") as submitter, pytest.raises(PermissionDenied, match="WatchEvents"):
        next(submitter.watch_events())
    with secured.client() as nobody, pytest.raises(Unauthenticated):
        nobody.identity()
