"""Requests the SDK builds and responses it converts, without a server."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import tenacity
from google.protobuf import duration_pb2

from taskwire import common as d
from taskwire.client import (
    AsyncClient,
    Client,
    HandlerStats,
    Payload,
    QueueStats,
    RateLimited,
    RetryPolicy,
    RpcRetry,
    ShuttingDown,
    Stats,
    TaskwireError,
)
from taskwire.client import _common as c
from taskwire.common.wire import retry_policy_from_proto, retry_policy_to_proto
from taskwire.server import wire
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.unit.client.records import at, worker_info


def test_single_task_spec_carries_every_option() -> None:
    spec = c.single_task_spec(
        "echo",
        {"a": 1},
        task_id="t1",
        timeout=timedelta(seconds=5),
        max_attempts=3,
        key="k1",
        name="my run",
        metadata={"team": "x"},
        execution_timeout=timedelta(minutes=1),
        not_before=at(60),
    )
    assert spec == d.ExecutionSpec(
        tasks=(
            d.TaskSpec(
                handler="echo",
                task_id="t1",
                input=d.json_payload({"a": 1}),
                timeout=timedelta(seconds=5),
                retry_policy=d.RetryPolicy(max_attempts=3),
            ),
        ),
        name="my run",
        metadata={"team": "x"},
        timeout=timedelta(minutes=1),
        not_before=at(60),
        idempotency_key="k1",
    )


def test_max_attempts_overrides_the_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=3), non_retryable_error_types=("E",))
    spec = c.single_task_spec("echo", retry_policy=policy, max_attempts=5)
    assert spec.tasks[0].retry_policy == RetryPolicy(
        max_attempts=5, initial_interval=timedelta(seconds=3), non_retryable_error_types=("E",)
    )


def test_max_infrastructure_retries_overrides_the_retry_policy_and_survives_the_wire() -> None:
    spec = c.single_task_spec("echo", retry_policy=RetryPolicy(max_attempts=2), max_infrastructure_retries=0)
    policy = spec.tasks[0].retry_policy
    assert policy == RetryPolicy(max_attempts=2, max_infrastructure_retries=0)
    assert retry_policy_from_proto(retry_policy_to_proto(policy)) == policy
    assert retry_policy_from_proto(pb.RetryPolicy()).max_infrastructure_retries == 3, "unset means the default"


def test_input_is_json_unless_a_payload() -> None:
    assert c.to_payload(None) == Payload(b"null")
    assert c.to_payload([1, "x"]).data == b'[1,"x"]'
    raw = Payload(b"\x00", content_type="application/octet-stream")
    assert c.to_payload(raw) is raw


@pytest.mark.parametrize("value", [float("nan"), {1, 2}, object()])
def test_an_input_json_cannot_hold_is_a_validation_error(value: object) -> None:
    with pytest.raises(d.ValidationError) as raised:
        c.to_payload(value)
    assert raised.value.field == "input"
    assert raised.value.problem.startswith("is not valid JSON")


def test_submit_request_admission() -> None:
    spec = c.single_task_spec("echo")
    assert c.submit_request(spec, wait_for_room=True).admission == tpb.ADMISSION_MODE_WAIT_FOR_ROOM
    request = c.submit_request(spec, wait_for_room=False)
    assert request.admission == tpb.ADMISSION_MODE_FAIL_FAST
    assert wire.execution_spec_from_proto(request.execution) == spec


def test_a_submit_is_retried_only_with_idempotency_keys() -> None:
    keyed, plain = c.single_task_spec("echo", key="k"), c.single_task_spec("echo")
    assert c.submit_is_idempotent([keyed])
    assert not c.submit_is_idempotent([plain])
    assert not c.submit_is_idempotent([keyed, plain])
    request = c.submit_many_request([keyed, plain], wait_for_room=True)
    assert [item.idempotency_key for item in request.executions] == ["k", ""]


def test_list_request_accepts_states_and_names() -> None:
    request = c.list_request(states=[d.State.FAILED, "cancelled"], handler="echo", page_size=10, page_token="t")
    assert list(request.states) == [5, 6]
    assert (request.handler, request.page_size, request.page_token) == ("echo", 10, "t")
    with pytest.raises(ValueError, match="unknown state 'nope'"):
        c.parse_state("nope")


@pytest.mark.parametrize(
    ("limit", "page_size", "fetched", "expected"),
    [
        (None, None, 0, 0),  # the server's default
        (None, 20, 0, 20),
        (None, 5000, 0, 1000),
        (30, None, 0, 30),
        (30, None, 25, 5),
        (30, 10, 25, 5),
        (30, 10, 0, 10),
        (5000, None, 0, 1000),
    ],
)
def test_page_size_for(limit: int | None, page_size: int | None, fetched: int, expected: int) -> None:
    assert c.page_size_for(limit, page_size, fetched) == expected


def test_submit_results_in_request_order() -> None:
    response = tpb.SubmitExecutionsResponse(
        results=[
            tpb.SubmitResult(execution_id="a"),
            tpb.SubmitResult(error_code="INVALID_ARGUMENT", error_message="executions[1].tasks: at least one task"),
            tpb.SubmitResult(execution_id="c", deduplicated=True),
        ]
    )
    first, second, third = c.submit_results(response)
    assert (first.index, first.execution_id, first.ok, first.deduplicated) == (0, "a", True, False)
    assert not second.ok
    assert isinstance(second.error, d.ValidationError)
    assert second.error.field == "executions[1].tasks"
    assert (third.execution_id, third.deduplicated) == ("c", True)


def test_stats_from_proto() -> None:
    response = tpb.GetStatsResponse(
        queue=tpb.QueueStats(size=3, capacity=10, waiting_submitters=1),
        in_flight=2,
        connected_workers=1,
        free_slots=2,
        handlers=[tpb.HandlerStats(handler="echo", pending=3, in_flight=2, free_slots=2, workers=1)],
    )
    assert c.stats_from_proto(response) == Stats(
        queue=QueueStats(size=3, capacity=10, waiting_submitters=1),
        in_flight=2,
        connected_workers=1,
        free_slots=2,
        handlers=(HandlerStats(handler="echo", pending=3, in_flight=2, free_slots=2, workers=1),),
    )


def test_workers_from_proto() -> None:
    response = tpb.ListWorkersResponse(
        workers=[
            tpb.WorkerInfo(
                session_id="s1",
                instance_id="i1",
                name="w1",
                handlers=["echo", "sleep"],
                slots=4,
                in_flight=1,
                labels={"zone": "a"},
                agent_version="taskwire-worker/0.1",
                connected_at=wire.timestamp_to_proto(at(0)),
                last_seen_at=wire.timestamp_to_proto(at(5)),
                lease_timeout=duration_pb2.Duration(seconds=30),
            )
        ]
    )
    assert c.workers_from_proto(response) == [worker_info()]


def test_retry_options_are_bounded() -> None:
    options = c.retry_options(RpcRetry(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05))
    assert options["reraise"] is True
    for failures in range(1, 10):
        assert 0 <= c.backoff_s(RpcRetry(initial_backoff_s=0.1, max_backoff_s=1.0), failures) <= 1.0
    with pytest.raises(ValueError, match="max_attempts"):
        RpcRetry(max_attempts=0)


@pytest.mark.parametrize(
    ("error", "idempotent", "retried"),
    [
        (RateLimited("over the rate", retry_after_s=0.01), False, True),  # nothing was done: any call
        (RateLimited("over the rate", retry_after_s=c.RATE_LIMIT_WAIT_CAP_S + 1), True, False),  # too long a wait
        (RateLimited("over the streams", retry_after_s=0.0), True, False),  # no hint
        (ShuttingDown("going away"), True, True),
        (ShuttingDown("going away"), False, False),
    ],
)
def test_what_is_retried_and_after_how_long(error: TaskwireError, idempotent: bool, retried: bool) -> None:
    attempts = 0

    def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise error
        return "done"

    options = c.retry_options(
        RpcRetry(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.002), idempotent=idempotent
    )
    waits: list[float] = []
    retrying = tenacity.Retrying(**options, sleep=waits.append)
    if retried:
        assert retrying(call) == "done"
        if isinstance(error, RateLimited):
            assert waits == [error.retry_after_s]  # the server's hint, not the backoff
    else:
        with pytest.raises(type(error)):
            retrying(call)
        assert attempts == 1
    # The clients make the first attempt without tenacity: the same errors are retried, after the same pause.
    policy = RpcRetry(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.002)
    pause_s = c.first_retry_pause_s(policy, error, idempotent=idempotent)
    assert (pause_s is not None) == retried
    if retried and isinstance(error, RateLimited):
        assert pause_s == error.retry_after_s
    assert c.first_retry_pause_s(replace(policy, max_attempts=1), error, idempotent=idempotent) is None


def test_attempts_after_the_first_keep_the_bound_and_the_backoff_curve() -> None:
    policy = RpcRetry(max_attempts=4, initial_backoff_s=1.0, max_backoff_s=100.0)
    attempts = 0

    def call() -> str:
        nonlocal attempts
        attempts += 1
        raise ShuttingDown("going away")

    waits: list[float] = []
    retrying = tenacity.Retrying(**c.retry_options(policy, after=1), sleep=waits.append)
    with pytest.raises(ShuttingDown):
        retrying(call)
    assert attempts == 3  # with the one made before: four in all
    # The pauses after the second and third failures: 2 and 4 s (plus up to 1 s of jitter), not 1 and 2 again.
    assert [int(wait) for wait in waits] == [2, 4]


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: c.submit_request(c.single_task_spec("echo", None, timeout=30), wait_for_room=False), "timeout"),  # type: ignore[arg-type]
        (
            lambda: c.submit_request(c.single_task_spec("echo", None, execution_timeout=1.5), wait_for_room=False),  # type: ignore[arg-type]
            "execution_timeout",
        ),
        (
            lambda: c.submit_request(
                c.single_task_spec("echo", None, retry_policy=RetryPolicy(initial_interval=2)),  # type: ignore[arg-type]
                wait_for_room=False,
            ),
            "retry_policy.initial_interval",
        ),
        (lambda: c.drain_request("w", session_id="", grace=5, reason=""), "grace"),  # type: ignore[arg-type]
        (lambda: c.seconds(10), "timeout"),  # type: ignore[arg-type]
    ],
)
def test_a_duration_that_is_not_a_timedelta_is_a_type_error_naming_it(build: object, named: str) -> None:
    with pytest.raises(TypeError, match=rf"^{re.escape(named)} must be a datetime.timedelta, got (int|float) "):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("make", [Client, AsyncClient])
def test_a_client_timeout_that_is_not_a_timedelta_is_refused_when_made(make: type[Client | AsyncClient]) -> None:
    with pytest.raises(TypeError, match=r"^timeout must be a datetime\.timedelta, got int 5$"):
        make("127.0.0.1:1", timeout=5)  # type: ignore[arg-type]


def _submit(**options: object) -> tpb.SubmitExecutionRequest:
    return c.submit_request(c.single_task_spec("echo", None, **options), wait_for_room=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"priority": 2**40},
            d.ValidationError,
            "priority: must be between -2147483648 and 2147483647, got 1099511627776",
        ),
        ({"priority": "high"}, TypeError, "priority must be an int, got str 'high'"),
        ({"priority": 0}, d.ValidationError, "priority: must be between 1 and 9, got 0"),
        ({"max_attempts": 0}, d.ValidationError, "max_attempts: must be between 1 and 100, got 0"),
        ({"concurrency_limit": 2.5}, TypeError, "concurrency_limit must be an int, got float 2.5"),
        ({"max_attempts": 2**40}, d.ValidationError, "retry_policy.max_attempts: must be between"),
        ({"concurrency_key": 5}, TypeError, "concurrency_key must hold text (str), got int 5"),
        ({"name": "\ud800"}, d.ValidationError, "name: '\\ud800' is not valid text (it holds a lone surrogate)"),
        ({"metadata": {"team": 1}}, TypeError, "metadata must hold text (str), got int 1"),
        ({"metadata": ["a", "b"]}, TypeError, "metadata must be a Mapping, got list"),
        ({"retry_policy": {"max_attempts": 3}}, TypeError, "retry_policy must be a RetryPolicy, got dict"),
        ({"not_before": datetime(2030, 1, 1)}, TypeError, "not_before must be a timezone-aware datetime, got a naive"),
        ({"not_before": "tomorrow"}, TypeError, "not_before must be a timezone-aware datetime, got str 'tomorrow'"),
        ({"retry_policy": RetryPolicy(non_retryable_error_types="ValueError")}, TypeError, "write ['ValueError']"),  # type: ignore[arg-type]
    ],
)
def test_a_submits_value_of_the_wrong_kind_is_named(options: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        _submit(**options)
    assert message in str(raised.value)


def test_a_handler_that_is_not_text_is_named() -> None:
    with pytest.raises(TypeError, match=r"^handler must hold text \(str\), got int 123$"):
        c.submit_request(c.single_task_spec(123, None), wait_for_room=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: c.submit_request("echo", wait_for_room=False), "the execution must be an ExecutionSpec, got str"),  # type: ignore[arg-type]
        (
            lambda: c.submit_request(d.ExecutionSpec(tasks=("echo",)), wait_for_room=False),  # type: ignore[arg-type]
            "an execution's tasks must be TaskSpec values, got str 'echo'",
        ),
        (
            lambda: c.submit_request(
                d.ExecutionSpec(tasks=(d.TaskSpec(handler="b", task_id="b", depends_on="a"),)),  # type: ignore[arg-type]
                wait_for_room=False,
            ),
            "depends_on must be a list of str, not one str ('a')",
        ),
        (lambda: c.cancel_matching_request(None, reason="", dry_run=True), "the filter must be an ExecutionFilter"),  # type: ignore[arg-type]
        (
            lambda: c.cancel_matching_request(d.ExecutionFilter(states=("failed",)), reason="", dry_run=True),  # type: ignore[arg-type]
            "the filter's states must be State values",
        ),
        (
            lambda: c.list_request(states="FAILED", handler="", page_size=10, page_token=""),
            "states must be a list, not one str",
        ),
        (
            lambda: c.list_request(states=[1], handler="", page_size=10, page_token=""),  # type: ignore[list-item]
            "a state must be a str, got int 1",
        ),
        (lambda: c.many("e-1", "execution_ids"), "execution_ids must be a list, not one str ('e-1'): write ['e-1']"),
    ],
)
def test_a_call_given_the_wrong_kind_of_value_says_which(build: object, message: str) -> None:
    with pytest.raises(TypeError) as raised:
        build()  # type: ignore[operator]
    assert message in str(raised.value)


SMALLEST_SERVER_MESSAGE = 64 * 1024 + 1  # --max-message-bytes is 64 KiB over --max-payload-bytes (≥ 1) at least


def test_a_stream_message_is_never_larger_than_any_server_takes() -> None:
    from taskwire.client import _submit_stream as ss

    def submit(size: int) -> tpb.StreamedSubmit:
        return ss.streamed(2**40, _submit_request_of(size), 10.0)

    def first_message(unsent: list[tpb.StreamedSubmit]) -> tpb.StreamSubmitsRequest:
        return ss._message(unsent[: ss._first_message(unsent)])

    small, large = submit(100), submit(20 * 1024)
    assert ss._first_message([small] * 5) == 5
    assert ss._first_message([large] * 5) == 2  # 2 × 20 KiB fit; the third starts the next message
    assert ss._first_message([submit(2 * 1024 * 1024), small]) == 1  # larger than the limit: alone
    assert ss._first_message([small] * (ss.MAX_PER_MESSAGE + 5)) == ss.MESSAGE_MAX_BYTES // ss._size(small)
    tiny = tpb.StreamedSubmit(id=1)
    assert ss._first_message([tiny] * (ss.MAX_PER_MESSAGE + 5)) == ss.MAX_PER_MESSAGE
    largest_streamed = ss.streamed(2**40, _largest_streamed_request(), 10.0)
    for unsent in ([small] * (ss.MAX_PER_MESSAGE + 5), [large] * 5, [largest_streamed] * 3, [submit(200)] * 2000):
        assert first_message(unsent).ByteSize() < SMALLEST_SERVER_MESSAGE
    assert ss.fits_the_stream(_submit_request_of(100))
    assert not ss.fits_the_stream(_submit_request_of(ss.STREAMED_MAX_BYTES))


def _largest_streamed_request() -> tpb.SubmitExecutionRequest:
    from taskwire.client import _submit_stream as ss

    size = ss.STREAMED_MAX_BYTES - 1024
    while ss.fits_the_stream(_submit_request_of(size + 1)):
        size += 1
    return _submit_request_of(size)


def _submit_request_of(size: int) -> tpb.SubmitExecutionRequest:
    return c.submit_request(c.single_task_spec("echo", "x" * size), wait_for_room=False)


@pytest.mark.parametrize("make", [Client, AsyncClient])
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"address": 50051}, "address must be 'HOST:PORT' or a list of them, got int 50051"),
        ({"address": None}, "address must be 'HOST:PORT' or a list of them, got NoneType None"),
        ({"address": "127.0.0.1:1", "token": 5}, "token must be a str, got int 5"),
    ],
)
def test_a_client_given_the_wrong_kind_of_address_or_token_says_which(
    make: type[Client | AsyncClient], arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError) as raised:
        make(**arguments)  # type: ignore[arg-type]
    assert str(raised.value) == message


@pytest.mark.parametrize("make", [Client, AsyncClient])
@pytest.mark.parametrize("timeout", [timedelta(0), timedelta(seconds=-1)])
def test_a_client_timeout_must_be_positive(make: type[Client | AsyncClient], timeout: timedelta) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be positive"):
        make("127.0.0.1:1", timeout=timeout)


def test_a_timeout_past_any_deadline_is_taken_as_a_century() -> None:
    assert c.seconds(timedelta.max) == c.seconds(timedelta(days=36_500)) == 36_500 * 86_400
    assert c.seconds(timedelta(seconds=1.5)) == 1.5


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda client: client.get(123), TypeError, "execution_id must hold text (str), got int 123"),
        (lambda client: client.cancel("e-1", reason=5), TypeError, "reason must hold text (str), got int 5"),
        (lambda client: client.rerun("e-1", only_failed="yes"), TypeError, "only_failed must be a bool, got str 'yes'"),
        (
            lambda client: client.get_schedule("nightly", next_fire_times="3"),
            TypeError,
            "next_fire_times must be an int",
        ),
        (lambda client: list(client.watch("e-1", after_sequence=2**70)), d.ValidationError, "after_sequence: must be"),
        (lambda client: client.wait_many(["e-1", ["e-2"]]), TypeError, "each of execution_ids must be a str, got list"),
        (lambda client: client.wait(None), TypeError, "each of execution_ids must be a str, got NoneType None"),
        (lambda client: client.pause_schedule("\ud800"), d.ValidationError, "name: '\\ud800' is not valid text"),
    ],
)
def test_a_call_given_a_value_protobuf_refuses_names_the_argument(call: object, error: type, message: str) -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(error) as raised:  # refused before anything is sent
        call(client)  # type: ignore[operator]
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"token": "abc\ndef"}, ValueError, "token must be one word of printable characters"),
        ({"credentials": "tls"}, TypeError, "credentials must be a ChannelCredentials, got str 'tls'"),
    ],
)
def test_a_client_given_a_token_or_credentials_gRPC_cannot_use_says_which(
    arguments: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Client("127.0.0.1:1", **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda client: list(client.list(limit="5")), "limit must be an int, got str '5'"),
        (lambda client: list(client.list(page_size=2.5)), "page_size must be an int, got float 2.5"),
        (lambda client: client.wait_finished("e-1", on_event="print"), "on_event must be a function of one event"),
        (
            lambda client: client.submit_execution(
                d.ExecutionSpec(tasks=(d.TaskSpec(handler="echo", input={"a": 1}),))  # type: ignore[arg-type]
            ),
            "input must be a Payload (to_payload(value) makes one), got dict",
        ),
        (
            lambda client: client.submit_execution(
                d.ExecutionSpec(tasks=(d.TaskSpec(handler="echo", retry_policy=None),))  # type: ignore[arg-type]
            ),
            "retry_policy must be a RetryPolicy, got NoneType None",
        ),
    ],
)
def test_more_values_of_the_wrong_kind_are_named(call: object, message: str) -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(TypeError) as raised:
        call(client)  # type: ignore[operator]
    assert message in str(raised.value)


def test_a_negative_list_limit_is_refused() -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(ValueError, match="limit must be zero or more"):
        list(client.list(limit=-1))
