"""A verified client certificate is the identity its SAN names: real mutual TLS on loopback (certificates
made with the openssl command line), the gate in front of an in-process gRPC server that requires and
verifies client certificates, and what the gate reads from gRPC's auth context."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskwire.common.bearer import bearer_metadata, new_token, token_hash
from taskwire.server._auth import AuthGate, current_caller
from taskwire.server._auth_file import parse_auth_file

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")

ALICE = new_token()
CONFIG = parse_auth_file(
    f"""
[[identity]]
name = "worker-a"
role = "reader"
sans = ["spiffe://taskwire.test/worker-a"]

[[identity]]
name = "alice"
role = "submitter"
tokens = ["{token_hash(ALICE)}"]
"""
)
METHOD = "/taskwire.v1.TaskService/GetExecution"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _leaf(directory: Path, name: str, san: str) -> tuple[bytes, bytes]:
    key, csr, cert, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    ext.write_text(f"subjectAltName={san}\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.pem"), "-CAkey", str(directory / "ca.key"),
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem"), "-subj", "/CN=taskwire test CA",
    )  # fmt: skip
    return {
        "ca": (directory / "ca.pem").read_bytes(),
        "server": _leaf(directory, "server", "DNS:localhost,IP:127.0.0.1"),
        "worker-a": _leaf(directory, "worker-a", "URI:spiffe://taskwire.test/worker-a"),
        "stranger": _leaf(directory, "stranger", "URI:spiffe://taskwire.test/stranger,DNS:stranger.test"),
    }


async def _who(request: bytes, context: Any) -> bytes:
    caller = current_caller()
    return f"{caller.identity}:{caller.role}".encode()


def _same(data: bytes) -> bytes:
    return data


@pytest.fixture
async def address(pki: dict[str, Any]) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[AuthGate(CONFIG)])
    handler = grpc.unary_unary_rpc_method_handler(_who, _same, _same)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("taskwire.v1.TaskService", {"GetExecution": handler}),)
    )
    credentials = grpc.ssl_server_credentials([pki["server"]], root_certificates=pki["ca"], require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"localhost:{port}"
    finally:
        await server.stop(None)


async def _call(address: str, pki: dict[str, Any], cert: str, token: str | None = None) -> bytes | grpc.aio.AioRpcError:
    key, chain = pki[cert]
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"], private_key=key, certificate_chain=chain)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call = channel.unary_unary(METHOD, request_serializer=_same, response_deserializer=_same)
        try:
            response: bytes = await call(b"", metadata=bearer_metadata(token) if token else None, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error
        return response


async def test_a_certificate_is_the_identity_its_san_names(address: str, pki: dict[str, Any]) -> None:
    assert await _call(address, pki, "worker-a") == b"worker-a:reader"


async def test_a_certificate_no_identity_names_is_unauthenticated(address: str, pki: dict[str, Any]) -> None:
    refused = await _call(address, pki, "stranger")
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://taskwire.test/stranger" in (refused.details() or "")
    assert "stranger.test" in (refused.details() or "")


async def test_a_token_decides_over_the_certificate(address: str, pki: dict[str, Any]) -> None:
    assert await _call(address, pki, "worker-a", ALICE) == b"alice:submitter"
    refused = await _call(address, pki, "worker-a", new_token())
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
