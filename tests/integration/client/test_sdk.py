"""The sync and async SDK against a real server and worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta

import pytest

from taskwire.client import (
    AdmissionTimeout,
    AsyncClient,
    Client,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionSpec,
    ExecutionTransition,
    NotFound,
    QueueFull,
    ReasonCode,
    RequestTooLarge,
    RetryPolicy,
    RpcRetry,
    ServerUnavailable,
    State,
    TaskLog,
    TaskProgress,
    TaskRunTransition,
    TaskSpec,
    ValidationError,
    WatchEvent,
    to_payload,
)
from tests.harness import Cluster, ServerProcess
from tests.integration.client.conftest import SERVER_ARGS

QUICK_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=50))


@pytest.fixture
def client(shared: ServerProcess) -> Iterator[Client]:
    with Client(shared.address) as connected:
        yield connected


def check_history(events: list[WatchEvent], execution_id: str) -> None:
    """Sequences start at 1 with no gaps, everything belongs to the execution, the last event is terminal."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert {e.execution_id for e in events} == {execution_id}
    last = events[-1]
    assert isinstance(last, ExecutionTransition)
    assert last.is_terminal
    assert all(not (isinstance(e, ExecutionTransition) and e.is_terminal) for e in events[:-1])


# ---- Sync ---------------------------------------------------------------------------------------


def test_submit_wait_and_get(shared: ServerProcess) -> None:
    with Client(shared.address) as client:
        submitted = client.submit("echo", {"hello": ["world"]}, name="greeting", metadata={"team": "sdk"})
        assert submitted.state in (State.PENDING, State.RUNNING, State.SUCCESS)
        assert not submitted.deduplicated
        assert client.wait(submitted.id) == {"hello": ["world"]}

        done = client.get(submitted.id)
        assert (done.id, done.name, done.state) == (submitted.id, "greeting", State.SUCCESS)
        assert done.reason is not None
        assert done.reason.code is ReasonCode.COMPLETED
        assert done.execution.metadata == {"team": "sdk"}
        assert done.output == {"hello": ["world"]}
        (run,) = done.task_runs
        assert (run.task_id, run.handler, run.state, run.attempt_count) == ("main", "echo", State.SUCCESS, 1)
        view = done.to_json()
        assert (view["id"], view["state"], view["task_runs"][0]["attempts"][0]["output"]) == (
            submitted.id,
            "SUCCESS",
            {"hello": ["world"]},
        )


def test_a_key_deduplicates(client: Client) -> None:
    first = client.submit("echo", 1, key="sdk-key-1")
    again = client.submit("echo", 1, key="sdk-key-1")
    assert again.id == first.id
    assert again.deduplicated


def test_a_multi_task_execution_returns_outputs_by_task_id(client: Client) -> None:
    spec = ExecutionSpec(
        tasks=(
            TaskSpec(handler="echo", task_id="a", input=to_payload({"n": 1})),
            TaskSpec(handler="echo", task_id="b", input=to_payload({"n": 2}), depends_on=("a",)),
        ),
        name="pipeline",
    )
    submitted = client.submit_execution(spec)
    assert [run.task_id for run in submitted.task_runs] == ["a", "b"]
    assert client.wait(submitted.id, timeout=timedelta(seconds=30)) == {"a": {"n": 1}, "b": {"n": 2}}


def test_list_iterates_pages_newest_first(client: Client) -> None:
    ids = [client.submit("echo", n).id for n in range(5)]
    for execution_id in ids:
        client.wait(execution_id)
    newest = list(client.list(handler="echo", page_size=2, limit=5))
    assert [snapshot.id for snapshot in newest] == ids[::-1]
    every = [snapshot.id for snapshot in client.list(handler="echo", states=[State.SUCCESS], page_size=2)]
    assert every[:5] == ids[::-1]
    assert len(every) == len(set(every))
    assert [s.id for s in client.list(states=["SUCCESS"], limit=2)] == ids[::-1][:2]
    assert list(client.list(handler="no-such-handler")) == []


