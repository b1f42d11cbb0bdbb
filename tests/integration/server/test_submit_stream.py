"""StreamSubmits against real servers: many SDK submits at once (each its own execution, all run), a submit's
own failure answered alone on a stream that goes on, fail-fast and wait-for-room admission, the stream's own
refusals (each ending that call only, logged once), idempotency keys, and a server stopped under a stream.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import grpc.aio
import pytest

from taskwire.client import (
    AdmissionTimeout,
    AsyncClient,
    Client,
    ExecutionSnapshot,
    QueueFull,
    ServerUnavailable,
    ShuttingDown,
    State,
)
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.harness import Cluster, ServerProcess, wait_for
from tests.integration.server import support
from tests.integration.server.support import WAIT_FOR_ROOM, duration, spec, task
from tests.integration.server.test_metrics import metrics_url, scrape, value

STREAM_SUBMITS = "/taskwire.v1.TaskService/StreamSubmits"
FINISH = timedelta(seconds=30)


def streamed(
    submit_id: int,
    execution: tpb.ExecutionSpec | None = None,
    *,
    admission: tpb.AdmissionMode.ValueType = support.FAIL_FAST,
    timeout_s: float | None = None,
) -> tpb.StreamedSubmit:
    """A submit of the stream; without `execution`, one that lacks its request."""
    submit = tpb.StreamedSubmit(id=submit_id)
    if execution is not None:
        submit.request.CopyFrom(tpb.SubmitExecutionRequest(execution=execution, admission=admission))
    if timeout_s is not None:
        submit.timeout.CopyFrom(duration(timeout_s))
    return submit


def message(*submits: tpb.StreamedSubmit) -> tpb.StreamSubmitsRequest:
    return tpb.StreamSubmitsRequest(submits=list(submits))


@pytest.fixture
async def aio_channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield channel


def open_stream(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.StreamStreamCall[tpb.StreamSubmitsRequest, tpb.StreamSubmitsResponse]:
    """A StreamSubmits call of the generated stub, opened with `metadata` (a credential)."""
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    call: grpc.aio.StreamStreamCall[tpb.StreamSubmitsRequest, tpb.StreamSubmitsResponse] = stub.StreamSubmits(
        metadata=metadata, timeout=support.RPC_TIMEOUT_S
    )
    return call


async def answers(
    call: grpc.aio.StreamStreamCall[tpb.StreamSubmitsRequest, tpb.StreamSubmitsResponse], count: int
) -> dict[int, tpb.StreamedSubmitAnswer]:
    """The next `count` answers of the stream (they may come in several messages), by submit id."""
    received: dict[int, tpb.StreamedSubmitAnswer] = {}
    while len(received) < count:
        response = await call.read()
        assert isinstance(response, tpb.StreamSubmitsResponse), f"the stream ended after {len(received)} of {count}"
        for answer in response.answers:
            assert answer.id not in received, f"submit {answer.id} answered twice"
            received[answer.id] = answer
    return received


async def ended_with(
    call: grpc.aio.StreamStreamCall[tpb.StreamSubmitsRequest, tpb.StreamSubmitsResponse],
) -> support.Status:
    """Read the stream to its end; the status it ended with (answers of submits still in flight come first)."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as error:
        return support.Status(error.code(), error.details() or "")
    return support.Status(await call.code(), await call.details() or "")


def assert_refusal_logged_once(server: ServerProcess, before: int) -> None:
    """The refusal wrote one line (naming StreamSubmits), no more, and no traceback (the audit lines of the
    test's own calls aside)."""
    wait_for(
        lambda: any("rejected StreamSubmits" in line for line in server.process.lines[before:]),
        what="the refusal's log line",
    )
    new = [line for line in server.process.lines[before:] if "taskwire.audit:" not in line]
    assert not any("Traceback" in line for line in new), "\n".join(new)
    assert len(new) <= 1, "\n".join(new)


def still_serving(server: ServerProcess, connect: Callable[[ServerProcess], support.Client]) -> None:
    """Another client's submit is accepted after a refused stream (the SDK's, over a stream of its own)."""
    with Client(server.address) as sdk:
        assert sdk.submit("echo", {"after": "refusal"}).state is State.PENDING
    assert connect(server).stats().queue.size >= 1


