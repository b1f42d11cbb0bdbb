"""The SDK's own errors, and the one function that turns a failed RPC into a taskwire error.

Everything the SDK raises on purpose is a `TaskwireError` (the root of the one
hierarchy in `taskwire.common`); a status the server sent maps to its class through
`taskwire.common.wire.error_class_for`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from taskwire.common import RateLimited, ReasonCode, RequestTooLarge, ShuttingDown, State, TaskwireError, wire

if TYPE_CHECKING:
    from ._models import ExecutionSnapshot

# What gRPC core says when the connection itself failed (as opposed to an UNAVAILABLE the server chose to send).
_TRANSPORT_PHRASES = (
    "failed to connect",
    "connection refused",
    "errors resolving",
    "dns resolution failed",
    "name resolution",
    "socket closed",
    "connection reset",
    "broken pipe",
    "end of tcp stream",
    "connection attempt timed out",
    "keepalive watchdog timeout",
    "recvmsg",
    "sendmsg",
    "goaway",
    "network is unreachable",
    "no route to host",
)
# What gRPC core says when a call got no connection at all: nothing listens there, no such host, a handshake
# that failed (its "failed to connect to all addresses" names the last reason), as opposed to a connection
# that broke under a call it carried.
_NO_CONNECTION_PHRASES = (
    "failed to connect",
    "errors resolving",
    "dns resolution failed",
    "name resolution",
    "connection refused",
    "connection attempt timed out",
    "network is unreachable",
    "no route to host",
)
# What gRPC says when it refuses a message or headers for their size (either side's limit).
_TOO_LARGE_PHRASES = ("message larger than max", "metadata size exceeds")


class ServerUnavailable(TaskwireError):
    """The server could not be reached (not running, wrong address, network down)."""

    status_name = "UNAVAILABLE"

    def __init__(self, address: str, detail: str = "") -> None:
        super().__init__(f"cannot reach the server at {address}" + (f" ({detail})" if detail else ""))
        self.address = address
        self.detail = detail


class WaitTimeout(TaskwireError):
    """`wait` gave up before the execution reached a terminal state (the execution itself goes on).

    For a wait on many executions, `unfinished` names those it had not received (in the order given) and
    `execution_id` is the first of them.
    """

    status_name = "DEADLINE_EXCEEDED"

    def __init__(self, execution_id: str, timeout_s: float, *, unfinished: Sequence[str] = ()) -> None:
        self.unfinished: tuple[str, ...] = tuple(unfinished) or (execution_id,)
        self.execution_id = self.unfinished[0]
        self.timeout_s = timeout_s
        if len(self.unfinished) == 1:
            message = f"execution {self.execution_id} did not finish within {timeout_s:g}s"
        else:
            message = (
                f"{len(self.unfinished)} executions did not finish within {timeout_s:g}s "
                f"(the first: {self.execution_id})"
            )
        super().__init__(message)


class ExecutionEnded(TaskwireError):
    """An execution that `wait` followed ended without success.

    Raised as such for a terminal state this version does not know (a newer server); `state` names it.
    """

    def __init__(self, snapshot: ExecutionSnapshot) -> None:
        reason = snapshot.reason
        self.snapshot = snapshot
        self.execution_id = snapshot.id
        self.state: State = snapshot.state
        self.reason_code: ReasonCode | None = reason.code if reason else None
        self.reason_message = reason.message if reason else ""
        why = f"{self.reason_code}: {self.reason_message}" if self.reason_code else "no reason given"
        super().__init__(f"execution {snapshot.id} {self.state.value} ({why})")


class ExecutionFailed(ExecutionEnded):
    """The execution ended FAILED; `reason_code` says why (HANDLER_ERROR, TIMED_OUT, ...)."""


class ExecutionCancelled(ExecutionEnded):
    """The execution ended CANCELLED; `reason_code` says why (CANCEL_REQUESTED, ...)."""


def rpc_status(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a failed call (sync `grpc.Call` or `grpc.aio.AioRpcError`)."""
    code_of: Any = getattr(error, "code", None)
    details_of: Any = getattr(error, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    return (code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN), str(details or "")


def is_transport_failure(code: grpc.StatusCode, details: str) -> bool:
    """True when an UNAVAILABLE came from the connection, not from the server."""
    lowered = details.lower()
    return code is grpc.StatusCode.UNAVAILABLE and (not details or any(p in lowered for p in _TRANSPORT_PHRASES))


def reached_a_server(error: grpc.RpcError) -> bool:
    """Whether a failed call had got to a server: the server ended it (with any status), or the connection
    broke under it. False for a call that got no connection at all (nothing listens, a wrong address)."""
    code, details = rpc_status(error)
    lowered = details.lower()
    return not (
        code is grpc.StatusCode.UNAVAILABLE and (not details or any(p in lowered for p in _NO_CONNECTION_PHRASES))
    )


_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def retry_after_s(error: grpc.RpcError) -> float | None:
    """The server's retry hint (a `google.rpc.RetryInfo` in the status details), in seconds; None without one."""
    trailing_of: Any = getattr(error, "trailing_metadata", None)
    for key, value in (trailing_of() if callable(trailing_of) else None) or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def error_from_rpc(error: grpc.RpcError, *, address: str, deadline_s: float | None = None) -> TaskwireError:
    """The taskwire error for a failed RPC, with a readable message."""
    code, details = rpc_status(error)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        hint = retry_after_s(error)
        if hint is not None:
            return RateLimited(details, retry_after_s=hint)
        if any(phrase in details for phrase in _TOO_LARGE_PHRASES):
            # gRPC's own refusal of a message, not the server's of a submit: no queue is full.
            return RequestTooLarge(
                f"{details}; a payload over the server's limit is refused (see its --max-message-bytes)"
            )
    if is_transport_failure(code, details):
        return ServerUnavailable(address, details)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded" and deadline_s is not None:
        # gRPC's own words when the client's deadline passed: say which server and how long.
        return no_answer(address, deadline_s)
    return wire.error_from_status(code, details)


def no_answer(address: str, deadline_s: float) -> TaskwireError:
    """The error of a call (or a streamed submit) the server did not answer within the client's deadline."""
    return wire.error_from_status(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer from the server at {address} within {deadline_s:g}s"
    )


def detached(error: grpc.RpcError) -> grpc.RpcError:
    """A failed streaming call's error without its traceback: such a call raises itself, so its traceback's
    frames hold the call, in a cycle that only the garbage collector frees (see `_sync`: the call can then
    go as soon as the last reference to it does)."""
    return error.with_traceback(None)


def is_retryable(error: BaseException) -> bool:
    """UNAVAILABLE, whether the connection failed or the server is shutting down."""
    return isinstance(error, ServerUnavailable | ShuttingDown)