def test_watch_yields_typed_events_in_order(client: Client) -> None:
    submitted = client.submit("progress", {"steps": 3, "interval": 0.02})
    events = list(client.watch(submitted.id))
    check_history(events, submitted.id)
    progress = [e for e in events if isinstance(e, TaskProgress)]
    assert [round(e.fraction, 3) for e in progress] == [0.333, 0.667, 1.0]
    assert [e.message for e in progress] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert [e.text for e in events if isinstance(e, TaskLog)] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    running = next(e for e in events if isinstance(e, TaskRunTransition) and e.to_state is State.RUNNING)
    assert running.sequence < progress[0].sequence
    assert running.attempt == 1
    assert running.worker_id
    assert events[-1].to_state is State.SUCCESS  # type: ignore[union-attr]

    # A late watcher replays from where it says.
    replayed = list(client.watch(submitted.id, after_sequence=2))
    assert [e.sequence for e in replayed] == [e.sequence for e in events[2:]]


def test_cancel_then_wait_raises_cancelled(client: Client) -> None:
    submitted = client.submit("sleep", {"seconds": 60})
    for event in client.watch(submitted.id):
        if isinstance(event, TaskRunTransition) and event.to_state is State.RUNNING:
            break
    after = client.cancel(submitted.id, reason="enough of that")
    assert after.id == submitted.id
    with pytest.raises(ExecutionCancelled) as raised:
        client.wait(submitted.id, timeout=timedelta(seconds=30))
    error = raised.value
    assert error.execution_id == submitted.id
    assert error.reason_code is ReasonCode.CANCEL_REQUESTED
    assert error.snapshot.task_runs[0].state is State.CANCELLED
    # Idempotent: cancelling a terminal execution returns it as it is.
    assert client.cancel(submitted.id).state is State.CANCELLED


def test_a_failure_raises_with_its_reason(client: Client) -> None:
    submitted = client.submit("fail", {"message": "boom", "retryable": False, "type": "Broken"})
    with pytest.raises(ExecutionFailed) as raised:
        client.wait(submitted.id)
    assert raised.value.reason_code is ReasonCode.NON_RETRYABLE_ERROR
    assert "boom" in raised.value.reason_message
    attempt = raised.value.snapshot.task_runs[0].attempts[0]
    assert attempt.error is not None
    assert (attempt.error.type, attempt.error.message) == ("Broken", "boom")


def test_retries_and_timeouts_are_sent_to_the_server(client: Client) -> None:
    retried = client.submit("fail", {"retryable": True}, max_attempts=2, retry_policy=QUICK_RETRY)
    with pytest.raises(ExecutionFailed) as raised:
        client.wait(retried.id)
    assert raised.value.reason_code is ReasonCode.RETRIES_EXHAUSTED
    assert raised.value.snapshot.task_runs[0].attempt_count == 2

    timed = client.submit("sleep", {"seconds": 30}, timeout=timedelta(milliseconds=300))
    with pytest.raises(ExecutionFailed) as raised:
        client.wait(timed.id, timeout=timedelta(seconds=30))
    assert raised.value.reason_code is ReasonCode.TIMED_OUT


def test_server_errors_are_typed(client: Client) -> None:
    with pytest.raises(NotFound, match="no-such-id"):
        client.get("no-such-id")
    with pytest.raises(NotFound):
        list(client.watch("no-such-id"))
    with pytest.raises(ValidationError) as raised:
        client.submit("echo", max_attempts=1000)
    assert raised.value.field == "execution.tasks[0].retry_policy.max_attempts"


