"""Every failed RPC becomes one taskwire error: the class from taskwire.common.wire, the server's message."""

from __future__ import annotations

import grpc
import pytest

from taskwire import common as d
from taskwire.client import ServerUnavailable
from taskwire.client._errors import (
    error_from_rpc,
    is_retryable,
    is_transport_failure,
    reached_a_server,
    rpc_status,
)
from taskwire.common import wire
from taskwire.common._errors import MAX_MESSAGE_BYTES

REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)


class FakeRpcError(grpc.RpcError):
    """The two methods a failed call (sync or aio) offers."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, d.ValidationError),
        (grpc.StatusCode.NOT_FOUND, d.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, d.IdempotencyConflict),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, d.QueueFull),
        (grpc.StatusCode.DEADLINE_EXCEEDED, d.AdmissionTimeout),
        (grpc.StatusCode.FAILED_PRECONDITION, d.InvalidTransition),
        (grpc.StatusCode.UNAVAILABLE, d.ShuttingDown),
        (grpc.StatusCode.ABORTED, d.WatcherFellBehind),
        (grpc.StatusCode.INTERNAL, d.TaskwireError),
        (grpc.StatusCode.UNKNOWN, d.TaskwireError),
    ],
)
def test_status_codes_map_through_wire(code: grpc.StatusCode, expected: type[d.TaskwireError]) -> None:
    error = error_from_rpc(FakeRpcError(code, "the server's words"), address="h:1")
    assert type(error) is expected
    assert wire.error_class_for(code) is expected
    assert error.message == "the server's words"
    assert str(error) == "the server's words"


def test_a_watcher_that_fell_behind_is_aborted_on_the_wire() -> None:
    assert wire.status_for(d.WatcherFellBehind("too slow")) is grpc.StatusCode.ABORTED


def test_a_validation_error_keeps_its_field() -> None:
    error = error_from_rpc(
        FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "execution.tasks[0].handler: must not be empty"), address="h:1"
    )
    assert isinstance(error, d.ValidationError)
    assert (error.field, error.problem) == ("execution.tasks[0].handler", "must not be empty")


def test_an_empty_detail_still_reads() -> None:
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.NOT_FOUND, ""), address="h:1")
    assert str(error) == "the server answered NOT_FOUND"


@pytest.mark.parametrize(
    "details",
    [
        REFUSED,
        "errors resolving nope.invalid:50051: [field:hostname lookup error]",
        "Socket closed",
        "Connection reset by peer",
        "",
    ],
)
def test_a_connection_failure_is_server_unavailable(details: str) -> None:
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), address="127.0.0.1:1")
    assert isinstance(error, ServerUnavailable)
    assert isinstance(error, d.TaskwireError)
    assert error.address == "127.0.0.1:1"
    assert str(error).startswith("cannot reach the server at 127.0.0.1:1")


def test_unavailable_sent_by_the_server_is_shutting_down() -> None:
    details = "the server is shutting down and accepts no new work"
    assert not is_transport_failure(grpc.StatusCode.UNAVAILABLE, details)
    assert isinstance(error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), address="h:1"), d.ShuttingDown)


@pytest.mark.parametrize(
    ("code", "details", "reached"),
    [
        (grpc.StatusCode.UNAVAILABLE, REFUSED, False),
        (grpc.StatusCode.UNAVAILABLE, "errors resolving nope.invalid:50051: [field:hostname lookup error]", False),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: INTERNAL: ipv4:127.0.0.1:8080: Failed parsing HTTP/2",
            False,
        ),
        (grpc.StatusCode.UNAVAILABLE, "", False),
        # The connection broke under the call (a server killed, or paused past the keepalive).
        (grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)", True),
        (grpc.StatusCode.UNAVAILABLE, "recvmsg:Connection reset by peer", True),
        (grpc.StatusCode.UNAVAILABLE, "keepalive watchdog timeout", True),
        # The server ended the call itself.
        (grpc.StatusCode.UNAVAILABLE, "the server is shutting down; watch again to resume", True),
        (grpc.StatusCode.NOT_FOUND, "execution ex-1 not found", True),
    ],
)
def test_a_call_reached_a_server_unless_it_got_no_connection(
    code: grpc.StatusCode, details: str, reached: bool
) -> None:
    assert reached_a_server(FakeRpcError(code, details)) is reached


def test_only_unavailable_is_retryable() -> None:
    assert is_retryable(ServerUnavailable("h:1"))
    assert is_retryable(d.ShuttingDown("bye"))
    assert not is_retryable(d.NotFound("execution", "x"))
    assert not is_retryable(d.QueueFull(size=1, capacity=1, requested=1))
    assert not is_retryable(ValueError("x"))


def test_rpc_status_of_an_error_without_a_status() -> None:
    assert rpc_status(grpc.RpcError("odd")) == (grpc.StatusCode.UNKNOWN, "")


def test_submit_result_error_names_map_back() -> None:
    error = wire.error_from_status_name("ALREADY_EXISTS", "key 'k' was used")
    assert isinstance(error, d.IdempotencyConflict)
    assert str(error) == "key 'k' was used"
    assert type(wire.error_from_status_name("NOT_A_CODE", "?")) is d.TaskwireError


def test_a_missed_client_deadline_names_the_server() -> None:
    error = error_from_rpc(
        FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), address="h:1", deadline_s=10
    )
    assert isinstance(error, d.AdmissionTimeout)
    assert str(error) == "no answer from the server at h:1 within 10s"
    server_said = error_from_rpc(
        FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "no room"), address="h:1", deadline_s=1
    )
    assert str(server_said) == "no room"


@pytest.mark.parametrize(
    "details",
    [
        "SERVER: Received message larger than max (6000069 vs. 5242880)",
        "CLIENT: Sent message larger than max (70000069 vs. 67108864)",
        "Stream removed (received metadata size exceeds hard limit (value length 20023 vs. 16384))",
    ],
)
def test_grpcs_refusal_of_a_message_for_its_size_is_not_a_full_queue(details: str) -> None:
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, details), address="h:1")
    assert type(error) is d.RequestTooLarge
    assert error.message.startswith(details)
    assert "--max-message-bytes" in error.message


@pytest.mark.parametrize("unit", ["e", "é", "💥"])
def test_an_error_message_is_cut_to_what_a_status_carries(unit: str) -> None:
    quoted = unit * 50_000
    error = d.NotFound("execution", quoted)
    assert len(error.message.encode("utf-8")) <= MAX_MESSAGE_BYTES + 40
    assert error.message.startswith("no execution with id '" + unit * 10)
    assert error.message.endswith("more characters)")
    assert str(error) == error.message
    short = d.NotFound("execution", "e-1")
    assert short.message == "no execution with id 'e-1'"  # untouched
