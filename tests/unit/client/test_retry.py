"""Retries, deadlines and watch resumption against an in-process gRPC server whose answers the test scripts.

The real server cannot be made to fail on cue; a scripted TaskService on a real
loopback channel can, so these tests exercise the SDK's real gRPC path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from datetime import timedelta

import grpc
import pytest

from taskwire import common as d
from taskwire.client import (
    AsyncClient,
    Client,
    ExecutionTransition,
    NotFound,
    QueueFull,
    RpcRetry,
    ServerUnavailable,
    ShuttingDown,
    TaskLog,
    WaitTimeout,
)
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.unit.client.records import event, execution_proto, snapshot

FAST = RpcRetry(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.005)
SHUTTING_DOWN = "the server is shutting down and accepts no new work"


def _terminal(sequence: int) -> pb.ExecutionEvent:
    return event(
        sequence,
        execution_transition=pb.ExecutionTransition(
            from_state=pb.EXECUTION_STATE_RUNNING,
            to_state=pb.EXECUTION_STATE_SUCCESS,
            reason_code=pb.REASON_CODE_COMPLETED,
            reason_message="done",
        ),
    )


def _log(sequence: int) -> pb.ExecutionEvent:
    return event(sequence, log=pb.TaskLog(task_id="main", attempt=1, level=pb.LOG_LEVEL_INFO, text=f"line {sequence}"))


@dataclass
class Scripted(task_service_pb2_grpc.TaskServiceServicer):
    """Fails each method `failures[method]` times with UNAVAILABLE, then answers."""

    failures: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    watch_requests: list[tpb.WatchExecutionRequest] = field(default_factory=list)
    wait_requests: list[list[str]] = field(default_factory=list)
    # After the first stream breaks, this many reopenings fail with UNAVAILABLE (the server is down).
    outage: int = 0
    block_watch: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Serve StreamSubmits (each submit counted as a SubmitExecution call); when False, it is UNIMPLEMENTED,
    # as on a server from before it, and the SDK falls back to unary calls.
    streamed: bool = False

    def _count(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            failing = self.calls[method] <= self.failures.get(method, 0)
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    def GetStats(self, request: tpb.GetStatsRequest, context: grpc.ServicerContext) -> tpb.GetStatsResponse:
        self._count("GetStats", context)
        return tpb.GetStatsResponse(connected_workers=2)

    def GetExecution(self, request: tpb.GetExecutionRequest, context: grpc.ServicerContext) -> tpb.GetExecutionResponse:
        self._count("GetExecution", context)
        return tpb.GetExecutionResponse(execution=execution_proto(snapshot(d.State.SUCCESS)))

    def SubmitExecution(
        self, request: tpb.SubmitExecutionRequest, context: grpc.ServicerContext
    ) -> tpb.SubmitExecutionResponse:
        self._count("SubmitExecution", context)
        if request.admission == tpb.ADMISSION_MODE_FAIL_FAST and request.execution.name == "full":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full: 1 of 1 task runs queued")
        return tpb.SubmitExecutionResponse(execution=execution_proto(snapshot(d.State.SUCCESS)), deduplicated=True)

    def StreamSubmits(
        self, request_iterator: Iterator[tpb.StreamSubmitsRequest], context: grpc.ServicerContext
    ) -> Iterator[tpb.StreamSubmitsResponse]:
        if not self.streamed:
            self._unimplemented(context)
        for message in request_iterator:
            answers = []
            for submit in message.submits:
                with self.lock:
                    self.calls["SubmitExecution"] = self.calls.get("SubmitExecution", 0) + 1
                    failing = self.calls["SubmitExecution"] <= self.failures.get("SubmitExecution", 0)
                answer = tpb.StreamedSubmitAnswer(id=submit.id)
                if failing:
                    answer.error_code, answer.error_message = "UNAVAILABLE", SHUTTING_DOWN
                elif submit.request.execution.name == "full":
                    answer.error_code = "RESOURCE_EXHAUSTED"
                    answer.error_message = "queue full: 1 of 1 task runs queued"
                else:
                    answer.response.execution.CopyFrom(execution_proto(snapshot(d.State.SUCCESS)))
                    answer.response.deduplicated = True
                answers.append(answer)
            yield tpb.StreamSubmitsResponse(answers=answers)

    def _unimplemented(self, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    def SubmitExecutions(
        self, request: tpb.SubmitExecutionsRequest, context: grpc.ServicerContext
    ) -> tpb.SubmitExecutionsResponse:
        self._unimplemented(context)
        return tpb.SubmitExecutionsResponse()

    def ListExecutions(
        self, request: tpb.ListExecutionsRequest, context: grpc.ServicerContext
    ) -> tpb.ListExecutionsResponse:
        self._unimplemented(context)
        return tpb.ListExecutionsResponse()

    def CancelExecution(
        self, request: tpb.CancelExecutionRequest, context: grpc.ServicerContext
    ) -> tpb.CancelExecutionResponse:
        self._unimplemented(context)
        return tpb.CancelExecutionResponse()

    def ListWorkers(self, request: tpb.ListWorkersRequest, context: grpc.ServicerContext) -> tpb.ListWorkersResponse:
        self._unimplemented(context)
        return tpb.ListWorkersResponse()

    def DrainWorker(self, request: tpb.DrainWorkerRequest, context: grpc.ServicerContext) -> tpb.DrainWorkerResponse:
        self._unimplemented(context)
        return tpb.DrainWorkerResponse()

    def DeleteExecution(
        self, request: tpb.DeleteExecutionRequest, context: grpc.ServicerContext
    ) -> tpb.DeleteExecutionResponse:
        self._unimplemented(context)
        return tpb.DeleteExecutionResponse()

    def GetIdentity(self, request: tpb.GetIdentityRequest, context: grpc.ServicerContext) -> tpb.GetIdentityResponse:
        self._unimplemented(context)
        return tpb.GetIdentityResponse()

    def WatchEvents(
        self, request: tpb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb.WatchEventsResponse]:
        self._unimplemented(context)
        yield from ()

    def RerunExecution(
        self, request: tpb.RerunExecutionRequest, context: grpc.ServicerContext
    ) -> tpb.RerunExecutionResponse:
        self._unimplemented(context)
        return tpb.RerunExecutionResponse()

    def CancelExecutions(
        self, request: tpb.CancelExecutionsRequest, context: grpc.ServicerContext
    ) -> tpb.CancelExecutionsResponse:
        self._unimplemented(context)
        return tpb.CancelExecutionsResponse()

    def DeleteExecutions(
        self, request: tpb.DeleteExecutionsRequest, context: grpc.ServicerContext
    ) -> tpb.DeleteExecutionsResponse:
        self._unimplemented(context)
        return tpb.DeleteExecutionsResponse()

    def ListSchedules(
        self, request: tpb.ListSchedulesRequest, context: grpc.ServicerContext
    ) -> tpb.ListSchedulesResponse:
        self._count("ListSchedules", context)
        return tpb.ListSchedulesResponse(
            schedules=[tpb.Schedule(spec=tpb.ScheduleSpec(name="nightly", cron="0 3 * * *"))]
        )

    def CreateSchedule(
        self, request: tpb.CreateScheduleRequest, context: grpc.ServicerContext
    ) -> tpb.CreateScheduleResponse:
        self._count("CreateSchedule", context)
        return tpb.CreateScheduleResponse()

    def GetSchedule(self, request: tpb.GetScheduleRequest, context: grpc.ServicerContext) -> tpb.GetScheduleResponse:
        self._unimplemented(context)
        return tpb.GetScheduleResponse()

    def PauseSchedule(
        self, request: tpb.PauseScheduleRequest, context: grpc.ServicerContext
    ) -> tpb.PauseScheduleResponse:
        self._unimplemented(context)
        return tpb.PauseScheduleResponse()

    def ResumeSchedule(
        self, request: tpb.ResumeScheduleRequest, context: grpc.ServicerContext
    ) -> tpb.ResumeScheduleResponse:
        self._unimplemented(context)
        return tpb.ResumeScheduleResponse()

    def DeleteSchedule(
        self, request: tpb.DeleteScheduleRequest, context: grpc.ServicerContext
    ) -> tpb.DeleteScheduleResponse:
        self._unimplemented(context)
        return tpb.DeleteScheduleResponse()

    def TriggerSchedule(
        self, request: tpb.TriggerScheduleRequest, context: grpc.ServicerContext
    ) -> tpb.TriggerScheduleResponse:
        self._unimplemented(context)
        return tpb.TriggerScheduleResponse()

    def WatchExecution(
        self, request: tpb.WatchExecutionRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb.WatchExecutionResponse]:
        with self.lock:
            self.watch_requests.append(request)
            count = len(self.watch_requests)
        if request.execution_id == "slow":
            self.block_watch.wait(5)
            return
        if request.execution_id == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "execution missing not found")
        if request.execution_id == "down" or 1 < count <= 1 + self.outage:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        if count == 1:
            # Two events, then the stream breaks as when the server shuts down.
            for sequence in (request.after_sequence + 1, request.after_sequence + 2):
                yield tpb.WatchExecutionResponse(event=_log(sequence))
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; watch again to resume")
        if request.execution_id == "repeats":
            # A server that replays from the start: what the watch saw already must not come again.
            for sequence in range(1, request.after_sequence + 1):
                yield tpb.WatchExecutionResponse(event=_log(sequence))
        yield tpb.WatchExecutionResponse(event=_terminal(request.after_sequence + 1))

    def WaitExecutions(
        self, request: tpb.WaitExecutionsRequest, context: grpc.ServicerContext
    ) -> Iterator[tpb.WaitExecutionsResponse]:
        """As WatchExecution: "slow" never finishes, "missing" does not exist, "down" finds the server down,
        the first call breaks after its first message and the `outage` next calls find the server down;
        then each execution named comes in a message of its own."""
        ids = list(request.execution_ids)
        with self.lock:
            self.wait_requests.append(ids)
            count = len(self.wait_requests)
        if "slow" in ids:
            self.block_watch.wait(5)
            return
        if "missing" in ids:
            context.abort(grpc.StatusCode.NOT_FOUND, "no execution with id 'missing'")
        if "down" in ids or 1 < count <= 1 + self.outage:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        first = execution_proto(snapshot(d.State.SUCCESS, execution_id=ids[0]))
        yield tpb.WaitExecutionsResponse(executions=[first], remaining=len(ids) - 1)
        if count == 1 and len(ids) > 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; wait again")
        for index, execution_id in enumerate(ids[1:], start=2):
            finished = execution_proto(snapshot(d.State.SUCCESS, execution_id=execution_id))
            yield tpb.WaitExecutionsResponse(executions=[finished, first], remaining=len(ids) - index)


@pytest.fixture(params=[False, True], ids=["unary", "streamed"])
def submitting(request: pytest.FixtureRequest) -> Iterator[tuple[Scripted, str]]:
    """`scripted`, its submits served by SubmitExecution (StreamSubmits unknown) or by StreamSubmits."""
    yield from _serve(Scripted(streamed=request.param))


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, str]]:
    yield from _serve(Scripted())


def _serve(servicer: Scripted) -> Iterator[tuple[Scripted, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.block_watch.set()
        server.stop(grace=None).wait()


def test_idempotent_calls_retry_unavailable(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.failures["GetStats"] = 2
    with Client(address, retry=FAST) as client:
        assert client.stats().connected_workers == 2
    assert servicer.calls["GetStats"] == 3


def test_retries_are_bounded(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.failures["GetExecution"] = 10
    with Client(address, retry=FAST) as client, pytest.raises(ShuttingDown, match="shutting down"):
        client.get("ex-1")
    assert servicer.calls["GetExecution"] == FAST.max_attempts


def test_a_submit_without_a_key_is_not_retried(submitting: tuple[Scripted, str]) -> None:
    servicer, address = submitting
    servicer.failures["SubmitExecution"] = 1
    with Client(address, retry=FAST) as client, pytest.raises(ShuttingDown):
        client.submit("echo")
    assert servicer.calls["SubmitExecution"] == 1


def test_listing_schedules_is_retried_and_creating_one_is_not(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.failures["ListSchedules"] = 2
    servicer.failures["CreateSchedule"] = 1
    with Client(address, retry=FAST) as client:
        assert [schedule.name for schedule in client.schedules()] == ["nightly"]
        with pytest.raises(ShuttingDown):
            client.create_schedule("nightly", "0 3 * * *", "echo")
    assert (servicer.calls["ListSchedules"], servicer.calls["CreateSchedule"]) == (3, 1)


def test_a_submit_with_a_key_is_retried(submitting: tuple[Scripted, str]) -> None:
    servicer, address = submitting
    servicer.failures["SubmitExecution"] = 1
    with Client(address, retry=FAST) as client:
        submitted = client.submit("echo", key="k1")
    assert submitted.deduplicated
    assert servicer.calls["SubmitExecution"] == 2


def test_other_errors_are_not_retried(submitting: tuple[Scripted, str]) -> None:
    servicer, address = submitting
    with Client(address, retry=FAST) as client, pytest.raises(QueueFull, match="queue full"):
        client.submit("echo", name="full", key="k")
    assert servicer.calls["SubmitExecution"] == 1


def test_watch_resumes_after_the_last_event(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    with Client(address, retry=FAST) as client:
        events = list(client.watch("ex-1", after_sequence=4))
    assert [e.sequence for e in events] == [5, 6, 7]
    assert isinstance(events[0], TaskLog)
    assert isinstance(events[-1], ExecutionTransition)
    assert [r.after_sequence for r in servicer.watch_requests] == [4, 6]


def test_a_watch_resumes_across_an_outage_longer_than_the_retries_of_a_call(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.outage = FAST.max_attempts * 3
    with Client(address, retry=FAST) as client:
        assert [e.sequence for e in client.watch("ex-1")] == [1, 2, 3]
    assert [r.after_sequence for r in servicer.watch_requests] == [0, *[2] * (servicer.outage + 1)]


def test_a_wait_for_many_resumes_with_those_not_received(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.outage = FAST.max_attempts * 3
    with Client(address, retry=FAST) as client:
        finished = client.wait_many(["e3", "e1", "e2", "e1"])
    assert [done.id for done in finished] == ["e3", "e1", "e2", "e1"]
    assert all(done.state is d.State.SUCCESS for done in finished)
    # The first call broke after its first message; the others found the server down, then "e1" and "e2"
    # came, each once though the server sent "e1" again.
    assert servicer.wait_requests == [["e3", "e1", "e2"], *[["e1", "e2"]] * (servicer.outage + 1)]


async def test_async_as_completed_yields_each_once(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    async with AsyncClient(address, retry=FAST) as client:
        assert [done.id async for done in client.as_completed(["e1", "e2", "e3"])] == ["e1", "e2", "e3"]
        assert await client.wait("ex-1") == {"ok": True}
    assert servicer.wait_requests == [["e1", "e2", "e3"], ["e2", "e3"], ["ex-1"]]


def test_events_seen_already_are_not_delivered_again(scripted: tuple[Scripted, str]) -> None:
    _, address = scripted
    with Client(address, retry=FAST) as client:
        assert [e.sequence for e in client.watch("repeats", after_sequence=4)] == [5, 6, 7]


def test_a_watch_that_never_reached_a_server_gives_up_after_the_retries_of_a_call() -> None:
    """Nothing listens at the address (a wrong one): no call gets a connection, so the attempts of a call bound
    the watch (and a wait), not `resume_s` (here without end)."""
    with Client("127.0.0.1:1", retry=replace(FAST, resume_s=None)) as client:
        with pytest.raises(ServerUnavailable, match="failed to connect"):
            list(client.watch("ex-1"))
        with pytest.raises(ServerUnavailable, match="failed to connect"):
            client.wait_many(["ex-1"])


def test_a_watch_refused_by_a_server_going_away_reconnects_for_resume_s(scripted: tuple[Scripted, str]) -> None:
    """The server answered (UNAVAILABLE: it is shutting down): it was reached, so the watch waits for its restart
    as for that of a server that went away under it."""
    servicer, address = scripted
    with Client(address, retry=replace(FAST, resume_s=0.2)) as client, pytest.raises(ShuttingDown):
        list(client.watch("down"))
    assert len(servicer.watch_requests) > FAST.max_attempts


def test_without_a_timeout_resume_s_bounds_the_outage(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.outage = 10**6
    seen: list[int] = []
    with Client(address, retry=replace(FAST, resume_s=0.2)) as client, pytest.raises(ShuttingDown):
        seen.extend(e.sequence for e in client.watch("ex-1"))
    assert seen == [1, 2]
    assert len(servicer.watch_requests) > FAST.max_attempts


def test_with_a_timeout_an_outage_ends_in_wait_timeout(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    with Client(address, retry=FAST) as client, pytest.raises(WaitTimeout, match=r"did not finish within 0\.3s"):
        client.wait("down", timeout=timedelta(seconds=0.3))
    assert len(servicer.wait_requests) > FAST.max_attempts


def test_a_mistake_is_not_retried(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    with Client(address, retry=FAST) as client, pytest.raises(NotFound, match="missing"):
        client.wait("missing", timeout=timedelta(seconds=5))
    assert len(servicer.wait_requests) == 1


async def test_async_watch_resumes_across_an_outage(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.outage = FAST.max_attempts * 3
    async with AsyncClient(address, retry=FAST) as client:
        assert [e.sequence async for e in client.watch("ex-1")] == [1, 2, 3]
        with pytest.raises(NotFound):
            await client.wait("missing", timeout=timedelta(seconds=5))
        with pytest.raises(WaitTimeout):
            await client.wait("down", timeout=timedelta(seconds=0.3))


def test_wait_follows_a_resumed_watch(scripted: tuple[Scripted, str]) -> None:
    _, address = scripted
    seen: list[int] = []
    with Client(address, retry=FAST) as client:
        result = client.wait_finished("ex-1", on_event=lambda e: seen.append(e.sequence))
    assert result.state is d.State.SUCCESS
    assert seen == [1, 2, 3]


def test_wait_times_out(scripted: tuple[Scripted, str]) -> None:
    _, address = scripted
    with Client(address, retry=FAST) as client, pytest.raises(WaitTimeout, match=r"did not finish within 0\.2s"):
        client.wait("slow", timeout=timedelta(seconds=0.2))


async def test_async_client_retries_and_resumes(scripted: tuple[Scripted, str]) -> None:
    servicer, address = scripted
    servicer.failures["GetStats"] = 2
    async with AsyncClient(address, retry=FAST) as client:
        assert (await client.stats()).connected_workers == 2
        assert [e.sequence async for e in client.watch("ex-1")] == [1, 2, 3]
        assert await client.wait("ex-1") == {"ok": True}
        with pytest.raises(WaitTimeout):
            await client.wait("slow", timeout=timedelta(seconds=0.2))
    assert servicer.calls["GetStats"] == 3


async def test_async_submit_without_a_key_is_not_retried(submitting: tuple[Scripted, str]) -> None:
    servicer, address = submitting
    servicer.failures["SubmitExecution"] = 2
    async with AsyncClient(address, retry=FAST) as client:
        with pytest.raises(ShuttingDown):
            await client.submit("echo")
        assert (await client.submit("echo", key="k")).deduplicated
    assert servicer.calls["SubmitExecution"] == 3


def test_a_wait_for_many_times_out_naming_those_not_finished(scripted: tuple[Scripted, str]) -> None:
    _, address = scripted
    with Client(address, retry=FAST) as client, pytest.raises(WaitTimeout) as caught:
        client.wait_many(["e1", "slow"], timeout=timedelta(seconds=0.2))
    assert caught.value.unfinished == ("e1", "slow")
    assert str(caught.value) == "2 executions did not finish within 0.2s (the first: e1)"