def test_large_submits_at_once_each_fit_and_one_too_large_fails_alone(client: Client) -> None:
    # Each is under the payload limit (2 MiB); together they are over a message's (5 MiB). None shares a message
    # the server must refuse, and the one over every limit fails on a call of its own.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        too_large = pool.submit(client.submit, "echo", "x" * 6_000_000)
        large = [pool.submit(client.submit, "echo", "x" * 1_500_000) for _ in range(8)]
        small = [pool.submit(client.submit, "echo", {"n": n}) for n in range(100)]
        ids = [future.result().id for future in large + small]
        with pytest.raises(RequestTooLarge, match="larger than max"):
            too_large.result()
    assert [done.state for done in client.wait_many(ids, timedelta(seconds=60))] == [State.SUCCESS] * len(ids)


async def test_large_submits_at_once_fit_on_an_async_client_too(shared: ServerProcess) -> None:
    async with AsyncClient(shared.address) as client:
        submitted = await asyncio.gather(
            client.submit("echo", "x" * 6_000_000),
            *(client.submit("echo", "x" * 1_500_000) for _ in range(5)),
            *(client.submit("echo", {"n": n}) for n in range(50)),
            return_exceptions=True,
        )
        assert isinstance(submitted[0], RequestTooLarge)
        assert not [result for result in submitted[1:] if isinstance(result, BaseException)]


def test_a_wait_without_end_is_a_wait_on_a_client_without_end(shared: ServerProcess) -> None:
    with Client(shared.address, timeout=timedelta.max) as client:
        done = client.submit("echo", {"n": 1})
        assert client.wait(done.id, timedelta.max) == {"n": 1}
        seen: list[WatchEvent] = []
        assert client.wait_finished(done.id, timedelta.max, on_event=seen.append).state is State.SUCCESS


def test_a_very_long_id_is_quoted_in_part(client: Client) -> None:
    with pytest.raises(NotFound, match=r"^no execution with id 'eeee.*… \(\d+ more characters\)$"):
        client.get("e" * 20_000)


def test_submit_many_reports_each_item(client: Client) -> None:
    specs = [
        ExecutionSpec(tasks=(TaskSpec(handler="echo", input=to_payload(1)),)),
        ExecutionSpec(tasks=(TaskSpec(handler=""),)),
        ExecutionSpec(tasks=(TaskSpec(handler="echo", input=to_payload(3)),), idempotency_key="sdk-many-1"),
    ]
    first, bad, keyed = client.submit_many(specs)
    assert first.ok
    assert client.wait(first.execution_id) == 1
    assert not bad.ok
    assert isinstance(bad.error, ValidationError)
    assert "handler" in str(bad.error)
    assert keyed.ok
    assert not keyed.deduplicated
    (again,) = client.submit_many([specs[2]])
    assert (again.execution_id, again.deduplicated) == (keyed.execution_id, True)


def test_stats_and_workers(client: Client) -> None:
    stats = client.stats()
    assert stats.connected_workers == 1
    assert stats.queue.capacity > 0
    assert "echo" in [h.handler for h in stats.handlers]
    (worker,) = client.workers()
    assert worker.slots == 8
    assert {"echo", "sleep", "fail", "progress"} <= set(worker.handlers)
    assert worker.connected_at is not None


def test_an_unreachable_server_raises_server_unavailable() -> None:
    with Client("127.0.0.1:1", retry=RpcRetry(max_attempts=2, initial_backoff_s=0.01)) as client:
        with pytest.raises(ServerUnavailable, match=r"cannot reach the server at 127\.0\.0\.1:1"):
            client.stats()
        with pytest.raises(ServerUnavailable):
            list(client.watch("x"))


def test_a_full_queue(procs: Cluster) -> None:
    server = procs.server(*SERVER_ARGS, "--queue-capacity", "1")  # no worker: nothing leaves the queue
    with Client(server.address, timeout=timedelta(seconds=0.5)) as client:
        client.submit("echo")
        with pytest.raises(QueueFull, match="queue full"):
            client.submit("echo")
        with pytest.raises(AdmissionTimeout):
            client.submit("echo", wait_for_room=True)