# ---- Many submits at once -------------------------------------------------------------------------------


def assert_all_ran(
    server: ServerProcess, submitted: Sequence[ExecutionSnapshot], finished: Sequence[ExecutionSnapshot]
) -> None:
    """Each submit was answered with its own execution (named as it was submitted), all distinct, all ran to
    SUCCESS with their own input as output, and the server stores exactly these."""
    ids = [snapshot.id for snapshot in submitted]
    assert all(ids)
    assert len(set(ids)) == len(ids), "two submits were answered with the same execution"
    assert [done.id for done in finished] == ids
    assert [done.state for done in finished] == [State.SUCCESS] * len(ids)
    assert [done.output for done in finished] == [{"name": snapshot.name} for snapshot in submitted]
    raw = support.Client.of(server)
    try:
        assert raw.stored_ids() == set(ids)
    finally:
        raw.close()


def assert_streamed(url: str) -> None:
    """The SDK's submits went over StreamSubmits: once its client closed, its stream ended (cancelled by the
    client), and no SubmitExecution call was made."""
    wait_for(
        lambda: value(scrape(url), "grpc_server_handled_total", grpc_method="StreamSubmits") >= 1,
        what="the SDK's submit stream to end",
    )
    assert value(scrape(url), "grpc_server_handled_total", grpc_method="SubmitExecution") == 0


@pytest.fixture
def worked(procs: Cluster) -> ServerProcess:
    """A server with a metrics endpoint and a demo worker of 16 slots."""
    server = procs.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--metrics-listen", "127.0.0.1:0")
    procs.worker(server, slots=16)
    server.wait_for_workers(1)
    return server


async def test_many_concurrent_async_submits_each_get_their_own_execution(worked: ServerProcess) -> None:
    names = [f"async-{n}" for n in range(200)]
    async with AsyncClient(worked.address) as client:
        submitted = await asyncio.gather(*(client.submit("echo", {"name": name}, name=name) for name in names))
        assert [snapshot.name for snapshot in submitted] == names
        finished = await client.wait_many([snapshot.id for snapshot in submitted], FINISH)
    assert_all_ran(worked, submitted, finished)
    assert_streamed(metrics_url(worked.process))


def test_many_threads_share_one_clients_submit_stream(worked: ServerProcess) -> None:
    threads, each = 16, 12
    with Client(worked.address) as client:
        start = threading.Barrier(threads)

        def submit_some(thread: int) -> list[ExecutionSnapshot]:
            start.wait(timeout=10)
            names = [f"thread-{thread}-{n}" for n in range(each)]
            return [client.submit("echo", {"name": name}, name=name) for name in names]

        with ThreadPoolExecutor(threads) as pool:
            submitted = [snapshot for batch in pool.map(submit_some, range(threads)) for snapshot in batch]
        assert [snapshot.name for snapshot in submitted] == [
            f"thread-{thread}-{n}" for thread in range(threads) for n in range(each)
        ]
        finished = client.wait_many([snapshot.id for snapshot in submitted], FINISH)
    assert_all_ran(worked, submitted, finished)
    assert_streamed(metrics_url(worked.process))


def test_closing_a_client_frees_its_submit_stream_while_grpcs_threads_still_run(worked: ServerProcess) -> None:
    """What lets a process exit right after closing its client (the CLI): a call object still alive at
    interpreter exit is finalized by the collector under a lock gRPC's event thread may hold, frozen as the
    interpreter stops, and the process hangs. With the collector off, close() itself must free every call."""

    def live_calls() -> int:
        return sum(isinstance(item, grpc.Call) for item in gc.get_objects())

    gc.collect()
    before = live_calls()
    gc.disable()
    try:
        with Client(worked.address) as client:
            client.submit("echo", {"n": 1})
            assert live_calls() == before + 1  # the submit stream
        assert live_calls() == before
    finally:
        gc.enable()


