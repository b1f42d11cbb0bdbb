"""The gate on a real gRPC server (in process, 127.0.0.1:0): a method without an authorization rule is
refused to every identity, an admin included, whether the server serves it or not; a method with a rule
runs with the caller known to the servicer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from taskwire.common.bearer import bearer_metadata, new_token, token_hash
from taskwire.server._auth import AuthGate, current_caller
from taskwire.server._auth_file import parse_auth_file
from taskwire.server._auth_policy import Scope

ADMIN = new_token()
ALICE = new_token()
CONFIG = parse_auth_file(
    f"""
[[identity]]
name = "root"
role = "admin"
tokens = ["{token_hash(ADMIN)}"]

[[identity]]
name = "alice"
role = "submitter"
tokens = ["{token_hash(ALICE)}"]
"""
)


async def _async_echo_caller(request: bytes, context: Any) -> bytes:
    caller = current_caller()
    return f"{caller.identity}:{caller.role}:{caller.scope.value}".encode()


def _same(data: bytes) -> bytes:
    return data


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[AuthGate(CONFIG)])
    handler = grpc.unary_unary_rpc_method_handler(_async_echo_caller, _same, _same)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("taskwire.v1.TaskService", {"GetExecution": handler}),
            grpc.method_handlers_generic_handler("test.Extra", {"Unruled": handler}),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def _call(address: str, method: str, token: str | None) -> bytes | grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=_same, response_deserializer=_same)
        try:
            response: bytes = await call(b"", metadata=bearer_metadata(token) if token else None, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error
        return response


@pytest.mark.parametrize("method", ["/test.Extra/Unruled", "/taskwire.v1.TaskService/NotServed"])
async def test_a_method_without_a_rule_is_denied_even_to_an_admin(address: str, method: str) -> None:
    refused = await _call(address, method, ADMIN)
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    name = method.rsplit("/", 1)[1]
    assert refused.details() == f"{name} has no authorization rule: nobody may call it"
    anonymous = await _call(address, method, None)
    assert isinstance(anonymous, grpc.aio.AioRpcError)
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED  # who you are is asked first


async def test_an_allowed_call_runs_with_its_caller_known(address: str) -> None:
    method = "/taskwire.v1.TaskService/GetExecution"
    assert await _call(address, method, ADMIN) == f"root:admin:{Scope.ALL.value}".encode()
    assert await _call(address, method, ALICE) == f"alice:submitter:{Scope.OWN.value}".encode()
    refused = await _call(address, method, new_token())
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_without_an_auth_file_everything_is_allowed_and_cancels_are_still_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = grpc.aio.server(interceptors=[AuthGate(None)])
    handler = grpc.unary_unary_rpc_method_handler(_async_echo_caller, _same, _same)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("taskwire.v1.TaskService", {"CancelExecution": handler}),
            grpc.method_handlers_generic_handler("test.Extra", {"Unruled": handler}),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with caplog.at_level("INFO", logger="taskwire.audit"):
            cancel = await _call(f"127.0.0.1:{port}", "/taskwire.v1.TaskService/CancelExecution", None)
            unruled = await _call(f"127.0.0.1:{port}", "/test.Extra/Unruled", None)
    finally:
        await server.stop(None)
    assert cancel == b":None:all"
    assert unruled == b":None:all"
    (line,) = [record.getMessage() for record in caplog.records if record.name == "taskwire.audit"]
    assert line == "audit action=cancel identity=anonymous method=CancelExecution target=- code=OK"