# ---- Async --------------------------------------------------------------------------------------


async def test_async_submit_wait_get_list(shared: ServerProcess) -> None:
    async with AsyncClient(shared.address) as client:
        ids = [(await client.submit("echo", {"async": n})).id for n in range(3)]
        assert [await client.wait(execution_id) for execution_id in ids] == [{"async": n} for n in range(3)]
        done = await client.get(ids[0])
        assert done.state is State.SUCCESS
        listed = [s.id async for s in client.list(handler="echo", page_size=1, limit=3)]
        assert listed == ids[::-1]


async def test_async_watch_in_order(shared: ServerProcess) -> None:
    async with AsyncClient(shared.address) as client:
        submitted = await client.submit("progress", {"steps": 2, "interval": 0.02})
        events = [e async for e in client.watch(submitted.id)]
        check_history(events, submitted.id)
        assert [e.fraction for e in events if isinstance(e, TaskProgress)] == [0.5, 1.0]


async def test_async_cancel_and_failure(shared: ServerProcess) -> None:
    async with AsyncClient(shared.address) as client:
        sleeping = await client.submit("sleep", {"seconds": 60})
        async for event in client.watch(sleeping.id):
            if isinstance(event, TaskRunTransition) and event.to_state is State.RUNNING:
                break
        await client.cancel(sleeping.id, reason="stop")
        with pytest.raises(ExecutionCancelled) as cancelled:
            await client.wait(sleeping.id, timeout=timedelta(seconds=30))
        assert cancelled.value.reason_code is ReasonCode.CANCEL_REQUESTED

        failing = await client.submit("fail", {"retryable": False})
        with pytest.raises(ExecutionFailed) as failed:
            await client.wait(failing.id)
        assert failed.value.reason_code is ReasonCode.NON_RETRYABLE_ERROR

        with pytest.raises(NotFound):
            await client.get("no-such-id")


async def test_async_stats_workers_and_submit_many(shared: ServerProcess) -> None:
    async with AsyncClient(shared.address) as client:
        assert (await client.stats()).connected_workers == 1
        assert [w.slots for w in await client.workers()] == [8]
        results = await client.submit_many(
            [ExecutionSpec(tasks=(TaskSpec(handler="echo", input=to_payload(n)),)) for n in range(3)]
        )
        assert all(result.ok for result in results)
        assert [await client.wait(result.execution_id) for result in results] == [0, 1, 2]


async def test_async_unreachable_server() -> None:
    async with AsyncClient("127.0.0.1:1", retry=RpcRetry(max_attempts=2, initial_backoff_s=0.01)) as client:
        with pytest.raises(ServerUnavailable):
            await client.stats()


def test_a_call_that_failed_is_finalized_before_the_interpreter_stops(shared: ServerProcess) -> None:
    """A failed call held in a reference cycle (here by the WaitTimeout its wait raised) is collected when the
    program exits, while gRPC's threads still run; left to the interpreter's last collection, its finalizer
    could wait forever for a lock a stopped gRPC thread holds, and the process would not exit."""
    script = textwrap.dedent(
        f"""
        import gc, sys, weakref
        from datetime import timedelta
        import grpc
        from taskwire.client import Client, WaitTimeout

        def freed(_):
            print("finalized while the interpreter stops" if sys.is_finalizing() else "finalized before", flush=True)

        gc.disable()  # the cycle is then still there below, whenever the collector would have run otherwise
        client = Client({shared.address!r})
        sleeping = client.submit("sleep", {{"seconds": 30}})
        try:
            client.wait(sleeping.id, timedelta(seconds=0.2))
        except WaitTimeout:
            pass
        client.cancel(sleeping.id)
        client.close()
        held = [weakref.ref(item, freed) for item in gc.get_objects() if isinstance(item, grpc.Call)]
        print(len(held), "held", flush=True)
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "1 held\nfinalized before\n", "")