def test_an_async_client_closed_in_one_event_loop_leaves_nothing_for_the_next(procs: Cluster) -> None:
    """`asyncio.run` closes its loop once the client is closed: gRPC must not have events of the client's calls
    still due on it, or it hands them to the closed loop ("Event loop is closed", printed by the next loop)."""
    server = procs.server()
    script = textwrap.dedent(
        f"""
        import asyncio
        from taskwire.client import AsyncClient

        async def submit_some() -> None:
            async with AsyncClient({server.address!r}) as client:
                for _ in range(3):
                    await client.submit("echo", None)

        for _ in range(4):
            asyncio.run(submit_some())
        print("ran")
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "ran\n", "")


async def test_closing_an_async_client_answers_its_submits_in_flight_first(worked: ServerProcess) -> None:
    client = AsyncClient(worked.address)
    submits = [asyncio.ensure_future(client.submit("echo", {"n": n}, name=f"in-flight-{n}")) for n in range(50)]
    for _ in range(10):  # loop turns: each submit is queued on the stream
        await asyncio.sleep(0)
    await client.close()
    submitted = await asyncio.gather(*submits)
    assert [snapshot.name for snapshot in submitted] == [f"in-flight-{n}" for n in range(50)]
    with pytest.raises(grpc.aio.UsageError):
        await client.submit("echo", None)


async def test_closing_an_async_client_of_a_frozen_server_returns(procs: Cluster) -> None:
    server = procs.server()
    client = AsyncClient(server.address)
    await client.submit("echo", None)  # the stream is open
    server.process.signal(signal.SIGSTOP)
    try:
        async with asyncio.timeout(20):  # the server never ends the stream: it is cancelled after CLOSE_WAIT_S
            await client.close()
    finally:
        server.process.signal(signal.SIGCONT)


# ---- A submit's own failure -----------------------------------------------------------------------------


async def test_bad_submits_fail_alone_and_the_stream_goes_on(
    server: ServerProcess, client: support.Client, aio_channel: grpc.aio.Channel
) -> None:
    unknown_admission = streamed(2, spec(name="unknown-admission"))
    unknown_admission.request.admission = 99  # type: ignore[assignment]
    call = open_stream(aio_channel)
    await call.write(
        message(
            streamed(1, spec(name="first")),
            unknown_admission,
            streamed(3, spec(task(""), name="no-handler")),
            streamed(4),  # no request
            streamed(5, spec(name="fifth")),
        )
    )
    first = await answers(call, 5)
    for good in (1, 5):
        assert not first[good].error_code, first[good]
        assert first[good].response.execution.id
    expected = {2: "admission", 3: "execution.tasks[0].handler", 4: "request"}
    for bad, field in expected.items():
        assert first[bad].error_code == "INVALID_ARGUMENT", first[bad]
        assert first[bad].error_message.startswith(f"{field}: "), first[bad]
        assert not first[bad].HasField("response"), first[bad]
    # The same stream takes the next message.
    await call.write(message(streamed(6, spec(name="after"))))
    after = await answers(call, 1)
    assert not after[6].error_code, after[6]
    await call.done_writing()
    assert (await ended_with(call)).code is grpc.StatusCode.OK
    stored = {execution.id: execution.name for execution in client.list_all()}
    assert stored == {
        first[1].response.execution.id: "first",
        first[5].response.execution.id: "fifth",
        after[6].response.execution.id: "after",
    }


# ---- Admission --------------------------------------------------------------------------------------------


@pytest.fixture
def small(procs: Cluster) -> ServerProcess:
    """A server whose queue holds two task runs, with no worker: they stay queued."""
    return procs.server("--queue-capacity", "2")


async def test_a_submit_over_a_full_queue_is_refused_alone(
    small: ServerProcess, connect: Callable[[ServerProcess], support.Client]
) -> None:
    async with grpc.aio.insecure_channel(small.address) as channel:
        call = open_stream(channel)
        await call.write(message(*(streamed(n, spec(name=f"n{n}")) for n in range(3))))
        got = await answers(call, 3)
        refused = [answer for answer in got.values() if answer.error_code]
        assert [answer.error_code for answer in refused] == ["RESOURCE_EXHAUSTED"], got
        assert "queue" in refused[0].error_message, refused[0]
        assert not refused[0].HasField("retry_after"), "a full queue is not a rate limit: no retry hint"
        # A wait for room that finds none within its own timeout ends DEADLINE_EXCEEDED, well before the call's.
        await call.write(message(streamed(7, spec(), admission=WAIT_FOR_ROOM, timeout_s=0.3)))
        waited = await asyncio.wait_for(answers(call, 1), 5)
        assert waited[7].error_code == "DEADLINE_EXCEEDED", waited[7]
        await call.done_writing()
        assert (await ended_with(call)).code is grpc.StatusCode.OK
    raw = connect(small)
    assert raw.stats().queue.waiting_submitters == 0
    assert len(raw.stored_ids()) == 2
    with Client(small.address) as sdk, pytest.raises(QueueFull):
        sdk.submit("echo", {})
    async with AsyncClient(small.address, timeout=timedelta(seconds=0.5)) as async_sdk:
        with pytest.raises(QueueFull):
            await async_sdk.submit("echo", {})
        with pytest.raises(AdmissionTimeout):
            await async_sdk.submit("echo", {}, wait_for_room=True)
    assert len(raw.stored_ids()) == 2


# ---- The stream's own refusals ----------------------------------------------------------------------------


async def test_a_message_of_more_than_1000_submits_ends_the_stream(
    server: ServerProcess, connect: Callable[[ServerProcess], support.Client], aio_channel: grpc.aio.Channel
) -> None:
    before = len(server.process.lines)
    call = open_stream(aio_channel)
    await call.write(message(*(streamed(n, spec()) for n in range(1001))))
    status = await ended_with(call)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, status
    assert status.details.startswith("submits: at most 1000 per message, got 1001"), status
    assert not connect(server).stored_ids(), "a refused message starts none of its submits"
    assert_refusal_logged_once(server, before)
    still_serving(server, connect)


async def waiting_for_room(
    raw: support.Client, channel: grpc.aio.Channel
) -> tuple[grpc.aio.StreamStreamCall[tpb.StreamSubmitsRequest, tpb.StreamSubmitsResponse], list[str]]:
    """Fill the `small` server's queue (the fillers' ids are returned) and open a stream whose submit 7
    ("waiting") waits for room; returns once the server counts it waiting."""
    fillers = [raw.submit(spec(name=f"filler-{n}")).execution.id for n in range(2)]
    call = open_stream(channel)
    await call.write(message(streamed(7, spec(name="waiting"), admission=WAIT_FOR_ROOM, timeout_s=8)))
    raw.wait_for_stats(lambda stats: stats.queue.waiting_submitters == 1, what="the submit to wait for room")
    return call, fillers


async def test_an_id_twice_among_the_unanswered_ends_the_stream_once_the_first_is_answered(
    small: ServerProcess, connect: Callable[[ServerProcess], support.Client]
) -> None:
    raw = connect(small)
    before = len(small.process.lines)
    async with grpc.aio.insecure_channel(small.address) as channel:
        call, fillers = await waiting_for_room(raw, channel)
        await call.write(message(streamed(8), streamed(7, spec(name="again"))))
        # The second 7 ends the stream, but only once the first 7 (still in flight) is answered: make room.
        raw.cancel(fillers[0])
        got = await asyncio.wait_for(answers(call, 2), 5)
        assert (got[8].error_code, got[8].error_message) == ("INVALID_ARGUMENT", "request: required"), got[8]
        assert not got[7].error_code, got[7]
        status = await ended_with(call)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, status
    assert status.details == "submits[1].id: 7 is already in flight on this stream", status
    stored = {execution.name for execution in raw.list_all()}
    assert stored == {"filler-0", "filler-1", "waiting"}, "the refused submit was stored"
    assert_refusal_logged_once(small, before)
    raw.cancel(fillers[1])  # room for the next client
    still_serving(small, connect)


async def test_unparseable_bytes_end_the_stream_naming_the_message_type(
    server: ServerProcess, connect: Callable[[ServerProcess], support.Client], aio_channel: grpc.aio.Channel
) -> None:
    same: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
    call = aio_channel.stream_stream(STREAM_SUBMITS, request_serializer=same, response_deserializer=same)(
        timeout=support.RPC_TIMEOUT_S
    )
    before = len(server.process.lines)
    # Field 1 (a StreamedSubmit) holding bytes that are no message: tag 0xff has no valid wire type.
    await call.write(b"\x0a\x03\xff\xfe\xfd")
    status = await ended_with(call)  # type: ignore[arg-type]
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT, status
    assert "not a valid taskwire.v1.StreamSubmitsRequest" in status.details, status
    assert not connect(server).stored_ids()
    assert_refusal_logged_once(server, before)
    still_serving(server, connect)


async def test_a_stream_whose_client_stopped_writing_ends_after_its_last_answer(
    small: ServerProcess, connect: Callable[[ServerProcess], support.Client]
) -> None:
    raw = connect(small)
    async with grpc.aio.insecure_channel(small.address) as channel:
        call, fillers = await waiting_for_room(raw, channel)
        await call.done_writing()  # the server's reader ends while submit 7 is still in flight
        raw.cancel(fillers[0])
        got = await asyncio.wait_for(answers(call, 1), 5)
        assert not got[7].error_code, got[7]
        status = await asyncio.wait_for(ended_with(call), 5)
    assert status.code is grpc.StatusCode.OK, status


# ---- Idempotency ----------------------------------------------------------------------------------------------


async def test_a_key_sent_twice_on_the_stream_is_one_execution(
    server: ServerProcess, client: support.Client, aio_channel: grpc.aio.Channel
) -> None:
    call = open_stream(aio_channel)
    # The same key and spec twice in one message: both submits race, one execution results.
    await call.write(message(streamed(1, spec(name="keyed", key="k-1")), streamed(2, spec(name="keyed", key="k-1"))))
    both = await answers(call, 2)
    assert not both[1].error_code, both[1]
    assert not both[2].error_code, both[2]
    assert both[1].response.execution.id == both[2].response.execution.id
    assert sorted([both[1].response.deduplicated, both[2].response.deduplicated]) == [False, True]
    # Again in a later message: deduplicated; another spec with the key: ALREADY_EXISTS.
    await call.write(message(streamed(3, spec(name="keyed", key="k-1"))))
    again = await answers(call, 1)
    assert again[3].response.deduplicated, again[3]
    assert again[3].response.execution.id == both[1].response.execution.id
    await call.write(message(streamed(4, spec(name="other", key="k-1"))))
    conflict = await answers(call, 1)
    assert conflict[4].error_code == "ALREADY_EXISTS", conflict[4]
    assert "k-1" in conflict[4].error_message, conflict[4]
    await call.done_writing()
    assert (await ended_with(call)).code is grpc.StatusCode.OK
    assert client.stored_ids() == {both[1].response.execution.id}


# ---- A server stopped under a stream --------------------------------------------------------------------


async def test_a_server_stopped_under_a_submit_stream_loses_no_answered_submit(procs: Cluster) -> None:
    server = procs.server("--shutdown-grace", "1")
    accepted: list[str] = []
    refused: list[BaseException] = []
    enough = asyncio.Event()
    stopped = asyncio.Event()

    async def keep_submitting(client: AsyncClient, lane: int) -> None:
        for n in range(1000):
            if stopped.is_set():
                return
            try:
                snapshot = await client.submit("echo", {"lane": lane, "n": n})
            except (ShuttingDown, ServerUnavailable) as error:
                refused.append(error)
                return
            accepted.append(snapshot.id)
            if len(accepted) >= 100:
                enough.set()

    async with AsyncClient(server.address, timeout=timedelta(seconds=5)) as client:
        lanes = [asyncio.ensure_future(keep_submitting(client, lane)) for lane in range(20)]
        await asyncio.wait_for(enough.wait(), 10)
        server.process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.process.wait) == 0
        stopped.set()
        # Every submit ends (answered, or refused as the server went away) within the SDK's own deadline.
        await asyncio.wait_for(asyncio.gather(*lanes), 15)
        assert len(set(accepted)) == len(accepted)
        # Each lane submits until one of its submits is refused: the server stopped under all 20.
        assert len(refused) == len(lanes)

        restarted = procs.server_at(server.address)
        raw = support.Client.of(restarted)
        try:
            stored = raw.stored_ids()
        finally:
            raw.close()
        assert set(accepted) <= stored, f"{len(set(accepted) - stored)} answered submits were lost"
        # The same client submits again: its broken stream is replaced by a new one.
        after = await client.submit("echo", {"after": "restart"}, key="after-restart")
        assert after.state is State.PENDING
        assert after.id not in stored
