"""Fixtures for the transport-security tests: certificates made with `taskwire dev-certs`' own code, and a
server that requires them (mutual TLS) on an ephemeral loopback port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskwire.client._dev_certs import DevCerts, Issued, write_dev_certs
from tests.harness import Cluster, ServerProcess

# A new channel gets a connection (and a handshake) of its own, never one shared with an earlier channel.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    """A CA with a server certificate and the client certificates `worker` and `admin`."""
    return write_dev_certs(tmp_path / "certs")


@pytest.fixture
def mtls_server(procs: Cluster, certs: DevCerts) -> ServerProcess:
    return procs.server(*certs.server_flags(), "--lease-timeout", "2", "--heartbeat-interval", "0.5")


def credentials(ca: Path | bytes, client: Issued | tuple[Path, Path] | None = None) -> grpc.ChannelCredentials:
    """Channel credentials trusting `ca`, presenting `client` (an issued certificate, or its two files)."""
    root = ca if isinstance(ca, bytes) else ca.read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(root)
    if isinstance(client, Issued):
        return grpc.ssl_channel_credentials(root, client.key_pem, client.cert_pem)
    cert, key = client
    return grpc.ssl_channel_credentials(root, key.read_bytes(), cert.read_bytes())


def health_check(address: str, channel_credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    """The status of one health check over a new connection: OK when the handshake was accepted."""
    with grpc.secure_channel(address, channel_credentials, options=OWN_CONNECTION) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def client_files(certs: DevCerts, name: str) -> tuple[Path, Path]:
    return certs.client_cert(name), certs.client_key(name)
