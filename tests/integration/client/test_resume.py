"""`watch` and `wait` across a server restart: the SDK (sync and asyncio) and the CLI reconnect with backoff
and carry on from the last event they saw, for as long as the caller's timeout allows.

Each test kills the server (SIGKILL) under running watches while a worker runs a task; the outage is a span
of time, so it is the one place these tests sleep.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from taskwire.client import (
    AsyncClient,
    Client,
    ExecutionSnapshot,
    ExecutionTransition,
    State,
    WaitTimeout,
    WatchEvent,
)
from tests.harness import Cluster, Process, ServerProcess, spawn, wait_for
from tests.integration.client.conftest import Cli
from tests.integration.workers.support import wait_until_running

SERVER_ARGS = ("--lease-timeout", "2", "--heartbeat-interval", "0.5")
# The restarted server waits this long for the worker to come back (its reconnect backoff is randomised).
RESTARTED_ARGS = ("--lease-timeout", "15", "--heartbeat-interval", "0.5")
# Longer than the SDK's default retries of one call (about 0.7 s): only a watch that resumes survives it.
OUTAGE_S = 2.0
FINISH = timedelta(seconds=60)


@dataclass
class Background:
    """A call run on a thread: what it returned or raised, and the events it saw on the way."""

    events: list[WatchEvent] = field(default_factory=list)
    finished: list[ExecutionSnapshot] = field(default_factory=list)  # of a wait for many
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, call: Callable[[Background], Any]) -> Background:
        def target() -> None:
            try:
                self.result = call(self)
            except BaseException as error:  # handed to the test, which asserts on it
                self.error = error
            finally:
                self.done.set()

        threading.Thread(target=target, daemon=True).start()
        return self

    def outcome(self, timeout_s: float = 60.0) -> Any:
        assert self.done.wait(timeout_s), "the call did not return"
        if self.error is not None:
            raise self.error
        return self.result

    def sequences(self) -> list[int]:
        return [event.sequence for event in self.events]


def sync_watch(address: str, execution_id: str, timeout: timedelta | None = FINISH) -> Background:
    def call(seen: Background) -> None:
        with Client(address) as client:
            for event in client.watch(execution_id, timeout=timeout):
                seen.events.append(event)

    return Background().run(call)


def async_watch(address: str, execution_id: str) -> Background:
    async def follow(seen: Background) -> None:
        async with AsyncClient(address) as client:
            async for event in client.watch(execution_id, timeout=FINISH):
                seen.events.append(event)

    return Background().run(lambda seen: asyncio.run(follow(seen)))


def sync_wait(address: str, execution_id: str, timeout: timedelta = FINISH) -> Background:
    def call(seen: Background) -> Any:
        with Client(address) as client:
            return client.wait_finished(execution_id, timeout, on_event=seen.events.append)

    return Background().run(call)


def async_wait(address: str, execution_id: str, timeout: timedelta) -> Background:
    async def wait(seen: Background) -> Any:
        async with AsyncClient(address) as client:
            return await client.wait_finished(execution_id, timeout, on_event=seen.events.append)

    return Background().run(lambda seen: asyncio.run(wait(seen)))


def sync_as_completed(address: str, execution_ids: list[str]) -> Background:
    def call(seen: Background) -> None:
        with Client(address) as client:
            seen.finished.extend(client.as_completed(execution_ids, FINISH))

    return Background().run(call)


def async_as_completed(address: str, execution_ids: list[str]) -> Background:
    async def follow(seen: Background) -> None:
        async with AsyncClient(address) as client:
            async for done in client.as_completed(execution_ids, FINISH):
                seen.finished.append(done)

    return Background().run(lambda seen: asyncio.run(follow(seen)))


def cli_process(address: str, *args: str) -> Process:
    return spawn(Cli(address).command(*args), env={"TASKWIRE_SERVER": address})


def following(*calls: Background) -> None:
    """Wait until every call has received an event: each watch has reached the server."""
    wait_for(lambda: all(call.events for call in calls), what="every watch to receive an event")


def restart(procs: Cluster, server: ServerProcess) -> ServerProcess:
    port = server.address.rsplit(":", 1)[1]
    restarted = procs.server("--listen", f"127.0.0.1:{port}", *RESTARTED_ARGS)
    assert (restarted.address, restarted.db_path) == (server.address, server.db_path)
    return restarted


def assert_whole_history(sequences: list[int], history: list[int]) -> None:
    """Every event of the history, each once, in order: no gap, no repeat."""
    assert sequences == history, (sequences, history)
    assert sequences == list(range(1, len(sequences) + 1))


@pytest.fixture
def running(procs: Cluster) -> tuple[ServerProcess, str]:
    """A server and a worker running a task of a few seconds: (server, execution id)."""
    server = procs.server(*SERVER_ARGS)
    procs.worker(server, slots=1)
    with Client(server.address) as client:
        execution = client.submit("sleep", {"seconds": 5})
        wait_until_running(client, execution.id)
    return server, execution.id


@pytest.mark.slow
def test_watch_and_wait_resume_across_a_server_crash_and_restart(
    procs: Cluster, running: tuple[ServerProcess, str]
) -> None:
    server, execution_id = running
    # With a timeout, a wait reconnects until it passes, whether or not it had reached the server already.
    cli_wait = cli_process(server.address, "wait", execution_id, "--timeout", "60")
    cli_watch = cli_process(server.address, "watch", execution_id, "--json")
    cli_watch.wait_for_line(r'"sequence"')
    watches = [sync_watch(server.address, execution_id, None), async_watch(server.address, execution_id)]
    waits = [sync_wait(server.address, execution_id)]
    following(*watches, *waits)

    server.process.kill()
    time.sleep(OUTAGE_S)  # the outage
    restarted = restart(procs, server)

    for watch in watches:
        watch.outcome()
    done = waits[0].outcome()
    assert done.state is State.SUCCESS, done
    assert done.output == {"slept_s": 5.0}
    with Client(restarted.address) as client:
        history = [event.sequence for event in client.watch(execution_id, timeout=FINISH)]
    for call in [*watches, *waits]:
        assert_whole_history(call.sequences(), history)
        last = call.events[-1]
        assert isinstance(last, ExecutionTransition), last
        assert last.to_state is State.SUCCESS, last

    assert cli_watch.wait(timeout_s=60) == 0, cli_watch.output
    events = [json.loads(line) for line in cli_watch.output.splitlines()]
    assert_whole_history([int(event["sequence"]) for event in events], history)
    assert events[-1]["execution_transition"]["to_state"] == "EXECUTION_STATE_SUCCESS"
    assert cli_wait.wait(timeout_s=60) == 0, cli_wait.output
    assert json.loads(cli_wait.output) == {"slept_s": 5.0}


def test_a_timeout_shorter_than_the_outage_ends_with_wait_timeout(running: tuple[ServerProcess, str]) -> None:
    server, execution_id = running
    timeout = timedelta(seconds=3)
    cli_wait = cli_process(server.address, "wait", execution_id, "--timeout", "3")
    cli_watch = cli_process(server.address, "watch", execution_id, "--timeout", "3")
    cli_watch.wait_for_line(r"task main RUNNING")
    calls = [
        sync_watch(server.address, execution_id, timeout),
        sync_wait(server.address, execution_id, timeout),
        async_wait(server.address, execution_id, timeout),
    ]
    following(*calls)

    server.process.kill()  # and no restart within the timeout

    for call in calls:
        with pytest.raises(WaitTimeout, match=rf"execution {execution_id} did not finish within 3s"):
            call.outcome()
    for process, command in ((cli_wait, "wait"), (cli_watch, "watch")):
        assert process.wait(timeout_s=30) == 6, process.output
        assert f"taskwire: {command} {execution_id}: execution {execution_id} did not finish within 3s" in (
            process.output
        )


@pytest.mark.slow
def test_a_wait_for_many_resumes_across_a_server_crash_and_restart(procs: Cluster) -> None:
    server = procs.server(*SERVER_ARGS)
    procs.worker(server, slots=1)
    with Client(server.address) as client:
        # One finished before the waits begin, one running, one queued behind it (one slot).
        done = client.wait_finished(client.submit("echo", {"n": 1}).id)
        sleeping = client.submit("sleep", {"seconds": 5})
        wait_until_running(client, sleeping.id)
        queued = client.submit("echo", {"n": 2})
    execution_ids = [sleeping.id, queued.id, done.id]
    cli_wait = cli_process(server.address, "wait", *execution_ids, "--timeout", "60", "--json")
    waits = [sync_as_completed(server.address, execution_ids), async_as_completed(server.address, execution_ids)]
    # Each has reached the server: the finished one came at once.
    wait_for(lambda: all(call.finished for call in waits), what="every wait to receive the finished execution")
    cli_wait.wait_for_line(done.id)

    server.process.kill()
    time.sleep(OUTAGE_S)  # the outage
    restarted = restart(procs, server)

    with Client(restarted.address) as client:
        final = {s.id: s for s in client.wait_many(execution_ids, FINISH)}
    assert {i: s.state for i, s in final.items()} == dict.fromkeys(execution_ids, State.SUCCESS)
    for call in waits:
        call.outcome()
        assert call.finished[0].id == done.id
        assert sorted(s.id for s in call.finished) == sorted(execution_ids)  # each once
        assert {s.id: s.output for s in call.finished} == {i: s.output for i, s in final.items()}
    assert cli_wait.wait(timeout_s=60) == 0, cli_wait.output
    views = [json.loads(line) for line in cli_wait.output.splitlines()]
    assert views[0]["id"] == done.id
    assert sorted(view["id"] for view in views) == sorted(execution_ids), cli_wait.output
