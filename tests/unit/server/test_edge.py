"""The edge's handler wrappers: built once per method, not once per call, and bounded."""

from __future__ import annotations

from typing import Any

import grpc

from taskwire.server._edge import HandlerWrappers


def _handler() -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(request: bytes, context: Any) -> bytes:
        return request

    return grpc.unary_unary_rpc_method_handler(behavior)


def _counting() -> tuple[HandlerWrappers, list[str]]:
    made: list[str] = []

    def wrap(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        made.append(method)
        return handler._replace(request_deserializer=None)  # type: ignore[attr-defined,no-any-return]

    return HandlerWrappers(wrap, limit=2), made


def test_a_method_is_wrapped_once_while_it_resolves_to_the_same_handler() -> None:
    wrappers, made = _counting()
    handler = _handler()
    first = wrappers.get(handler, "/s/A")
    assert wrappers.get(handler, "/s/A") is first
    assert made == ["/s/A"]
    other = _handler()
    assert wrappers.get(other, "/s/A") is not first
    assert wrappers.get(other, "/s/A") is wrappers.get(other, "/s/A")
    assert made == ["/s/A", "/s/A"]


def test_past_the_limit_methods_are_wrapped_per_call() -> None:
    wrappers, made = _counting()
    handler = _handler()
    for method in ("/s/A", "/s/B", "/s/C", "/s/C", "/s/A"):
        wrappers.get(handler, method)
    assert made == ["/s/A", "/s/B", "/s/C", "/s/C"]
