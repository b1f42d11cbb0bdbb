"""The gRPC edge: services registered with request decoding that cannot fail the call.

grpc's generated registration parses request bytes before any servicer code runs; bytes that do not
parse (a string that is not UTF-8, a corrupt wire format) end the call with UNKNOWN and a traceback in
the log. Here each service is registered from its descriptor with a decoder that turns such bytes into
a `Malformed` value instead, which the servicers refuse with INVALID_ARGUMENT naming the message type.

Rejections are logged through `RejectionLog`: one line per rejected request at most, and no more than a
few lines a second in all, so a flood of bad requests cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from .domain import ValidationError

log = logging.getLogger(__name__)


def time_left(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The seconds left before the caller's deadline, or None when it set none or it cannot be read.

    grpc.aio reckons it on the wall clock: gRPC turns the deadline into a wall-clock time as the call
    arrives, and `time_remaining()` subtracts the wall clock read later. A wall clock stepped forward in
    between reads the deadline as passed, at zero; gRPC itself still ends the call at its deadline, on the
    monotonic clock. So zero is taken as unknown, and the server's own budget holds instead: a refusal for a
    deadline the caller never reached would be wrong. (A step back reads as more time, which the server's
    budget caps; a forward step smaller than the time left shortens it, which cannot be told apart.)
    """
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining > 0 else None


@dataclass(frozen=True, slots=True)
class Malformed:
    """Request bytes that did not parse as `type_name`."""

    type_name: str
    error: str

    def refusal(self, field: str = "request") -> ValidationError:
        return ValidationError(field, f"not a valid {self.type_name}: {self.error}")


def _decoder(message_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    parse = message_class.FromString
    type_name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Malformed:
        try:
            return parse(data)
        except DecodeError as error:
            return Malformed(type_name, str(error) or "the bytes do not parse")

    return decode


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _handler(servicer: object, method: MethodDescriptor) -> grpc.RpcMethodHandler[Any, Any]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    factory = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
    return factory(
        getattr(servicer, method.name),
        request_deserializer=_decoder(request_class),
        response_serializer=response_class.SerializeToString,
    )


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Serve every method of `service` from the servicer's method of the same name."""
    handlers = {method.name: _handler(servicer, method) for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class HandlerWrappers:
    """An interceptor's wrapped handlers, built once per method instead of once per call.

    A method resolves to the same handler object for the server's whole life, so the wrapper made for it
    is kept beside it and handed out again; a handler that is not the kept one is wrapped anew (and kept
    instead). Method names come from callers, so at most `limit` methods are kept: past it, a method is
    wrapped for each call, as every method was before.
    """

    def __init__(self, wrap: Callable[[Handler, str], Handler], *, limit: int = 256) -> None:
        self._wrap = wrap
        self._limit = limit
        self._kept: dict[str, tuple[Handler, Handler]] = {}

    def get(self, handler: Handler, method: str) -> Handler:
        kept = self._kept.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(handler, method)
        if kept is not None or len(self._kept) < self._limit:
            self._kept[method] = (handler, wrapped)
        return wrapped


class RejectionLog:
    """One log line per rejected request, at most `burst` lines at once and `per_s` a second after that.

    Lines over the budget are counted, and the next line that is written says how many were left out.
    """

    def __init__(self, *, per_s: float = 5.0, burst: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_s = per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._suppressed = 0

    def rejected(self, method: str, peer: str, reason: str, *args: Any) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_s)
        self._last = now
        if self._tokens < 1:
            self._suppressed += 1
            return
        self._tokens -= 1
        suppressed, self._suppressed = self._suppressed, 0
        more = f" ({suppressed} more rejections not logged)" if suppressed else ""
        log.info("rejected %s from %s: " + reason + "%s", method, peer, *args, more)
